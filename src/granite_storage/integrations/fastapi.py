"""FastAPI integration: uploads that never block the event loop, error responses, ranged downloads.

Installed with ``pip install "granite-storage[fastapi]"``. One call wires an application::

    app = FastAPI()
    install_storage(app, manager, sessions=async_sessionmaker(engine))

after which endpoints receive the manager and a session through ``Depends``
(:data:`StorageManagerDep`, :func:`get_async_session`, :func:`get_session`) and storage errors become
HTTP responses (:func:`install_exception_handlers`).

* :func:`store_upload` stores an ``UploadFile`` in chunks in a worker thread;
  :func:`store_request_body` streams a raw request body the same way, refusing an over-limit
  ``Content-Length`` before reading anything.
* :func:`storage_response` serves a stored object: ``ETag``, ``Last-Modified``, conditional requests,
  single byte ranges, ``HEAD``, and optionally a redirect to a presigned URL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Literal

import anyio
from anyio import CapacityLimiter, from_thread, to_thread
from anyio.lowlevel import RunVar
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from granite_storage._threads import put_in_thread
from granite_storage.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ContentTooLargeError,
    ContentTypeNotAllowedError,
    IncompleteUploadError,
    InvalidMetadataError,
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
    UnsupportedOperationError,
)
from granite_storage.headers import download_headers
from granite_storage.manager import StorageManager
from granite_storage.orm.content import UploadFileLike
from granite_storage.refs import StoredObjectRef
from granite_storage.streams import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    # For the signatures only: sqlalchemy.ext.asyncio needs greenlet, which a sync app need not install.
    import sqlalchemy.ext.asyncio

__all__ = [
    "REQUEST_BODY_THREADS",
    "StorageManagerDep",
    "get_async_session",
    "get_session",
    "get_storage_manager",
    "install_exception_handlers",
    "install_storage",
    "storage_error_handler",
    "storage_response",
    "store_request_body",
    "store_upload",
]

logger = logging.getLogger(__name__)

_MANAGER_STATE = "granite_storage_manager"
_SESSIONS_STATE = "granite_storage_sessions"
# On every response that serves or answers for a stored object: no browser reads it as another type.
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}


# -- wiring an application ---------------------------------------------------------------------------


def install_storage(
    app: FastAPI,
    manager: StorageManager,
    *,
    sessions: sessionmaker[Session] | sqlalchemy.ext.asyncio.async_sessionmaker[Any] | None = None,
) -> None:
    """Give ``app`` its storage manager (and session factory), and install the exception handlers.

    The manager and the factory are kept on ``app.state``, so two applications in one process (an
    app per test, say) each have their own; :func:`get_storage_manager`, :func:`get_session` and
    :func:`get_async_session` hand them to endpoints. Exception handlers are installed as by
    :func:`install_exception_handlers`.
    """
    if not isinstance(manager, StorageManager):
        raise TypeError(f"expected a StorageManager, got {type(manager).__name__}")
    setattr(app.state, _MANAGER_STATE, manager)
    setattr(app.state, _SESSIONS_STATE, sessions)
    install_exception_handlers(app)


def get_storage_manager(request: Request) -> StorageManager:
    """Dependency: the manager :func:`install_storage` gave the application.

    Raises:
        ConfigurationError: :func:`install_storage` was not called for this application.
    """
    manager = getattr(request.app.state, _MANAGER_STATE, None)
    if not isinstance(manager, StorageManager):
        raise ConfigurationError("no storage manager: call install_storage(app, manager) at startup")
    return manager


#: ``manager: StorageManagerDep`` in an endpoint's signature receives :func:`get_storage_manager`.
StorageManagerDep = Annotated[StorageManager, Depends(get_storage_manager)]


def get_session(request: Request) -> Iterator[Session]:
    """Dependency: a ``Session`` from the factory given to :func:`install_storage`, closed afterwards.

    The endpoint commits; a session left uncommitted (an exception, an early return) is rolled back
    when it closes, and with :func:`~granite_storage.track_storage` the objects it stored are deleted.
    FastAPI closes it after the response has been sent: an endpoint returning a
    :func:`storage_response` should close the session first, so that a slow download holds no
    database connection.

    Raises:
        ConfigurationError: no synchronous ``sessionmaker`` was given to :func:`install_storage`.
    """
    sessions = getattr(request.app.state, _SESSIONS_STATE, None)
    if not isinstance(sessions, sessionmaker):
        raise ConfigurationError("no sessionmaker: call install_storage(app, manager, sessions=...)")
    with sessions() as session:
        yield session


async def get_async_session(request: Request) -> AsyncIterator[sqlalchemy.ext.asyncio.AsyncSession]:
    """Dependency: an ``AsyncSession`` from the factory :func:`install_storage` got; as :func:`get_session`.

    Raises:
        ConfigurationError: no ``async_sessionmaker`` was given to :func:`install_storage`.
    """
    from sqlalchemy.ext.asyncio import async_sessionmaker  # needs greenlet: only for async apps

    sessions = getattr(request.app.state, _SESSIONS_STATE, None)
    if not isinstance(sessions, async_sessionmaker):
        raise ConfigurationError(
            "no async_sessionmaker: call install_storage(app, manager, sessions=async_sessionmaker(...))"
        )
    async with sessions() as session:
        yield session


# -- errors as responses -----------------------------------------------------------------------------


def install_exception_handlers(app: FastAPI) -> None:
    """Turn every :class:`~granite_storage.StorageError` an endpoint raises into a JSON response.

    The body is ``{"detail": ...}``, as FastAPI's own errors; the status:

    * :class:`~granite_storage.ContentTooLargeError`: 413, naming the limit;
    * :class:`~granite_storage.ObjectNotFoundError`: 404;
    * :class:`~granite_storage.InvalidMetadataError`: 400 (a content type the client sent);
    * :class:`~granite_storage.ContentTypeNotAllowedError`: 415, saying which type the content is
      and which the slot accepts, or which declared type it contradicts;
    * :class:`~granite_storage.BackendUnavailableError`: 503;
    * :class:`~granite_storage.StoragePermissionError` and
      :class:`~granite_storage.IncompleteUploadError`: 502 (the backend refused or misbehaved);
    * any other :class:`~granite_storage.StorageError`: 500.

    The body of a 404 or 5xx names no key, path, bucket or exception text; 5xx errors are logged
    with their traceback on the ``granite_storage.integrations.fastapi`` logger. Every error response
    carries ``X-Content-Type-Options: nosniff``.
    """
    app.add_exception_handler(StorageError, storage_error_handler)


async def storage_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The handler :func:`install_exception_handlers` installs, for use on its own."""
    status, detail = _status_and_detail(exc)
    if status >= 500:
        logger.error(
            "%s while serving %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc
        )
    return JSONResponse({"detail": detail}, status_code=status, headers=_NOSNIFF)


