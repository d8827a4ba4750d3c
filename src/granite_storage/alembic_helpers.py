"""granite-storage 0.1.0's path of ``portable_storage_ref_type``, now in :mod:`granite_storage.alembic`.

New code imports it from :mod:`granite_storage` or :mod:`granite_storage.alembic`, which also has the
hook that makes Alembic's autogenerate write it. 0.1.0's ``EXAMPLE_POSTGRESQL_TEXT_TO_STORAGE_REF``
string is gone; importing it raises :class:`ImportError` pointing at the migrations guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from granite_storage._compat import removed_names
from granite_storage.orm.types import portable_storage_ref_type

__all__ = ["portable_storage_ref_type"]

if not TYPE_CHECKING:
    __getattr__ = removed_names(
        __name__,
        {
            "EXAMPLE_POSTGRESQL_TEXT_TO_STORAGE_REF": (
                "the user guide's 'Migrations' page shows how to migrate reference columns"
            )
        },
    )
