"""granite-storage: backend-agnostic file storage for SQLAlchemy 2 models.

The public surface is re-exported here; implementation modules stay importable for the plugin author
(:mod:`granite_storage.hookspecs`, :mod:`granite_storage.testing`) and for advanced use.
"""

from __future__ import annotations

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
    UnsupportedOperationError,
)
from granite_storage.manager import StorageManager
from granite_storage.plugins import PluginHost
from granite_storage.policy import StoragePolicy, parse_size
from granite_storage.refs import StoredObjectRef
from granite_storage.streams import Readable, SizeLimitedStream

__version__ = "0.2.0"

__all__ = [
    "BackendUnavailableError",
    "ConfigurationError",
    "ContentTooLargeError",
    "IncompleteUploadError",
    "InvalidKeyError",
    "InvalidMetadataError",
    "InvalidReferenceError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "PluginError",
    "PluginHost",
    "Readable",
    "SizeLimitedStream",
    "StorageBackend",
    "StorageError",
    "StorageManager",
    "StoragePermissionError",
    "StoragePolicy",
    "StoredObjectRef",
    "UnsupportedOperationError",
    "__version__",
    "hookimpl",
    "parse_size",
]
