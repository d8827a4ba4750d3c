"""SAVEPOINTs that work on SQLite, which session tracking relies on."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["enable_sqlite_savepoints"]

_ENABLED: weakref.WeakSet[Engine] = weakref.WeakSet()


def enable_sqlite_savepoints(engine: Engine | AsyncEngine) -> None:
    """Make SAVEPOINTs exact on a SQLite engine (``sqlite``, or ``sqlite+aiosqlite``'s sync core).

    Python's sqlite3 driver begins and commits transactions on its own, so a released SAVEPOINT can
    commit for real and a later rollback of the enclosing transaction then undoes nothing in the
    database, while session tracking deletes the objects it believes rolled back. This installs
    SQLAlchemy's documented remedy, two engine events: the driver stops managing transactions, and
    SQLAlchemy emits ``BEGIN`` itself. Call it once, right after creating the engine; calling it
    again is harmless. PostgreSQL and MariaDB need nothing of the kind.

    Raises:
        ValueError: ``engine`` is not a SQLite engine.
    """
    sync_engine = engine if isinstance(engine, Engine) else engine.sync_engine
    if sync_engine.dialect.name != "sqlite":
        raise ValueError(f"enable_sqlite_savepoints() is for SQLite engines, got {sync_engine.dialect.name}")
    if sync_engine in _ENABLED:
        return
    event.listen(sync_engine, "connect", _driver_leaves_transactions_alone)
    event.listen(sync_engine, "begin", _emit_begin)
    _ENABLED.add(sync_engine)


def _driver_leaves_transactions_alone(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None


def _emit_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")
