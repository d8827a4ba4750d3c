"""``granite_storage.backends.s3.S3StorageBackend``: the 0.1.0 import path of the S3 backend.

The class lives in the ``granite-storage-s3`` distribution, installed with the ``s3`` extra
(``pip install "granite-storage[s3]"``); without it, importing this module raises :class:`ImportError`
naming that command. Importing this module imports boto3.
"""

from __future__ import annotations

from granite_storage.plugins import S3_INSTALL_HINT

try:
    from granite_storage_s3 import S3StorageBackend
except ModuleNotFoundError as exc:
    if exc.name != "granite_storage_s3":
        raise
    raise ImportError(f"S3StorageBackend is not installed: it comes with {S3_INSTALL_HINT}") from exc

__all__ = ["S3StorageBackend"]
