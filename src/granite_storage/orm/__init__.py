"""The SQLAlchemy integration: file-aware models, the reference column type, session tracking.

Importing this package imports SQLAlchemy's ORM; ``import granite_storage`` alone does not, and
reaches these names lazily (``from granite_storage import StoredContentMixin`` works).
``StorageJSONType`` is the reference column's JSON type as an instance (0.1.0's name; see
:data:`granite_storage.orm.types.StorageJSONType`).
"""

from __future__ import annotations

from granite_storage.orm.content import (
    BoundStoredContent,
    ReplaceContentResult,
    StoredContent,
    StoredContentMixin,
    StoredContentOperations,
    UploadFileLike,
    configure_storage_manager,
)
from granite_storage.orm.queries import iter_model_storage_refs
from granite_storage.orm.sqlite import enable_sqlite_savepoints
from granite_storage.orm.tracking import register_stored_object, track_storage
from granite_storage.orm.types import StorageJSONType, StoredObjectRefType, portable_storage_ref_type

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
