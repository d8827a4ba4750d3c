"""Objects kept in a dictionary, for tests and examples."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from granite_storage import ObjectInfo, ObjectNotFoundError, Readable, StorageBackend
from granite_storage.keys import is_within_prefix, validate_key


class MemoryStorageBackend(StorageBackend):
    """Keep every object in memory, in this process, until it is deleted.

    The whole object is buffered before it is published, which is what makes a failed upload leave
    nothing behind; a real backend streams to its store instead (see ``granite-storage-local``).
    """

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, datetime]] = {}
        self._lock = threading.Lock()

    def put(
        self,
        key: str,
        stream: Readable,
        *,
        content_type: str | None = None,
        original_filename: str | None = None,
    ) -> None:
        """Read ``stream`` to the end, then publish it at ``key`` in one step."""
        validate_key(key)
        buffer = io.BytesIO()
        while chunk := stream.read(1024 * 1024):
            buffer.write(chunk)
        with self._lock:
            self._objects[key] = (buffer.getvalue(), datetime.now(UTC))

    def open(self, key: str) -> BinaryIO:
        """Return a ``BytesIO`` over the object."""
        return io.BytesIO(self._entry(key)[0])

    def stat(self, key: str) -> ObjectInfo:
        """Size and time of storing."""
        content, stored_at = self._entry(key)
        return ObjectInfo(key, len(content), stored_at)

    def delete(self, key: str) -> None:
        """Forget the object, if there is one."""
        validate_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (whole segments)."""
        prefix = prefix.rstrip("/")
        if prefix:
            validate_key(prefix)
        with self._lock:
            snapshot = list(self._objects.items())
        for key, (content, stored_at) in snapshot:
            if is_within_prefix(key, prefix):
                yield ObjectInfo(key, len(content), stored_at)

    def _entry(self, key: str) -> tuple[bytes, datetime]:
        validate_key(key)
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise ObjectNotFoundError(key) from None
