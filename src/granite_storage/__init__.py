"""granite-storage: backend-agnostic file storage for SQLAlchemy 2 models.

The public surface is re-exported here; implementation modules stay importable for the plugin author
(:mod:`granite_storage.hookspecs`, :mod:`granite_storage.testing`) and for advanced use.
"""

from __future__ import annotations

import typing

from granite_storage._markers import hookimpl
from granite_storage.backend import ObjectInfo, StorageBackend
from granite_storage.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ContentTooLargeError,
    IncompleteUploadError,
    InvalidKeyError,
    InvalidMetadataError,
    InvalidReferenceError,
    ObjectNotFoundError,
    PluginError,
    StorageError,
    StoragePermissionError,
    UnsavedEntityError,
    UnsupportedOperationError,
    UnverifiableReferenceError,
)
from granite_storage.gc import GarbageCollectionReport, StorageGarbageCollector
from granite_storage.manager import StorageManager
from granite_storage.plugins import PluginHost
from granite_storage.policy import StorageLocation, StoragePolicy, parse_size
from granite_storage.refs import InvalidStoredObjectRef, StoredObjectRef
from granite_storage.streams import Readable, SizeLimitedStream

if typing.TYPE_CHECKING:
    from granite_storage.orm import (
        ReplaceContentResult,
        StoredContent,
        StoredContentMixin,
        StoredObjectRefType,
        configure_storage_manager,
        iter_model_storage_refs,
        track_storage,
    )

__version__ = "0.2.0"

# The SQLAlchemy integration is re-exported lazily: importing it imports SQLAlchemy's ORM, which
# costs more than the rest of the package and is not needed to store files.
_ORM_NAMES = frozenset(
    {
        "ReplaceContentResult",
        "StoredContent",
        "StoredContentMixin",
        "StoredObjectRefType",
        "configure_storage_manager",
        "iter_model_storage_refs",
        "track_storage",
    }
)

__all__ = [
    "BackendUnavailableError",
    "ConfigurationError",
    "ContentTooLargeError",
    "GarbageCollectionReport",
    "IncompleteUploadError",
    "InvalidKeyError",
    "InvalidMetadataError",
    "InvalidReferenceError",
    "InvalidStoredObjectRef",
    "ObjectInfo",
    "ObjectNotFoundError",
    "PluginError",
    "PluginHost",
    "Readable",
    "ReplaceContentResult",
    "SizeLimitedStream",
    "StorageBackend",
    "StorageError",
    "StorageGarbageCollector",
    "StorageLocation",
    "StorageManager",
    "StoragePermissionError",
    "StoragePolicy",
    "StoredContent",
    "StoredContentMixin",
    "StoredObjectRef",
    "StoredObjectRefType",
    "UnsavedEntityError",
    "UnsupportedOperationError",
    "UnverifiableReferenceError",
    "__version__",
    "configure_storage_manager",
    "hookimpl",
    "iter_model_storage_refs",
    "parse_size",
    "track_storage",
]


def __getattr__(name: str) -> object:
    if name in _ORM_NAMES:
        from granite_storage import orm  # lazy on purpose, see _ORM_NAMES

        value = getattr(orm, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_ORM_NAMES})
