"""The local file system backend for granite-storage (backend type ``local``)."""

from __future__ import annotations

from granite_storage_local.backend import LocalStorageBackend

__all__ = ["LocalStorageBackend"]
