"""``granite_storage.backends.s3.S3StorageBackend``: the 0.1.0 import path of the S3 backend.

The class lives in the ``granite-storage-s3`` distribution, installed with the ``s3`` extra.
"""

from __future__ import annotations

try:
    from granite_storage_s3 import S3StorageBackend  # type: ignore[import-not-found]
except ModuleNotFoundError as exc:
    if exc.name != "granite_storage_s3":
        raise
    raise ImportError(
        "S3StorageBackend is provided by the granite-storage-s3 plugin, which is not installed: "
        'pip install "granite-storage[s3]"'
    ) from exc

__all__ = ["S3StorageBackend"]
