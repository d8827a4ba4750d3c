"""Real databases for the SQLAlchemy integration: SQLite always, PostgreSQL and MariaDB when reachable.

The servers are found through ``GRANITE_TEST_POSTGRES_URL`` and ``GRANITE_TEST_MARIADB_URL`` (defaults:
the servers on this project's machines). A URL without a driver gets the one the project tests with
(psycopg, PyMySQL). Where a server cannot be reached the tests that need it skip, saying why;
``GRANITE_TEST_REQUIRE_DATABASES=1`` (set by CI) turns that skip into a failure.

Each test run works in a database of its own on each server (``granite_test_<pid>_<random>``), created
on first use and dropped at the end, so that runs in parallel (tox's environments, two checkouts) never
see each other's tables. Where the account may not create databases, the configured one is used.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from granite_storage import PluginHost, StorageBackend, StorageManager, StoragePolicy
from granite_storage.orm import configure_storage_manager, enable_sqlite_savepoints
from granite_storage_local import LocalStorageBackend

from .models import Base

DEFAULT_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
ENV_VARS = {"postgresql": "GRANITE_TEST_POSTGRES_URL", "mariadb": "GRANITE_TEST_MARIADB_URL"}
DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}


DATABASES = ["sqlite", "postgresql", "mariadb"]


def configured_url(name: str) -> URL:
    """The URL configured for server ``name`` (``postgresql`` or ``mariadb``), with a driver."""
    url = make_url(os.environ.get(ENV_VARS[name]) or DEFAULT_URLS[name])
    if "+" not in url.drivername:
        url = url.set(drivername=DRIVERS.get(url.drivername, url.drivername))
    return url


_SCRATCH: dict[str, URL] = {}  # server name: the URL of this run's database there
_CREATED: list[tuple[URL, str]] = []  # (a URL to administer the server with, a database to drop)
_UNREACHABLE: dict[str, Exception] = {}


def server_url(name: str) -> str:
    """The URL of this run's own database on server ``name``, created on first use.

    Raises whatever connecting raised when the server cannot be reached.
    """
    if name in _UNREACHABLE:
        raise _UNREACHABLE[name]
    if name not in _SCRATCH:
        try:
            _SCRATCH[name] = create_scratch_database(configured_url(name))
        except Exception as exc:  # any driver's connection error
            _UNREACHABLE[name] = exc
            raise
    return _SCRATCH[name].render_as_string(hide_password=False)


def create_scratch_database(url: URL) -> URL:
    """Create a database for this run next to the one ``url`` names; ``url`` itself if not allowed."""
    scratch = f"granite_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:  # a connection failure propagates: unreachable
            try:
                connection.exec_driver_sql(f"CREATE DATABASE {scratch}")
            except DBAPIError:
                return url  # not allowed to create databases: share the configured one
    finally:
        admin.dispose()
    _CREATED.append((url, scratch))
    return url.set(database=scratch)


@pytest.fixture(scope="session", autouse=True)
def _drop_scratch_databases() -> Iterator[None]:
    yield
    for url, scratch in _CREATED:
        force = " WITH (FORCE)" if url.get_backend_name() == "postgresql" else ""
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {scratch}{force}")
        finally:
            admin.dispose()


def sqlite_engine(path: Path, **kwargs: Any) -> Engine:
    """A SQLite engine on a file whose SAVEPOINTs work."""
    engine = create_engine(f"sqlite:///{path}", **kwargs)
    enable_sqlite_savepoints(engine)
    return engine


def unreachable(name: str, url: URL, exc: Exception) -> NoReturn:
    where = url.render_as_string(hide_password=True)
    reason = f"{name} is not reachable at {where} ({type(exc).__name__}: {exc}); set {ENV_VARS[name]}"
    if os.environ.get("GRANITE_TEST_REQUIRE_DATABASES") == "1":
        pytest.fail(f"GRANITE_TEST_REQUIRE_DATABASES=1 but {reason}")
    pytest.skip(reason)


def server_engine(name: str, **kwargs: Any) -> Engine:
    """An engine on this run's database on server ``name``; skip (fail in CI) if it is unreachable."""
    try:
        engine = create_engine(server_url(name), **kwargs)
        with engine.connect():
            pass
    except Exception as exc:  # any driver's connection error
        unreachable(name, configured_url(name), exc)
    return engine


@pytest.fixture(params=DATABASES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on each database in turn: SQLite (a file), PostgreSQL, MariaDB."""
    name: str = request.param
    engine = sqlite_engine(tmp_path / "test.db") if name == "sqlite" else server_engine(name)
    yield engine
    engine.dispose()


# -- storage and schema --------------------------------------------------------------------------------


@pytest.fixture
def orm_manager(local_backend: LocalStorageBackend, empty_host: PluginHost) -> StorageManager:
    """Slots on one local backend: ``documents`` (10 MiB, prefix ``docs``), ``avatars`` (2 MiB) and
    ``thumbnails``; replaced objects are kept (the default)."""
    return make_manager(local_backend, empty_host, delete_replaced=False)


def make_manager(
    backend: StorageBackend, plugins: PluginHost, *, delete_replaced: bool, key_layout: str = "fanout"
) -> StorageManager:
    """The test slots; ``key_layout`` applies to every slot."""
    mib = 1024 * 1024
    return StorageManager(
        backends={"local": backend},
        policies={
            "documents": StoragePolicy(
                "documents",
                backend_key="local",
                max_size=10 * mib,
                key_prefix="docs",
                delete_replaced=delete_replaced,
                key_layout=key_layout,
            ),
            "avatars": StoragePolicy(
                "avatars",
                backend_key="local",
                max_size=2 * mib,
                delete_replaced=delete_replaced,
                key_layout=key_layout,
            ),
            "thumbnails": StoragePolicy(
                "thumbnails", backend_key="local", delete_replaced=delete_replaced, key_layout=key_layout
            ),
        },
        plugins=plugins,
    )


@pytest.fixture
def entity_layout(
    schema: Engine, local_backend: LocalStorageBackend, empty_host: PluginHost
) -> StorageManager:
    """The test models store through slots with ``key_layout="entity"`` (keys holding the row's id)."""
    manager = make_manager(local_backend, empty_host, delete_replaced=False, key_layout="entity")
    configure_storage_manager(Base, manager)
    return manager


@pytest.fixture
def schema(engine: Engine, orm_manager: StorageManager) -> Iterator[Engine]:
    """The test models' tables, fresh, on ``engine``, with ``orm_manager`` configured on the models."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    configure_storage_manager(Base, orm_manager)
    try:
        yield engine
    finally:
        Base.metadata.drop_all(engine)
        del Base.__storage_manager__  # type: ignore[attr-defined]
