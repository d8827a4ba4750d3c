"""Plugin hooks of granite-storage-local, loaded through the ``granite_storage`` entry point."""

from __future__ import annotations

from granite_storage import hookimpl
from granite_storage.hookspecs import RegisterBackend


@hookimpl
def granite_storage_register_backends(register: RegisterBackend) -> None:
    """Register the ``local`` backend type (imported only when a config uses it)."""
    register("local", "granite_storage_local.backend:LocalStorageBackend")
