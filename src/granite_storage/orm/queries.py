"""Reading references back out of the database: for audits, and for finding orphaned objects."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Column, Engine, inspect, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from granite_storage.errors import ConfigurationError
from granite_storage.orm.content import StoredContent
from granite_storage.orm.types import StoredObjectRefType
from granite_storage.refs import StoredObjectRef

__all__ = ["iter_model_storage_refs"]


def iter_model_storage_refs(
    session: Session,
    model: type[Any],
    attribute: str | InstrumentedAttribute[Any],
    *,
    batch_size: int = 1000,
) -> Iterator[StoredObjectRef]:
    """Yield the reference of every row of ``model`` whose ``attribute`` holds one.

    ``attribute`` is the reference attribute (``"_file_ref"``, or ``Document._file_ref``) or the
    name of a :class:`~granite_storage.orm.StoredContent` field (``"avatar"``).

    Streams: only the one column is selected, ``batch_size`` rows at a time (a server-side cursor
    on PostgreSQL and MariaDB), and no ORM objects are built, so memory stays flat on a table of
    millions of rows. Rows without a reference are skipped, including the JSON ``null`` that
    granite-storage 0.1.0 wrote.

    Inside a transaction of ``session``, the query runs in it and sees what it sees; consume the
    iterator before committing or closing it. Outside one, each call reads on a connection of its
    own, closed when the iterator is exhausted or closed, and leaves ``session`` as it was: a
    long-lived session (a garbage collector's) sees on every call what has been committed since,
    never the snapshot of an earlier call that a REPEATABLE READ transaction (MariaDB's default)
    would keep, and holds no lock between calls (SQLite).

    Raises:
        ConfigurationError: ``attribute`` is not a :class:`StoredObjectRefType` column of ``model``.
        InvalidReferenceError: a row holds JSON that is not a reference.
    """
    column = _reference_attribute(model, attribute)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    statement = select(column).where(column.is_not(None)).execution_options(yield_per=batch_size)
    bind = session.get_bind(mapper=inspect(model))
    if session.in_transaction() or not isinstance(bind, Engine):
        # The caller's transaction, or a session bound to a connection (whose transaction is the
        # caller's too): read in it.
        yield from _present(session.scalars(statement))
        return
    with bind.connect() as connection:
        yield from _present(connection.scalars(statement))


def _present(refs: Iterable[StoredObjectRef | None]) -> Iterator[StoredObjectRef]:
    for ref in refs:
        if ref is not None:
            yield ref


def reference_column(model: type[Any], attribute: str | InstrumentedAttribute[Any]) -> Column[Any]:
    """The table column behind ``model``'s reference ``attribute`` (or :class:`StoredContent` field).

    For code that reads or writes the rows with SQLAlchemy Core, as the migrator does.

    Raises:
        ConfigurationError: ``attribute`` is not a :class:`StoredObjectRefType` column of ``model``.
    """
    expression = _reference_attribute(model, attribute).expression
    if not isinstance(expression, Column):
        raise ConfigurationError(f"{model.__name__}.{attribute} is not mapped to one table column")
    return expression


def _reference_attribute(
    model: type[Any], attribute: str | InstrumentedAttribute[Any]
) -> InstrumentedAttribute[Any]:
    column = getattr(model, attribute) if isinstance(attribute, str) else attribute
    if isinstance(column, StoredContent):  # a field's name stands for its reference attribute
        column = getattr(model, column.ref_attribute)
    column_type = getattr(getattr(column, "expression", None), "type", None)
    if not isinstance(column_type, StoredObjectRefType):
        raise ConfigurationError(
            f"{model.__name__}.{getattr(column, 'key', attribute)} is not a StoredObjectRefType column"
        )
    return column
