"""The column type that keeps a :class:`~granite_storage.StoredObjectRef` in a database row."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import JSON
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from granite_storage.errors import InvalidReferenceError
from granite_storage.refs import InvalidStoredObjectRef, StoredObjectRef

__all__ = ["StoredObjectRefType", "portable_storage_ref_type"]

logger = logging.getLogger(__name__)


def portable_storage_ref_type() -> TypeEngine[Any]:
    """A JSON column type that is ``JSONB`` on PostgreSQL and ``JSON`` everywhere else.

    This is the storage type of :class:`StoredObjectRefType`. Use it in migrations
    (``op.add_column("document", sa.Column("file_ref", portable_storage_ref_type()))``), which
    should not depend on the Python type a model maps the column to. Python ``None`` is stored as
    SQL ``NULL``, never as JSON ``null``.
    """
    return JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


class StoredObjectRefType(TypeDecorator[StoredObjectRef]):
    """Maps a :class:`~granite_storage.StoredObjectRef` to a JSON column (``JSONB`` on PostgreSQL).

    The column holds :meth:`StoredObjectRef.to_dict() <granite_storage.StoredObjectRef.to_dict>`,
    whose field names are those of granite-storage 0.1.0, so rows written by 0.1.0 load unchanged.
    Python ``None`` is stored as SQL ``NULL`` (``Document.file_ref.is_(None)`` finds rows without
    content); a JSON ``null`` written by 0.1.0 also loads as ``None``.

    References are immutable values: assigning a new one (or ``None``) is an ordinary attribute
    change the session detects and flushes.

    Loading never raises. A row whose JSON is not a valid reference (see
    :meth:`StoredObjectRef.from_dict <granite_storage.StoredObjectRef.from_dict>`) loads as an
    :class:`~granite_storage.InvalidStoredObjectRef`, which raises
    :class:`~granite_storage.InvalidReferenceError` when the manager is asked to use it: one hostile
    row fails alone, and the others of a query still load. A warning is logged for each such row.

    Raises:
        TypeError: binding a value that is neither a ``StoredObjectRef`` nor ``None``.
        InvalidReferenceError: binding an :class:`~granite_storage.InvalidStoredObjectRef`.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """``JSONB`` on PostgreSQL, the dialect's ``JSON`` elsewhere."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: StoredObjectRef | None, dialect: Dialect) -> Any:
        """Turn a reference into its JSON form; ``None`` stays ``None`` (SQL ``NULL``)."""
        if value is None:
            return None
        if not isinstance(value, StoredObjectRef):
            raise TypeError(f"a StoredObjectRefType column takes a StoredObjectRef, got {value!r}")
        return value.to_dict()  # an InvalidStoredObjectRef raises InvalidReferenceError here

    def process_result_value(self, value: Any, dialect: Dialect) -> StoredObjectRef | None:
        """Turn the stored JSON back into a reference (SQL ``NULL`` and JSON ``null`` into ``None``).

        JSON that is not a valid reference becomes an :class:`~granite_storage.InvalidStoredObjectRef`.
        """
        if value is None:
            return None
        try:
            if isinstance(value, str | bytes):
                raise InvalidReferenceError(f"a stored reference must be a JSON object, got {value!r}")
            return StoredObjectRef.from_dict(value)
        except InvalidReferenceError as exc:
            logger.warning("a row holds a stored reference that cannot be used: %s", exc)
            return InvalidStoredObjectRef.of(value, str(exc))

    @property
    def python_type(self) -> type[StoredObjectRef]:
        """:class:`~granite_storage.StoredObjectRef`."""
        return StoredObjectRef
