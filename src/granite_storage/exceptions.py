"""granite-storage 0.1.0's import path of its errors; they live in :mod:`granite_storage.errors`.

The same classes as ``from granite_storage import StorageError, ContentTooLargeError``, which new
code should use; 0.2.0's other errors (all :class:`StorageError` subclasses) are there too.
"""

from __future__ import annotations

from granite_storage.errors import ContentTooLargeError, StorageError

__all__ = ["ContentTooLargeError", "StorageError"]
