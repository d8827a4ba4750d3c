"""Objects in an S3 bucket: AWS S3, or an S3-compatible store (SeaweedFS, MinIO, Ceph).

This module imports boto3; the plugin's hooks register it by name, so it is imported only when the
``s3`` backend type is used.

Why uploads do not go through boto3's transfer manager (``upload_fileobj``), measured with boto3 1.44
and s3transfer 0.19 against SeaweedFS: on a non-seekable stream of unknown length, the peak resident
memory grew by 130 MiB with the default settings (8 MiB parts, 10 threads), for 256 MiB and for 1 GiB
streams alike; bounding it lower takes ``max_in_memory_upload_chunks``, which s3transfer has but boto3's
``TransferConfig`` does not accept (4 chunks of 8 MiB with 4 threads: 59-67 MiB). More decisive:
s3transfer sends whatever one ``read(part_size)`` returns as a part, so a stream that returns short
reads (a socket, a raw file, the size-limiting wrapper over either) yields parts under S3's 5 MiB
minimum, which S3 refuses at completion. The pipeline here is small: parts of exactly ``part_size``
bytes (only the last may be shorter), and at most ``max_concurrency`` of them held at once, the one
being read included, so memory is bounded by ``part_size * max(max_concurrency, 2)``; a stream that
ends within its first part goes up as one ``PutObject``; any failure aborts the multipart upload.
Retries are botocore's (``standard`` mode on the clients this backend builds, which also get bounded
connect and read timeouts, so a stalled endpoint fails the operation rather than hanging it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import mmap
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, cast

import boto3
import botocore.exceptions
from botocore.config import Config

from granite_storage import (
    BackendUnavailableError,
    ConfigurationError,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    Readable,
    StorageBackend,
    StorageError,
    StoragePermissionError,
)
from granite_storage.backend import check_range
from granite_storage.headers import content_disposition, encode_filename, shorten_filename
from granite_storage.keys import validate_key
from granite_storage.policy import parse_size
from granite_storage.streams import DEFAULT_CHUNK_SIZE, BoundedReader
from granite_storage_s3.parameters import S3ObjectParameters

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_PART_SIZE",
    "DEFAULT_READ_TIMEOUT",
    "MAX_DELETE_BATCH",
    "MAX_URL_EXPIRY",
    "MIN_PART_SIZE",
    "S3StorageBackend",
]

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
#: The smallest part S3 accepts in a multipart upload (all parts but the last), 5 MiB.
MIN_PART_SIZE = 5 * _MIB
_MAX_PART_SIZE = 5 * 1024 * _MIB
_MAX_PARTS = 10_000
_MAX_OBJECT_KEY = 1024  # bytes of UTF-8, the prefix included
#: The default part size, 8 MiB (as in boto3), which fits objects up to 78 GiB in S3's 10,000 parts.
DEFAULT_PART_SIZE = 8 * _MIB
#: How many parts are uploaded at once by default.
DEFAULT_MAX_CONCURRENCY = 4
#: Seconds the built client waits for a connection to the endpoint, by default.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds the built client waits for the server's bytes (each wait, not a whole request), by default.
DEFAULT_READ_TIMEOUT = 30.0
#: How often the built client tries a request in all, the first attempt included, by default.
DEFAULT_MAX_ATTEMPTS = 3
_MAX_ATTEMPTS_LIMIT = 10
#: The most keys one ``DeleteObjects`` request may name (S3's limit).
MAX_DELETE_BATCH = 1000
#: The longest a presigned URL can live (AWS Signature Version 4 allows seven days).
MAX_URL_EXPIRY = timedelta(days=7)

# Spelt here: inside the class, `list` is the backend's own method.
_Parts = list["_Part"]
_CompletedParts = list["CompletedPartTypeDef"]
#: The most bytes one ``read`` of a part's body returns (see ``_MappedBody``).
_BODY_READ = 64 * 1024

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_FORBIDDEN = frozenset(
    {
        "403",
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "Forbidden",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
    }
)
_UNAVAILABLE = frozenset({"InternalError", "RequestTimeout", "ServiceUnavailable", "SlowDown", "503"})
_CREDENTIALS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
)
_CONNECTION = (
    botocore.exceptions.ConnectionError,  # endpoint unreachable, connect timeout, proxy
    botocore.exceptions.HTTPClientError,  # read timeout, connection closed, broken response stream
    botocore.exceptions.IncompleteReadError,
)


class S3StorageBackend(StorageBackend):
    """Store each object in an S3 bucket at ``<prefix>/<key>``.

    Args:
        bucket: The bucket's name. The bucket must exist; the backend never creates one.
        prefix: Key prefix inside the bucket (``"production"``), so that several applications or
            environments can share a bucket. Every object this backend reads, writes, lists or
            deletes lies under it; ``""`` uses the whole bucket.
        client: A boto3 S3 client to use as it is (its credentials, region, endpoint, timeouts,
            retries, checksum settings). When omitted, the backend builds one with boto3's usual
            credential chain (environment, shared config, instance or container role), Signature
            Version 4, botocore's ``standard`` retry mode, and the options below.
        region_name: The region of the client built when ``client`` is omitted.
        endpoint_url: The endpoint of an S3-compatible store (``"http://127.0.0.1:8333"``), for the
            client built when ``client`` is omitted.
        addressing_style: ``"path"`` or ``"virtual"`` bucket addressing for the built client
            (default: botocore's choice); many S3-compatible stores need ``"path"``.
        part_size: Bytes per part of a multipart upload (an integer, or a size like ``"16MB"``),
            at least 5 MiB. Content that ends within the first part is stored with a single PUT.
        max_concurrency: Parts held at once: up to this many are uploaded in parallel while none
            is being read, one fewer while the next is read. Memory used by one upload is at most
            ``part_size * max(max_concurrency, 2)``, whatever the object's size, and one 1 MiB
            chunk more for a moment as each part's buffer is allocated.
        connect_timeout: Seconds the built client waits to connect (default 5).
        read_timeout: Seconds the built client waits for the server's bytes (default 30). It bounds
            each wait on the socket, not a whole request: a part of any size may take longer to
            send, but once it is sent the server must start answering within this time. S3 answers
            a stored part within about a second, and keeps a long ``CompleteMultipartUpload``
            alive with whitespace; 30 s leaves room for a slow S3-compatible store writing a large
            part to disk, while a stalled endpoint is given up on within
            ``max_attempts * read_timeout`` plus botocore's back-off (about 93 s by default).
        max_attempts: How often the built client tries a request in all, the first attempt
            included (1 to 10, default 3): botocore's ``standard`` retry mode, which retries
            throttling, 5xx answers, timeouts and dropped connections with jittered back-off.
        max_pool_connections: The built client's connection pool size (default
            ``max(10, max_concurrency + 2)``: every upload thread gets a connection, with room
            for other requests).
        checksums: Send a SHA-256 checksum with every part and every PUT (S3 "additional
            checksums"), so the server refuses bytes that changed on the way. Turn off only for a
            store that rejects them: the built client then sends no checksum at all (botocore
            1.36 and later would otherwise add CRC32 checksums by default). A ``client`` passed in
            decides this itself: build it with ``request_checksum_calculation="when_required"``
            and ``response_checksum_validation="when_required"`` in its ``Config``.
        acl: The canned ACL of every object written (see
            :class:`~granite_storage_s3.S3ObjectParameters`, as for the next four).
        server_side_encryption: ``"AES256"`` (SSE-S3) or ``"aws:kms"`` (SSE-KMS) for every object.
        sse_kms_key_id: The KMS key of SSE-KMS.
        storage_class: The storage class of every object (``"STANDARD_IA"``, ...).
        cache_control: The ``Cache-Control`` every object is served with.
        extra_put_kwargs: granite-storage 0.1.0's way to set the five above, by ``PutObject``
            parameter name (``{"ServerSideEncryption": "AES256"}``): deprecated (a
            :class:`DeprecationWarning`), still mapped onto them; any other key is refused.

    Raises:
        ConfigurationError: ``bucket`` or ``prefix`` is unusable, an object parameter is invalid,
            or ``extra_put_kwargs`` has a key other than the five, or sets one also given by name.
        ValueError: ``part_size``, ``max_concurrency``, a timeout, ``max_attempts`` or
            ``max_pool_connections`` is out of range or of the wrong type, ``checksums`` is not a
            bool, or ``client`` is given together with options for building one.

    Errors from botocore are raised as the most specific library error, chained to the original:
    a missing key as :class:`~granite_storage.ObjectNotFoundError`, refused access (HTTP 403, a bad
    signature) as :class:`~granite_storage.StoragePermissionError`, connection failures, timeouts and
    5xx answers (after botocore's retries) as :class:`~granite_storage.BackendUnavailableError`, a
    missing bucket or missing credentials as :class:`~granite_storage.ConfigurationError`, anything
    else as :class:`~granite_storage.StorageError`.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        client: S3Client | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        addressing_style: Literal["path", "virtual"] | None = None,
        part_size: int | str = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_attempts: int | None = None,
        max_pool_connections: int | None = None,
        checksums: bool = True,
        acl: str | None = None,
        server_side_encryption: str | None = None,
        sse_kms_key_id: str | None = None,
        storage_class: str | None = None,
        cache_control: str | None = None,
        extra_put_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(bucket, str) or not bucket or any(c in bucket for c in "/\\ \t\r\n"):
            raise ConfigurationError(f"not a bucket name: {bucket!r}")
        if not isinstance(prefix, str):
            raise ConfigurationError(f"the S3 key prefix must be a string, got {prefix!r}")
        prefix = prefix.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except InvalidKeyError as exc:
                raise ConfigurationError(f"unusable S3 key prefix: {exc}") from exc
        try:
            size = parse_size(part_size)
        except ConfigurationError:  # "-1", a typo: as wrong as an out-of-range size
            size = None
        if size is None or not MIN_PART_SIZE <= size <= _MAX_PART_SIZE:
            raise ValueError(f"part_size must be between 5 MiB and 5 GiB, got {part_size!r}")
        if (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or not 1 <= max_concurrency <= 64
        ):
            raise ValueError(f"max_concurrency must be an integer from 1 to 64, got {max_concurrency!r}")
        if addressing_style not in (None, "path", "virtual"):
            raise ValueError(f"addressing_style must be 'path' or 'virtual', got {addressing_style!r}")
        if not isinstance(checksums, bool):
            raise ValueError(f"checksums must be true or false, got {checksums!r}")
        object_parameters = _object_parameters(
            {
                "acl": acl,
                "server_side_encryption": server_side_encryption,
                "sse_kms_key_id": sse_kms_key_id,
                "storage_class": storage_class,
                "cache_control": cache_control,
            },
            extra_put_kwargs,
        )
        building = {
            "region_name": region_name,
            "endpoint_url": endpoint_url,
            "addressing_style": addressing_style,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "max_attempts": max_attempts,
            "max_pool_connections": max_pool_connections,
        }
        if client is None:
            options: dict[str, Any] = {
                "signature_version": "s3v4",
                "connect_timeout": _seconds("connect_timeout", connect_timeout, DEFAULT_CONNECT_TIMEOUT),
                "read_timeout": _seconds("read_timeout", read_timeout, DEFAULT_READ_TIMEOUT),
                "retries": {
                    "mode": "standard",
                    # botocore's own "max_attempts" counts retries only; this counts every attempt.
                    "total_max_attempts": _count(
                        "max_attempts", max_attempts, DEFAULT_MAX_ATTEMPTS, _MAX_ATTEMPTS_LIMIT
                    ),
                },
                "max_pool_connections": _count(
                    "max_pool_connections", max_pool_connections, max(10, max_concurrency + 2), 1000
                ),
                "s3": {"addressing_style": addressing_style} if addressing_style else None,
            }
            if not checksums and "request_checksum_calculation" in Config.OPTION_DEFAULTS:
                # botocore 1.36+ adds CRC32 checksums unasked; older versions send none by default.
                options["request_checksum_calculation"] = "when_required"
                options["response_checksum_validation"] = "when_required"
            client = boto3.session.Session().client(
                "s3", region_name=region_name, endpoint_url=endpoint_url, config=Config(**options)
            )
        elif given := [name for name, value in building.items() if value is not None]:
            raise ValueError(f"pass a client, or options to build one, not both (got {', '.join(given)})")
        #: The bucket's name.
        self.bucket = bucket
        #: The key prefix inside the bucket, without slashes at either end (``""`` for none).
        self.prefix = prefix
        #: The boto3 S3 client in use.
        self.client: S3Client = client
        #: Bytes per part of a multipart upload.
        self.part_size = size
        #: Parts uploaded at once.
        self.max_concurrency = max_concurrency
        #: Whether SHA-256 checksums go with every upload.
        self.checksums = checksums
        #: What every object written is stored with (ACL, encryption, storage class, caching).
        self.object_parameters = object_parameters
        self._bucket_found = False

    def __repr__(self) -> str:
        return f"S3StorageBackend(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def store_area(self) -> tuple[str, str]:
        """``("s3:<endpoint>/<bucket>", <prefix>)``: two backends over one bucket are one store.

        The endpoint is the client's, as configured; two spellings of one endpoint (a regional and a
        global host name of AWS, an IP address and a host name) cannot be told apart.
        """
        endpoint = self.client.meta.endpoint_url.rstrip("/").lower()
        return f"s3:{endpoint}/{self.bucket}", self.prefix

    # -- writing -------------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        stream: Readable,
        *,
        content_type: str | None = None,
        original_filename: str | None = None,
    ) -> None:
        """Upload ``stream``: one PUT if it ends within the first part, else a multipart upload.

        The object appears at its key only once the upload completes. If reading the stream fails
        (the size limit passed, the client gone) or S3 refuses a part, the multipart upload is
        aborted, so neither an object nor stored parts are left, and the error is raised.
        A stream whose ``read`` returns ``None`` (non-blocking, nothing ready) raises
        :class:`io.UnsupportedOperation` and aborts likewise. ``content_type`` becomes the object's
        ``Content-Type``; ``original_filename``, cut to 1 KiB percent-encoded
        (:func:`~granite_storage.headers.shorten_filename`), goes into its ``Content-Disposition``
        and, percent-encoded (S3 metadata is ASCII), into the user metadata ``original-filename``.
        """
        object_key = self._object_key(key)
        arguments = self._object_arguments(content_type, original_filename)
        reader = _PartReader(stream, self.part_size)
        first = reader.read_part()
        second = reader.read_part() if len(first) == self.part_size else _Part(bytearray(), 0)
        if not second:
            try:
                with _translated_errors("upload", self.bucket, object_key, key):
                    self.client.put_object(Bucket=self.bucket, Key=object_key, Body=first.body(), **arguments)
            finally:
                first.release()
            return
        with _translated_errors("upload", self.bucket, object_key, key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=object_key, **arguments)[
                "UploadId"
            ]
        read_ahead = [first, second]
        del first, second  # _upload_parts drops each part once sent: no other name may keep one alive
        try:
            parts = self._upload_parts(key, object_key, upload_id, reader, read_ahead)
            with _translated_errors("upload", self.bucket, object_key, key):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            self._abort(key, object_key, upload_id)
            raise

    def delete(self, key: str) -> None:
        """Delete the object; S3 reports success for a missing one too."""
        object_key = self._object_key(key)
        with _translated_errors("delete", self.bucket, object_key, key):
            self.client.delete_object(Bucket=self.bucket, Key=object_key)

    def delete_many(self, keys: Sequence[str]) -> Mapping[str, Exception]:
        """Delete the objects with ``DeleteObjects``, up to 1,000 keys per request.

        S3 answers a batch with the keys it could not delete, each with an error code; those become
        per-key failures (mapped as every other S3 error is: a refusal is a
        :class:`~granite_storage.StoragePermissionError`, and so on). A request that fails as a whole
        (the endpoint unreachable, access denied to the bucket) fails each key of its batch, and the
        next batch is still tried. An unsafe key fails alone and is never sent.
        """
        failures: dict[str, Exception] = {}
        batch: dict[str, str] = {}  # bucket key: backend key
        for key in keys:
            try:
                batch[self._object_key(key)] = key
            except InvalidKeyError as exc:
                failures[key] = exc
                continue
            if len(batch) == MAX_DELETE_BATCH:
                failures.update(self._delete_batch(batch))
                batch = {}
        if batch:
            failures.update(self._delete_batch(batch))
        return failures

    def _delete_batch(self, batch: Mapping[str, str]) -> dict[str, Exception]:
        """One ``DeleteObjects`` request for ``batch`` (bucket key: backend key); its failures by key."""
        shown = next(iter(batch))
        try:
            with _translated_errors("delete", self.bucket, shown, batch[shown]):
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": object_key} for object_key in batch], "Quiet": True},
                )
        except StorageError as exc:
            return dict.fromkeys(batch.values(), exc)
        failures: dict[str, Exception] = {}
        for error in response.get("Errors", []):
            object_key = error.get("Key", "")
            key = batch.get(object_key)
            if key is None:
                continue  # not a key this request named; nothing of ours to report
            code, message = error.get("Code", ""), error.get("Message", "")
            if code in _NOT_FOUND:
                continue  # already gone: deleting a missing object is not a failure
            failures[key] = _error_for_code(
                code, 0, message, action="delete", bucket=self.bucket, object_key=object_key, key=key
            )
        return failures

    def remove_incomplete_uploads(self, *, older_than: timedelta, prefix: str = "") -> int:
        """Abort the multipart uploads under ``prefix`` started more than ``older_than`` ago.

        An upload killed mid-way (the process died before it could abort) leaves its parts stored,
        and billed, until aborted. Uploads outside the backend's prefix (and outside ``prefix``
        within it) are left alone. A bucket lifecycle rule (``AbortIncompleteMultipartUpload``)
        does the same on the server.
        """
        super().remove_incomplete_uploads(older_than=older_than, prefix=prefix)
        cutoff = datetime.now(UTC) - older_than
        removed = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        list_prefix = self._list_prefix(prefix)
        with _translated_errors("list uploads of", self.bucket, list_prefix or "/", self.prefix or "/"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=list_prefix):
                for upload in page.get("Uploads", []):
                    key = self._relative_key(upload.get("Key", ""))
                    if key is None or upload.get("Initiated", cutoff) > cutoff:
                        continue
                    self._abort(key, upload["Key"], upload["UploadId"])
                    removed += 1
        return removed

    # -- reading -------------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """Stream the object from S3 (a ``GetObject`` read as it is consumed)."""
        return self._get(key, 0, None)

    def open_range(self, key: str, start: int, end: int | None = None) -> BinaryIO:
        """Stream the bytes ``[start:end]`` with an HTTP ``Range`` request.

        A server that ignores the ``Range`` and sends the whole object (a 200 without
        ``Content-Range``) is still read correctly: the bytes before ``start`` are read and
        dropped, and reading stops at ``end``.
        """
        check_range(start, end)
        if start == 0 and end is None:
            return self.open(key)
        if end == start:
            self.stat(key)  # raises for a missing object; an empty range needs no download
            return io.BytesIO()
        return self._get(key, start, end)

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time from a ``HeadObject`` request.

        S3 answers a ``HEAD`` in a missing bucket with the same bare 404 as for a missing object, so
        on a 404 the bucket is looked up (``HeadBucket``, once per backend while it is found):
        a missing bucket raises :class:`~granite_storage.ConfigurationError`, as every other
        operation does, and ``exists`` raises it too rather than answering ``False``.
        """
        object_key = self._object_key(key)
        try:
            with _translated_errors("stat", self.bucket, object_key, key):
                head = self.client.head_object(Bucket=self.bucket, Key=object_key)
        except ObjectNotFoundError:
            self._check_bucket(object_key)
            raise
        return ObjectInfo(key, head["ContentLength"], _utc(head["LastModified"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """List the objects under ``prefix`` page by page (``ListObjectsV2``), as whole segments.

        Keys in the bucket that are not valid keys (a ``dir/`` marker object, ``a//b``) are skipped;
        so is everything outside the backend's prefix.
        """
        list_prefix = self._list_prefix(prefix)
        return self._list(list_prefix, prefix or self.prefix or "/")

    def url(
        self,
        key: str,
        *,
        expires_in: timedelta,
        content_type: str | None = None,
        content_disposition: str | None = None,
    ) -> str:
        """A presigned ``GetObject`` URL, valid for ``expires_in`` (at most seven days).

        The download is served with ``content_type`` and ``content_disposition`` (the
        ``response-content-*`` overrides, which are signed into the URL). No request is made: the
        URL is signed locally with the client's credentials, so it works only if those credentials
        may read the object, and it does not check that the object exists.

        Raises:
            ValueError: ``expires_in`` is under a second or over seven days.
        """
        object_key = self._object_key(key)
        seconds = int(expires_in.total_seconds())
        if not 1 <= seconds <= MAX_URL_EXPIRY.total_seconds():
            raise ValueError(f"expires_in must be from 1 second to 7 days, got {expires_in}")
        params: dict[str, str] = {"Bucket": self.bucket, "Key": object_key}
        if content_type:
            params["ResponseContentType"] = content_type
        if content_disposition:
            params["ResponseContentDisposition"] = content_disposition
        with _translated_errors("sign a URL for", self.bucket, object_key, key):
            return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)

    # -- helpers -------------------------------------------------------------------------------------

    def _object_key(self, key: str) -> str:
        """The bucket key of ``key``: validated, placed under the prefix, at most 1024 bytes long."""
        validate_key(key)
        object_key = f"{self.prefix}/{key}" if self.prefix else key
        if len(object_key.encode("utf-8", "surrogatepass")) > _MAX_OBJECT_KEY:
            raise InvalidKeyError(
                key, f"under the prefix {self.prefix!r} it is longer than S3's {_MAX_OBJECT_KEY} bytes"
            )
        return object_key

    def _check_bucket(self, object_key: str) -> None:
        """Raise :class:`~granite_storage.ConfigurationError` if the bucket does not exist."""
        if self._bucket_found:
            return
        try:
            with _translated_errors("look up the bucket for", self.bucket, object_key, object_key):
                self.client.head_bucket(Bucket=self.bucket)
        except ObjectNotFoundError as exc:
            raise ConfigurationError(
                f"S3 bucket {self.bucket!r} does not exist (tried to stat {object_key!r})"
            ) from exc.__cause__
        self._bucket_found = True  # buckets are not deleted under a running application, as a rule

    def _relative_key(self, object_key: str) -> str | None:
        """The backend key of a bucket key, or ``None`` if it lies outside the prefix or is unsafe."""
        if self.prefix:
            if not object_key.startswith(self.prefix + "/"):
                return None
            object_key = object_key[len(self.prefix) + 1 :]
        try:
            return validate_key(object_key)
        except InvalidKeyError:
            return None

    def _list_prefix(self, prefix: str) -> str:
        """The bucket ``Prefix`` that lists ``prefix`` as whole segments (ends with ``/`` or is ``""``)."""
        prefix = prefix.rstrip("/")
        if not prefix:
            return f"{self.prefix}/" if self.prefix else ""
        return self._object_key(prefix) + "/"

    def _list(self, list_prefix: str, shown: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        with _translated_errors("list", self.bucket, list_prefix or "/", shown):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=list_prefix):
                for item in page.get("Contents", []):
                    key = self._relative_key(item.get("Key", ""))
                    if key is not None:
                        yield ObjectInfo(key, item.get("Size", 0), _utc(item["LastModified"]))

    def _get(self, key: str, start: int, end: int | None) -> BinaryIO:
        """The object's bytes ``[start:end]`` as a stream (a ``Range`` request unless it is all)."""
        object_key = self._object_key(key)
        ranged = start > 0 or end is not None
        arguments: dict[str, Any] = {}
        if ranged:
            arguments["Range"] = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            with _translated_errors("read", self.bucket, object_key, key):
                response = self.client.get_object(Bucket=self.bucket, Key=object_key, **arguments)
        except StorageError as exc:
            if ranged and _error_code(exc.__cause__) == "InvalidRange":
                return io.BytesIO()  # the range starts at or past the end: nothing to read
            raise
        raw: io.RawIOBase = _ObjectReader(response["Body"], self.bucket, object_key, key)
        if ranged and "ContentRange" not in response:
            # The server ignored the Range and sends the whole object: skip to start, stop at end.
            try:
                _skip(raw, start)
            except BaseException:
                raw.close()
                raise
            raw = BoundedReader(raw, None if end is None else end - start)
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=64 * 1024))

    def _object_arguments(self, content_type: str | None, original_filename: str | None) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        if content_type:
            arguments["ContentType"] = content_type
        if original_filename:
            name = shorten_filename(original_filename)
            arguments["ContentDisposition"] = content_disposition(name)
            arguments["Metadata"] = {"original-filename": encode_filename(name)}
        if self.checksums:
            arguments["ChecksumAlgorithm"] = "SHA256"
        arguments.update(self.object_parameters.request_arguments())
        return arguments

    def _upload_parts(
        self, key: str, object_key: str, upload_id: str, reader: _PartReader, read_ahead: _Parts
    ) -> _CompletedParts:
        """Upload the parts ``reader`` yields (the first ones already read), holding ``max_concurrency``."""
        parts: _CompletedParts = []
        pending: set[Future[CompletedPartTypeDef]] = set()
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="granite-s3-upload")
        try:
            number = 0
            while True:
                # Room first, then the next part: the part being read counts against the limit too.
                while pending and len(pending) + (0 if read_ahead else 1) > self.max_concurrency:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    parts.extend(future.result() for future in done)
                part = read_ahead.pop(0) if read_ahead else reader.read_part()
                if not part:
                    break
                number += 1
                if number > _MAX_PARTS:
                    raise StorageError(
                        f"{key!r} needs more than {_MAX_PARTS} parts of {self.part_size} bytes; "
                        "configure a larger part_size"
                    )
                pending.add(pool.submit(self._upload_part, key, object_key, upload_id, number, part))
                del part  # the worker holds the only reference: freed as soon as it is sent
            parts.extend(future.result() for future in pending)
        finally:
            # On failure, parts not yet started are dropped and running ones finish before the
            # caller aborts: a part stored after the abort would stay behind.
            pool.shutdown(wait=True, cancel_futures=True)
        return sorted(parts, key=lambda part: part["PartNumber"])

    def _upload_part(
        self, key: str, object_key: str, upload_id: str, number: int, body: _Part
    ) -> CompletedPartTypeDef:
        arguments: dict[str, Any] = {"ChecksumAlgorithm": "SHA256"} if self.checksums else {}
        try:
            with _translated_errors("upload", self.bucket, object_key, key):
                response = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body.body(),
                    **arguments,
                )
        finally:
            body.release()  # sent (retries included) or failed: its memory goes back to the system now
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumSHA256" in response:
            part["ChecksumSHA256"] = response["ChecksumSHA256"]
        return part

    def _abort(self, key: str, object_key: str, upload_id: str) -> None:
        """Abort a multipart upload; a failure is logged, not raised (the caller has its own error)."""
        try:
            with _translated_errors("abort the upload of", self.bucket, object_key, key):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
        except StorageError as exc:
            if _error_code(exc.__cause__) != "NoSuchUpload":
                logger.exception(
                    "could not abort multipart upload %s of %r in bucket %r; "
                    "remove_incomplete_uploads() or a lifecycle rule will",
                    upload_id,
                    object_key,
                    self.bucket,
                )


