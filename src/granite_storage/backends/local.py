"""``granite_storage.backends.local.LocalStorageBackend``: the 0.1.0 import path of the local backend.

The class lives in the ``granite-storage-local`` distribution (installed with ``granite-storage``).
"""

from __future__ import annotations

try:
    from granite_storage_local import LocalStorageBackend
except ModuleNotFoundError as exc:  # pragma: no cover - granite-storage depends on the plugin
    if exc.name != "granite_storage_local":
        raise
    raise ImportError(
        "LocalStorageBackend is provided by the granite-storage-local plugin, which is not "
        "installed: pip install granite-storage-local"
    ) from exc

__all__ = ["LocalStorageBackend"]
