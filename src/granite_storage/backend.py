"""The interface every storage backend implements."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

from granite_storage.errors import ObjectNotFoundError
from granite_storage.streams import Readable

__all__ = ["ObjectInfo", "StorageBackend"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a backend knows about one stored object without reading it.

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
    * :meth:`open`, :meth:`get` and :meth:`stat` raise :class:`~granite_storage.ObjectNotFoundError`
      for a missing key; :meth:`delete` of a missing key does nothing.
    * :meth:`list` yields every object under a prefix, matched as whole path segments.
    * No key, however crafted, reads, writes or deletes anything outside the backend's root; an unsafe
      key raises :class:`~granite_storage.InvalidKeyError`.
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

        ``content_type`` and ``original_filename`` are hints the backend may record as object metadata.
        """

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open the object for streaming reads; the caller closes it (it is a context manager)."""

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

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key lies under ``prefix`` (whole segments; ``""`` for all).

        The order is unspecified. Implementations stream: memory does not grow with the number of
        objects listed.
        """

    def remove_incomplete_uploads(self, *, older_than: timedelta) -> int:
        """Remove what uploads interrupted by a crash left behind, if older than ``older_than``.

        An upload killed mid-way (``kill -9``, a power loss) leaves no object at its key, but may
        leave the backend's working data: the local backend's temporary files, an S3 multipart
        upload. Choose ``older_than`` longer than the longest upload, so that uploads in progress are
        kept. Returns how many were removed. Backends that leave nothing behind keep this default,
        which removes nothing.
        """
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        return 0
