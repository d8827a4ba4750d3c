"""granite-storage 0.1.0's import path of the reference column types (now in :mod:`granite_storage.orm`).

The same objects as ``from granite_storage import StoredObjectRefType, StorageJSONType``, which new
code should use. Importing this module imports SQLAlchemy's ORM.
"""

from __future__ import annotations

from granite_storage.orm.types import StorageJSONType, StoredObjectRefType

__all__ = ["StorageJSONType", "StoredObjectRefType"]
