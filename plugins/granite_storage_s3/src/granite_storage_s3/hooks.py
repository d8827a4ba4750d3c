"""Plugin hooks of granite-storage-s3, loaded through the ``granite_storage`` entry point.

Nothing here imports boto3: the backend class is registered by name and imported only when a
configuration or the application first uses the ``s3`` type.
"""

from __future__ import annotations

from granite_storage import hookimpl
from granite_storage.hookspecs import RegisterBackend


@hookimpl
def granite_storage_register_backends(register: RegisterBackend) -> None:
    """Register the ``s3`` backend type (imported, with boto3, only when a config uses it)."""
    register("s3", "granite_storage_s3.backend:S3StorageBackend")
