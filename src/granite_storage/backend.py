"""The interface every storage backend implements."""

from __future__ import annotations

import abc
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO, cast

from granite_storage.errors import ObjectNotFoundError, UnsupportedOperationError
from granite_storage.streams import DEFAULT_CHUNK_SIZE, BoundedReader, Readable

__all__ = ["ObjectInfo", "StorageBackend", "check_range"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a backend knows about one stored object without reading it.

    There is no content type or filename here: those are recorded in the
    :class:`~granite_storage.StoredObjectRef` the database keeps, and a listing (S3's) does not
    return an object's metadata.

    Attributes:
        key: The object's key in the backend.
        size: Size in bytes.
        last_modified: When the object was last written (timezone-aware, UTC).
    """

    key: str
    size: int
    last_modified: datetime


class StorageBackend(abc.ABC):
    """A place that stores objects by key: local disk, S3, or a third party's.

    A backend moves bytes and nothing else. Size limits, checksums, key building and reference
    validation live in :class:`~granite_storage.StorageManager`, so every backend gets them for free.
    Keys given to a backend are relative ``/``-separated paths; the manager has validated them with
    :func:`granite_storage.keys.validate_key`, and a backend should validate them again before acting
    (a backend may be called directly).

    The contract, checked by :class:`granite_storage.testing.BackendConformanceSuite`:

    * :meth:`put` reads its stream to end of file and then publishes the whole object at ``key``, or,
      if reading or writing fails (including :class:`~granite_storage.ContentTooLargeError` raised by
      the stream), publishes nothing, leaves nothing behind and re-raises. No reader ever sees a
      partial object at ``key``.
    * :meth:`open`, :meth:`open_range`, :meth:`get` and :meth:`stat` raise
      :class:`~granite_storage.ObjectNotFoundError` for a missing key; :meth:`delete` of a missing key
      does nothing.
    * :meth:`list` yields every object under a prefix, matched as whole path segments.
    * :meth:`open_range` yields exactly the bytes ``[start:end]`` of the object, as slicing would.
    * :meth:`url` returns a URL, or raises :class:`~granite_storage.UnsupportedOperationError`.
    * No key, however crafted, reads, writes or deletes anything outside the backend's root; an unsafe
      key raises :class:`~granite_storage.InvalidKeyError`.

    :meth:`open_range`, :meth:`url`, :meth:`get`, :meth:`exists`, :meth:`delete_many` and
    :meth:`remove_incomplete_uploads` have working defaults; a backend overrides them where it can do
    better. An override of :meth:`remove_incomplete_uploads` calls the base method first, which checks
    its arguments.

    Every method may be called from several threads at once, and a stream :meth:`open` returns may be
    read and closed in a thread other than the one that opened it (the FastAPI integration does).
    """

    @abc.abstractmethod
    def put(
        self,
        key: str,
        stream: Readable,
        *,
        content_type: str | None = None,
        original_filename: str | None = None,
    ) -> None:
        """Store everything ``stream`` yields at ``key``, atomically, replacing any object there.

        ``content_type`` and ``original_filename`` are hints: the backend may record them as object
        metadata (so that a direct download carries them) or ignore them. They are not read back from
        the backend; the reference the manager returns records both.
        """

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open the object for streaming reads; the caller closes it (it is a context manager)."""

    def open_range(self, key: str, start: int, end: int | None = None) -> BinaryIO:
        """Open the bytes ``[start:end]`` of the object for streaming reads (``end`` exclusive).

        ``end`` of ``None`` reads to the end of the object. As with slicing, a range past the end of
        the object is cut at the end (possibly to nothing). The default opens the object and reads
        its way to ``start``; backends that can seek or ask for a range override it.

        Raises:
            ValueError: ``start`` is negative or ``end`` is before ``start``.
            ObjectNotFoundError: the object does not exist.
        """
        check_range(start, end)
        stream = self.open(key)
        try:
            remaining = start
            while remaining > 0:
                skipped = len(stream.read(min(remaining, DEFAULT_CHUNK_SIZE)))
                if not skipped:
                    break
                remaining -= skipped
        except BaseException:
            stream.close()
            raise
        return _as_binary_io(BoundedReader(stream, None if end is None else end - start))

    def url(
        self,
        key: str,
        *,
        expires_in: timedelta,
        content_type: str | None = None,
        content_disposition: str | None = None,
    ) -> str:
        """A URL from which anyone holding it can download the object until ``expires_in`` has passed.

        ``content_type`` and ``content_disposition`` are header values the download should be
        served with (the manager builds them; see :meth:`StorageManager.url
        <granite_storage.StorageManager.url>`). The default raises: most backends have no URLs.

        Raises:
            UnsupportedOperationError: the backend cannot hand out URLs.
        """
        raise UnsupportedOperationError(
            f"{type(self).__name__} cannot hand out URLs; serve the object through the application "
            "(StorageManager.open) instead"
        )

    def get(self, key: str) -> bytes:
        """Return the whole object as bytes."""
        with self.open(key) as stream:
            return stream.read()

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Return the object's size and modification time without reading it."""

    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object at ``key``; a missing object is not an error."""

    def delete_many(self, keys: Sequence[str]) -> Mapping[str, Exception]:
        """Delete the objects at ``keys``; return the keys that could not be deleted, with why.

        One key failing (an unsafe key, a permission error) does not stop the others: every key is
        attempted and each failure is returned, never raised. A missing object is not a failure, as
        with :meth:`delete`. The default deletes the keys one by one; a backend with a batch delete
        (S3's ``DeleteObjects``) overrides it. Callers keep batches moderate (the garbage collector
        sends 1,000 keys at a time, S3's limit per request).
        """
        failures: dict[str, Exception] = {}
        for key in keys:
            try:
                self.delete(key)
            except Exception as exc:  # a third party's backend may raise anything; report it per key
                failures[key] = exc
        return failures

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key lies under ``prefix`` (whole segments; ``""`` for all).

        A trailing ``/`` on ``prefix`` changes nothing, and a key equal to ``prefix`` is not under it
        (:func:`granite_storage.keys.is_within_prefix`). The order is unspecified. Implementations
        stream: memory does not grow with the number of objects listed. Objects may be deleted while
        the iterator is alive (the garbage collector deletes as it lists): the listing goes on, yields
        every object that exists throughout, and may or may not yield one deleted meanwhile.

        Raises:
            InvalidKeyError: ``prefix`` is not ``""`` and not a valid key.
        """

    def remove_incomplete_uploads(self, *, older_than: timedelta, prefix: str = "") -> int:
        """Remove what uploads interrupted by a crash left behind, if older than ``older_than``.

        An upload killed mid-way (``kill -9``, a power loss) leaves no object at its key, but may
        leave the backend's working data: the local backend's temporary files, an S3 multipart
        upload. Choose ``older_than`` longer than the longest upload, so that uploads in progress are
        kept. Only uploads to keys under ``prefix`` (whole segments; ``""`` for all) are considered,
        so that one slot's cleanup never touches another slot's uploads. Returns how many were
        removed. Backends that leave nothing behind keep this default, which removes nothing.

        This default checks the arguments. An override must keep that check: call
        ``super().remove_incomplete_uploads(older_than=older_than, prefix=prefix)`` first and let
        what it raises propagate (the conformance suite checks it).

        Raises:
            ValueError: ``older_than`` is negative.
        """
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        return 0

    def store_area(self) -> tuple[str, str] | None:
        """Which store this backend writes into, and under which key prefix there, where it can tell.

        Returns ``(store, prefix)``: ``store`` names the physical store (the local backend:
        ``"file"``; the S3 backend: its endpoint and bucket), ``prefix`` the ``/``-separated path under
        which this backend's keys live in it (the local backend: its resolved root directory; the S3
        backend: its key prefix, ``""`` for none). A manager refuses two backend names whose areas lie
        in one store and are equal or nested: a slot of one could reach, and its garbage collection
        delete, the other's objects. ``None``, this default, means the backend cannot tell; such a
        backend is told apart from others by its name only.
        """
        return None


def check_range(start: int, end: int | None) -> None:
    """Raise :class:`ValueError` unless ``start`` and ``end`` make a byte range.

    The rule of :meth:`StorageBackend.open_range` and :meth:`StorageManager.open
    <granite_storage.StorageManager.open>`: ``start`` must be an integer of 0 or more, and ``end``
    ``None`` or an integer of at least ``start``.
    """
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int) or end < start):
        raise ValueError(f"end must be None or an integer of at least start ({start}), got {end!r}")


def _as_binary_io(raw: BoundedReader) -> BinaryIO:
    """Buffer a raw reader; a :class:`io.BufferedReader` is a binary file in all but its static type."""
    return cast(BinaryIO, io.BufferedReader(raw))