def _status_and_detail(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, ContentTooLargeError):
        return 413, f"content exceeds the maximum size of {exc.max_size} bytes"
    if isinstance(exc, ObjectNotFoundError):
        return 404, "stored object not found"
    if isinstance(exc, InvalidMetadataError):
        return 400, str(exc)  # about the client's own input (a content type it sent)
    if isinstance(exc, ContentTypeNotAllowedError):
        return 415, str(exc)  # about the client's own content, and the slot's rules
    if isinstance(exc, BackendUnavailableError):
        return 503, "storage is unavailable, try again later"
    if isinstance(exc, StoragePermissionError | IncompleteUploadError):
        return 502, "the storage backend failed"
    return 500, "internal storage error"


# -- uploads -----------------------------------------------------------------------------------------


async def store_upload(
    manager: StorageManager,
    upload: UploadFileLike,
    *,
    storage_key: str,
    model_name: str,
    field_name: str,
    entity_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> StoredObjectRef:
    """Store an ``UploadFile`` without blocking the event loop; as :meth:`StorageManager.put_stream`.

    The upload's file is rewound and streamed to the backend in chunks in a worker thread, so other
    requests keep being served and memory stays flat; its filename and content type are recorded.
    The slot's ``max_size`` is enforced while streaming. Starlette has already received the whole
    multipart body (spooled to a temporary file) before the endpoint runs; to refuse an oversized
    body before it is received, use :func:`store_request_body`.

    If the awaiting task is cancelled, the object the worker thread goes on to store is deleted.
    For a model's file field, ``await instance.set_content_from_uploadfile(upload)`` does the same.

    Raises:
        ContentTooLargeError: the upload is over the slot's ``max_size``; nothing was stored.
        ContentTypeNotAllowedError: the slot has ``allowed_types`` and the upload's bytes are of
            another type, or not of the type it was sent as; nothing was stored.
    """
    file = upload.file
    filename, content_type = upload.filename, upload.content_type

    def put() -> StoredObjectRef:
        if file.seekable():
            file.seek(0)
        return manager.put_stream(
            storage_key=storage_key,
            model_name=model_name,
            entity_id=entity_id,
            field_name=field_name,
            stream=file,
            content_type=content_type,
            original_filename=filename,
            extra=extra,
        )

    return await put_in_thread(manager, put)


async def store_request_body(
    manager: StorageManager,
    request: Request,
    *,
    storage_key: str,
    model_name: str,
    field_name: str,
    entity_id: str | None = None,
    filename: str | None = None,
    content_type: str | None = None,
    extra: Mapping[str, Any] | None = None,
    limiter: CapacityLimiter | None = None,
) -> StoredObjectRef:
    """Stream the raw request body (``PUT /files/x.pdf`` with the bytes as body) into storage.

    A ``Content-Length`` over the slot's ``max_size`` is refused before a byte is read; a body
    without one (chunked) is refused as soon as it passes the limit, and the client's remaining bytes
    are never read. The body goes from the socket to the backend chunk by chunk in a worker thread,
    with no temporary file. ``content_type`` defaults to the request's ``Content-Type``.

    That thread waits on the client for as long as it takes to send the body, so it is not one of
    the threads the rest of the application runs blocking work on (downloads, ``def`` endpoints and
    dependencies): it comes from a pool of its own, :data:`REQUEST_BODY_THREADS` threads per event
    loop, or ``limiter``. Clients that send slowly can make further request bodies wait for a thread,
    never other requests; a server timeout on slow bodies (in the reverse proxy) bounds the wait.

    Raises:
        ContentTooLargeError: the body is over the slot's ``max_size``; nothing was stored.
        ContentTypeNotAllowedError: the slot has ``allowed_types`` and the body's bytes are of
            another type, or not of the type it was sent as; nothing was stored.
    """
    policy = manager.policy(storage_key)
    declared = request.headers.get("content-length", "")
    if policy.max_size is not None and _DIGITS.fullmatch(declared) and int(declared) > policy.max_size:
        raise ContentTooLargeError(policy.max_size)
    body = _BodyReader(request.stream())
    return await put_in_thread(
        manager,
        partial(
            manager.put_stream,
            storage_key=storage_key,
            model_name=model_name,
            entity_id=entity_id,
            field_name=field_name,
            stream=body,
            content_type=content_type if content_type is not None else request.headers.get("content-type"),
            original_filename=filename,
            extra=extra,
        ),
        limiter=_request_body_limiter() if limiter is None else limiter,
    )


#: How many request bodies :func:`store_request_body` stores at once, per event loop, by default.
REQUEST_BODY_THREADS = 40

_REQUEST_BODY_LIMITER: RunVar[CapacityLimiter] = RunVar("granite_storage_request_body_limiter")


def _request_body_limiter() -> CapacityLimiter:
    """This event loop's pool for request bodies (AnyIO keeps its own default limiter the same way)."""
    try:
        return _REQUEST_BODY_LIMITER.get()
    except LookupError:
        limiter = CapacityLimiter(REQUEST_BODY_THREADS)
        _REQUEST_BODY_LIMITER.set(limiter)
        return limiter


_DIGITS = re.compile(r"[0-9]{1,19}")


class _BodyReader:
    """A blocking ``read(size)`` over an async stream of chunks, for a worker thread of AnyIO's.

    Each chunk is fetched on the event loop (``from_thread.run``) when the thread needs it, so no
    more than one chunk beyond the bytes asked for is ever held.
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._done = False

    def read(self, size: int = -1, /) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = from_thread.run(self._next_chunk)
            if chunk is None:
                self._done = True
            else:
                self._buffer += chunk
        taken = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:taken])
        del self._buffer[:taken]
        return data

    async def _next_chunk(self) -> bytes | None:
        async for chunk in self._chunks:
            if chunk:
                return chunk
        return None


# -- downloads ---------------------------------------------------------------------------------------


def storage_response(
    manager: StorageManager,
    ref: StoredObjectRef,
    request: Request,
    *,
    disposition: Literal["attachment", "inline"] = "attachment",
    filename: str | None = None,
    redirect: bool = False,
    expires_in: timedelta = timedelta(minutes=5),
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A response that serves the referenced object to ``request``, from any backend.

    Headers come from the reference, so deciding what to send asks the backend nothing:
    ``Content-Type``, ``Content-Length``, ``ETag`` (the stored sha256, a strong validator),
    ``Last-Modified`` (when it was stored), ``Accept-Ranges: bytes`` and a ``Content-Disposition``
    offering ``filename`` (by default the original filename, encoded for any name). The stored type
    is parsed again and only the passive types (images but SVG, audio, video, PDF, plain text) are
    shown inline when ``disposition="inline"``; everything else, and a stored type that does not
    parse (served as ``application/octet-stream``), is an attachment with
    ``Content-Security-Policy: sandbox``, so no uploaded document runs scripts on the application's
    origin (see :func:`granite_storage.headers.download_headers`). Every response, ``304``, ``416``
    and redirects included, carries ``X-Content-Type-Options: nosniff``. ``headers`` are added
    (``Cache-Control``, say).

    * ``If-None-Match`` (weak comparison, ``*`` too), else ``If-Modified-Since``, answers ``304``.
    * One ``Range`` of bytes (``bytes=a-b``, ``a-``, ``-n``) answers ``206`` with ``Content-Range``,
      fetching only that range from the backend; a range starting past the end answers ``416`` with
      ``Content-Range: bytes */size``. Several ranges, another unit or a malformed header are
      ignored, and the whole object is sent (RFC 9110 allows it); so is a ``Range`` whose
      ``If-Range`` no longer matches.
    * ``HEAD`` gets the headers alone.
    * With ``redirect=True``, a backend that has URLs (S3) answers ``307`` to a presigned URL valid
      for ``expires_in``; a backend without (local disk) is streamed as usual.

    The body is read in 1 MiB chunks in worker threads, so the event loop never waits on the
    backend. The object is opened before the response starts, so a missing object raises
    :class:`~granite_storage.ObjectNotFoundError` (404 with :func:`install_exception_handlers`) rather
    than breaking a response half sent; the backend's stream is closed however the response ends,
    a client that goes away included.
    """
    size = ref.size
    etag = _etag(ref)
    last_modified = ref.created_at.replace(microsecond=0)
    common = {
        "Last-Modified": format_datetime(last_modified, usegmt=True),
        **(headers or {}),
        **_NOSNIFF,
    }
    if etag is not None:
        common["ETag"] = etag

    if request.method in ("GET", "HEAD") and _not_modified(request, etag, last_modified):
        return Response(status_code=304, headers=common)

    if redirect:
        try:
            url = manager.url(ref, expires_in=expires_in, filename=filename, disposition=disposition)
        except UnsupportedOperationError:
            pass  # no URLs (local disk): served through the application below
        else:
            # A presigned URL expires: no cache may keep the redirect longer than the URL lives.
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store", **_NOSNIFF})

    served = {
        **common,
        "Accept-Ranges": "bytes",
        **download_headers(
            ref.content_type,
            filename=ref.original_filename if filename is None else filename,
            disposition=disposition,
        ),
    }
    span = _byte_range(request, etag, last_modified, size)
    if span == "unsatisfiable":
        return Response(status_code=416, headers={**common, "Content-Range": f"bytes */{size}"})
    status, start, end = (200, 0, size) if span is None else (206, *span)
    served["Content-Length"] = str(end - start)
    if status == 206:
        served["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=served)
    return _StoredObjectResponse(
        partial(manager.open, ref, start=start, end=None if span is None else end),
        status_code=status,
        headers=served,
    )


class _StoredObjectResponse(StreamingResponse):
    """Streams a backend stream opened (in a worker thread) before the response starts.

    Starlette's StreamingResponse would iterate a blocking file in its thread pool, but open it only
    once the headers are sent, and close it only if the iteration ends; this opens first and closes
    always, shielded from the cancellation a client disconnect brings.
    """

    def __init__(
        self, open_stream: partial[BinaryIO], *, status_code: int, headers: Mapping[str, str]
    ) -> None:
        self._open_stream = open_stream
        self._stream: BinaryIO | None = None
        super().__init__(self._chunks(), status_code=status_code, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._stream = await to_thread.run_sync(self._open_stream)
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await to_thread.run_sync(self._stream.close)

    async def _chunks(self) -> AsyncIterator[bytes]:
        stream = self._stream
        assert stream is not None, "iterated before __call__ opened the stream"
        while chunk := await to_thread.run_sync(stream.read, DEFAULT_CHUNK_SIZE):
            yield chunk


def _etag(ref: StoredObjectRef) -> str | None:
    """The stored checksum as a strong entity tag: equal tags mean equal bytes."""
    if ref.checksum is None:
        return None
    return f'"{ref.checksum.partition(":")[2]}"'


def _opaque(tag: str) -> str:
    """An entity tag without its weakness marker, for the weak comparison of RFC 9110 8.8.3.2."""
    return tag.strip().removeprefix("W/")


def _not_modified(request: Request, etag: str | None, last_modified: datetime) -> bool:
    # A list may come split over several header lines (RFC 9110 5.3): they are one list.
    if_none_match = request.headers.getlist("if-none-match")
    if if_none_match:  # when present, If-Modified-Since is ignored (RFC 9110 13.1.3)
        tags = [_opaque(tag) for tag in ",".join(if_none_match).split(",")]
        return "*" in tags or (etag is not None and etag in tags)
    since = _http_date(request.headers.get("if-modified-since"))
    return since is not None and last_modified <= since


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # an invalid date is ignored (RFC 9110 13.1.3)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# One range of bytes; at most 19 digits, so no header can make int() work hard or fail.
_SINGLE_RANGE = re.compile(r"[ \t]*(\d{0,19})[ \t]*-[ \t]*(\d{0,19})[ \t]*")


def _byte_range(
    request: Request, etag: str | None, last_modified: datetime, size: int
) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """The ``[start, end)`` the request's ``Range`` asks for, ``None`` for the whole object."""
    header = request.headers.get("range")
    if (
        header is None
        or request.method not in ("GET", "HEAD")
        or not _if_range_holds(request, etag, last_modified)
    ):
        return None
    unit, _, ranges = header.partition("=")
    match = _SINGLE_RANGE.fullmatch(ranges)
    if unit.strip().lower() != "bytes" or match is None:
        return None  # another unit, several ranges or a malformed one: the whole object is sent
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(size - suffix, 0), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, size if not last else min(int(last) + 1, size)


def _if_range_holds(request: Request, etag: str | None, last_modified: datetime) -> bool:
    """Whether a ``Range`` applies: no ``If-Range``, or one naming the current representation."""
    condition = request.headers.get("if-range")
    if condition is None:
        return True
    condition = condition.strip()
    if condition.startswith(('"', "W/")):
        return etag is not None and condition == etag  # strong comparison only
    return _http_date(condition) == last_modified
