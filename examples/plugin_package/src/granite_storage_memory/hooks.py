"""The plugin's hook implementations, found through the ``granite_storage`` entry point."""

from __future__ import annotations

from granite_storage import hookimpl
from granite_storage.hookspecs import RegisterBackend


@hookimpl
def granite_storage_register_backends(register: RegisterBackend) -> None:
    """Register the ``memory`` backend type; the class is imported only when a config uses it."""
    register("memory", "granite_storage_memory.backend:MemoryStorageBackend")
