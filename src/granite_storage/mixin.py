"""granite-storage 0.1.0's import path of the model mixin (now in :mod:`granite_storage.orm`).

The same classes as ``from granite_storage import StoredContentMixin, ReplaceContentResult``, which new
code should use. Importing this module imports SQLAlchemy's ORM.
"""

from __future__ import annotations

from granite_storage.orm.content import ReplaceContentResult, StoredContentMixin

__all__ = ["ReplaceContentResult", "StoredContentMixin"]