class _ObjectReader(io.RawIOBase):
    """The raw stream of a ``GetObject`` body, with botocore's errors translated; closes the body."""

    def __init__(self, body: StreamingBody, bucket: str, object_key: str, key: str) -> None:
        super().__init__()
        self._body = body
        self._where = (bucket, object_key, key)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        with _translated_errors("read", *self._where):
            data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


class _Part:
    """One part's bytes: in a ``bytearray`` up to one chunk, in an anonymous memory map beyond.

    A map goes back to the system the moment it is released. A whole part in a ``bytearray`` does
    not: glibc raises its mmap threshold to the size of the largest block freed (up to 32 MiB), so
    once the first 8 MiB part is freed every later one comes from the heap arena of the thread that
    read it, and each arena keeps what it held at its peak. Measured on a migration of 4 x 128 MiB
    objects to SeaweedFS with 4 workers (benchmark scenario 7), the peak resident memory grew by
    122 MiB with ``bytearray`` parts and by 46 MiB with maps; parts of 8 MiB, 4 held at once.
    """

    __slots__ = ("_data", "size")

    def __init__(self, data: bytearray | mmap.mmap, size: int) -> None:
        self._data = data
        #: Bytes of the part (a map may be larger: only the last part is shorter than its map).
        self.size = size

    def __len__(self) -> int:
        return self.size

    def body(self) -> bytes | BinaryIO:
        """The part as a request body, uncopied: the ``bytearray``, or a read-only file over the map.

        botocore sends a ``bytearray`` as it does ``bytes`` (its parameter validation accepts both);
        only the type stubs say ``bytes``.
        """
        if isinstance(self._data, bytearray):
            return cast(bytes, self._data)
        return cast(BinaryIO, _MappedBody(self._data, self.size))

    def release(self) -> None:
        """Return a map's memory to the system; the part must not be read afterwards."""
        if isinstance(self._data, mmap.mmap):
            self._data.close()


