"""The SQLAlchemy integration under the import path of granite-storage 0.1.0.

``from granite_storage.integrations.sqlalchemy import iter_model_storage_refs`` (as 0.1.0's README
wrote it) keeps working. The module re-exports the whole public surface of
:mod:`granite_storage.orm`, where the integration lives: the same objects (``StorageJSONType`` and
:func:`~granite_storage.orm.portable_storage_ref_type` included), under a second name.
Importing it imports SQLAlchemy's ORM (not FastAPI).
"""

from __future__ import annotations

from granite_storage import orm
from granite_storage.orm import *  # noqa: F403 - the whole public surface, by design

__all__: list[str] = []
__all__ += orm.__all__
