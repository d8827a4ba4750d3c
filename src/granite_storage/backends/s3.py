"""``granite_storage.backends.s3.S3StorageBackend``: the 0.1.0 import path of the S3 backend.

The class will live in the ``granite-storage-s3`` distribution, installed with the ``s3`` extra; until
that plugin is released, importing this module raises :class:`ImportError` saying so.
"""

from __future__ import annotations

from granite_storage.plugins import S3_INSTALL_HINT

try:
    from granite_storage_s3 import S3StorageBackend  # type: ignore[import-not-found]
except ModuleNotFoundError as exc:
    if exc.name != "granite_storage_s3":
        raise
    raise ImportError(f"S3StorageBackend is not installed: it comes with {S3_INSTALL_HINT}") from exc

__all__ = ["S3StorageBackend"]
