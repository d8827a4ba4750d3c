"""Fixtures of the fault-injection suite: the SQLAlchemy test models on real databases.

The databases are those of the SQLAlchemy integration tests (``tests/orm/conftest.py``): this run's
own database on each server, created on first use and dropped at the end of the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from granite_storage import PluginHost, StorageManager
from granite_storage.orm import configure_storage_manager
from granite_storage_local import LocalStorageBackend

# The session-wide fixture that drops this run's databases, for the tests of this directory too.
from ..orm.conftest import _drop_scratch_databases, make_manager, server_engine
from ..orm.models import Base

__all__ = ["_drop_scratch_databases"]


@contextlib.contextmanager
def models_on(database: str, **engine_options: Any) -> Iterator[Engine]:
    """An engine on ``database`` (``"postgresql"``, ``"mariadb"``) with the test models' tables."""
    engine = server_engine(database, **engine_options)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    try:
        yield engine
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


@pytest.fixture
def storage(local_backend: LocalStorageBackend, empty_host: PluginHost) -> Iterator[StorageManager]:
    """The models' manager; replaced objects are deleted after commit (``delete_replaced``)."""
    manager = make_manager(local_backend, empty_host, delete_replaced=True)
    configure_storage_manager(Base, manager)
    try:
        yield manager
    finally:
        del Base.__storage_manager__  # type: ignore[attr-defined]
