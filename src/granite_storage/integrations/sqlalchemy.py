"""The SQLAlchemy integration under the import path of granite-storage 0.1.0.

``from granite_storage.integrations.sqlalchemy import iter_model_storage_refs`` (as 0.1.0's README
wrote it) keeps working. The module re-exports the whole public surface of
:mod:`granite_storage.orm`, where the integration lives: the same objects (``StorageJSONType`` and
:func:`~granite_storage.orm.portable_storage_ref_type` included), under a second name.
Importing it imports SQLAlchemy's ORM (not FastAPI).
"""

from __future__ import annotations

from granite_storage.orm import (
    BoundStoredContent,
    ReplaceContentResult,
    StorageJSONType,
    StoredContent,
    StoredContentMixin,
    StoredContentOperations,
    StoredObjectRefType,
    UploadFileLike,
    configure_storage_manager,
    enable_sqlite_savepoints,
    iter_model_storage_refs,
    portable_storage_ref_type,
    register_stored_object,
    track_storage,
)

__all__ = [
    "BoundStoredContent",
    "ReplaceContentResult",
    "StorageJSONType",
    "StoredContent",
    "StoredContentMixin",
    "StoredContentOperations",
    "StoredObjectRefType",
    "UploadFileLike",
    "configure_storage_manager",
    "enable_sqlite_savepoints",
    "iter_model_storage_refs",
    "portable_storage_ref_type",
    "register_stored_object",
    "track_storage",
]
