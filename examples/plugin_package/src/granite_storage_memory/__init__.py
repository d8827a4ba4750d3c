"""An example granite-storage plugin: an in-memory backend registered as type ``memory``."""

from __future__ import annotations

from granite_storage_memory.backend import MemoryStorageBackend

__all__ = ["MemoryStorageBackend"]
