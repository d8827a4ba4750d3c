"""The S3 backend for granite-storage (backend type ``s3``): AWS S3 and S3-compatible stores.

``S3StorageBackend`` is imported on first access, so ``import granite_storage_s3`` (which plugin
discovery does) does not import boto3. :class:`S3ObjectParameters`, the validated object parameters
(ACL, server-side encryption, storage class, ``Cache-Control``), imports no boto3 either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from granite_storage_s3.parameters import S3ObjectParameters

if TYPE_CHECKING:
    from granite_storage_s3.backend import S3StorageBackend

__all__ = ["S3ObjectParameters", "S3StorageBackend"]

# For the interpreter only: type checkers see the import above, so a misspelt name fails there.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Import the backend module (and boto3) when ``S3StorageBackend`` is first asked for."""
        if name == "S3StorageBackend":
            from granite_storage_s3.backend import S3StorageBackend

            return S3StorageBackend
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