class _MappedBody(io.RawIOBase):
    """The first ``size`` bytes of a map as a seekable read-only file: a part as botocore sends it.

    botocore learns the length from ``len()``, hashes the body and rewinds it (``seek``/``tell``),
    and on a retry seeks back to the start. It reads in chunks of 1 MiB (for the checksum and the
    signature); each ``read(n)`` returns at most :data:`_BODY_READ` bytes, which its loops accept, so
    the copies it makes stay below the allocator's mmap threshold and are reused, not kept: with
    whole 1 MiB reads the 4 upload threads of a 1 GiB upload held 12 MiB more.
    """

    def __init__(self, data: mmap.mmap, size: int) -> None:
        super().__init__()
        self._data = data
        self._size = size
        self._position = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        wanted = self._size if size is None or size < 0 else min(size, _BODY_READ)  # all: one copy
        end = min(self._size, self._position + wanted)
        start, self._position = self._position, max(end, self._position)
        return self._data[start:end]

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        with memoryview(buffer) as view, view.cast("B") as target:
            data = self.read(len(target))
            target[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position


class _PartReader:
    """Reads a stream in parts of exactly ``part_size`` bytes (fewer only at its end).

    Small first: up to one chunk (:data:`~granite_storage.streams.DEFAULT_CHUNK_SIZE`) is gathered as
    it comes, and only a stream that goes on past it gets a whole part's buffer, so a 100-byte upload
    costs 100 bytes, not ``part_size``. A ``read(n)`` that returns more than ``n`` bytes has its
    excess kept for the next part (held until then, beyond the parts' bound). A read that returns
    ``None`` (a non-blocking stream with nothing ready) raises :class:`io.UnsupportedOperation`:
    taken for the end, it would store a truncated object.
    """

    def __init__(self, stream: Readable, part_size: int) -> None:
        self._stream = stream
        self._part_size = part_size
        self._excess = memoryview(b"")

    def read_part(self) -> _Part:
        """The next part; empty at the end of the stream."""
        size = self._part_size
        head = bytearray()
        while len(head) < min(size, DEFAULT_CHUNK_SIZE):
            chunk = self._read(min(size, DEFAULT_CHUNK_SIZE) - len(head))
            if not chunk:
                return _Part(head, len(head))
            head += chunk
        if len(head) == size:
            return _Part(head, size)
        part = mmap.mmap(-1, size)  # pages the last part leaves untouched are never resident
        try:
            with memoryview(part) as view:
                view[: len(head)] = head
                filled = len(head)
                del head
                while filled < size:
                    chunk = self._read(min(size - filled, DEFAULT_CHUNK_SIZE))
                    if not chunk:
                        break
                    view[filled : filled + len(chunk)] = chunk
                    filled += len(chunk)
        except BaseException:
            part.close()
            raise
        return _Part(part, filled)

    def _read(self, limit: int) -> bytes | memoryview:
        """Up to ``limit`` bytes: the excess of an earlier over-long read first, then the stream's."""
        if not self._excess:
            data: bytes | None = self._stream.read(limit)
            if data is None:
                raise io.UnsupportedOperation(
                    "the S3 backend needs a blocking stream; a read returned None (no data yet)"
                )
            if len(data) <= limit:
                return data
            self._excess = memoryview(bytes(data))
        taken, self._excess = self._excess[:limit], self._excess[limit:]
        return taken


def _object_parameters(
    given: dict[str, str | None], extra_put_kwargs: Mapping[str, Any] | None
) -> S3ObjectParameters:
    """The object parameters given by name, with those of 0.1.0's ``extra_put_kwargs`` merged in."""
    if extra_put_kwargs is not None:
        warnings.warn(
            "S3StorageBackend(extra_put_kwargs=...) is deprecated; pass acl=, server_side_encryption=, "
            "sse_kms_key_id=, storage_class= or cache_control= instead",
            DeprecationWarning,
            stacklevel=3,
        )
        if not isinstance(extra_put_kwargs, Mapping):
            raise ConfigurationError(f"extra_put_kwargs must be a mapping, got {extra_put_kwargs!r}")
        legacy = S3ObjectParameters.from_put_kwargs(extra_put_kwargs)
        for name, value in given.items():
            from_legacy = getattr(legacy, name)
            if from_legacy is None:
                continue
            if value is not None:
                raise ConfigurationError(f"{name} is given both by name and in extra_put_kwargs")
            given[name] = from_legacy
    return S3ObjectParameters(**given)


def _seconds(name: str, value: object, default: float) -> float:
    """``value`` as a positive, finite number of seconds (``default`` for ``None``), else ValueError."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _count(name: str, value: object, default: int, limit: int) -> int:
    """``value`` as an integer from 1 to ``limit`` (``default`` for ``None``), else ValueError."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValueError(f"{name} must be an integer from 1 to {limit}, got {value!r}")
    return value


def _skip(stream: io.RawIOBase, count: int) -> None:
    """Read and drop the first ``count`` bytes of ``stream`` (fewer if it ends first)."""
    while count > 0:
        chunk = stream.read(min(count, DEFAULT_CHUNK_SIZE))
        if not chunk:
            return
        count -= len(chunk)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _error_code(exc: BaseException | None) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


@contextlib.contextmanager
def _translated_errors(action: str, bucket: str, object_key: str, key: str) -> Iterator[None]:
    """Raise botocore's errors inside as the most specific :class:`~granite_storage.StorageError`.

    Messages name ``object_key`` (the key in the bucket, prefix included, which operators find in
    the bucket); :class:`~granite_storage.ObjectNotFoundError` carries ``key``, the backend's own.
    """
    try:
        yield
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _storage_error(exc, action=action, bucket=bucket, object_key=object_key, key=key) from exc


def _error_for_code(
    code: str, status: int, message: str, *, action: str, bucket: str, object_key: str, key: str
) -> StorageError:
    """The library error for an S3 error ``code`` (and HTTP ``status``, ``0`` when unknown)."""
    where = f"{object_key!r} in S3 bucket {bucket!r}"
    if code in _NOT_FOUND:
        return ObjectNotFoundError(key)
    if code == "NoSuchBucket":
        # Not transient, so not "unavailable": the configuration names a bucket that is not there.
        return ConfigurationError(f"S3 bucket {bucket!r} does not exist (tried to {action} {object_key!r})")
    if code in _FORBIDDEN or status == 403:
        return StoragePermissionError(f"S3 refused to {action} {where}: {code} {message}")
    if code in _UNAVAILABLE or status >= 500:
        return BackendUnavailableError(f"S3 could not {action} {where}: {code} {message}")
    return StorageError(f"S3 failed to {action} {where}: {code} {message}")


def _storage_error(exc: Exception, *, action: str, bucket: str, object_key: str, key: str) -> StorageError:
    """The library error that says what ``exc``, raised by botocore, means."""
    where = f"{object_key!r} in S3 bucket {bucket!r}"
    if isinstance(exc, botocore.exceptions.ClientError):
        code = _error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        return _error_for_code(
            code, status, message, action=action, bucket=bucket, object_key=object_key, key=key
        )
    if isinstance(exc, _CREDENTIALS):
        return ConfigurationError(
            f"no usable AWS credentials to {action} {where}: {exc} (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, a profile, or a role; or pass a configured client)"
        )
    if isinstance(exc, _CONNECTION):
        return BackendUnavailableError(f"S3 unreachable while trying to {action} {where}: {exc}")
    return StorageError(f"S3 failed to {action} {where}: {exc}")
