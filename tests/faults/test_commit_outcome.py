"""COMMIT dropped on the database's wire: tracking deletes only after a certain rollback.

A :class:`~tests.faults.proxy.FaultProxy` sits between the library and the database server
(PostgreSQL and MariaDB). In the main scenario, 20 trials on each, it forwards the COMMIT, waits for
the server's answer, swallows it and drops the connection: the server committed, the client sees its
connection fail in the middle of ``commit()``. After each trial the invariant of the fault suite is
checked, *no committed row points at a missing object*, by reading the rows on a connection of its own
and looking each object up in storage. The other scenarios withhold the COMMIT from the server (the
garbage collector removes what was kept), lose the connection before the COMMIT (a certain rollback:
deleted), and drop the COMMIT of an outer transaction that a tracked session joined.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from granite_storage import (
    StorageGarbageCollector,
    StorageManager,
    StoredObjectRef,
    iter_model_storage_refs,
    track_storage,
)

from ..orm.conftest import configured_url
from ..orm.models import Document
from .conftest import models_on
from .invariant import assert_no_committed_row_points_at_a_missing_object, committed_refs
from .proxy import MARIADB_COMMIT, POSTGRES_COMMIT, FaultProxy

TRIALS = 20
COMMIT = {"postgresql": POSTGRES_COMMIT, "mariadb": MARIADB_COMMIT}
DEFAULT_PORTS = {"postgresql": 5432, "mariadb": 3306}
# Plain TCP through the proxy, so that it can read the protocol (the local servers trust 127.0.0.1).
PLAINTEXT = {"postgresql": {"sslmode": "disable", "gssencmode": "disable"}, "mariadb": {}}


@pytest.fixture(params=["postgresql", "mariadb"])
def database(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def direct(database: str) -> Iterator[Engine]:
    """The server itself, with the test models' tables: for setting up and for checking."""
    with models_on(database) as engine:
        yield engine


@pytest.fixture
def proxy(database: str) -> Iterator[FaultProxy]:
    url = configured_url(database)
    with FaultProxy(url.host or "127.0.0.1", url.port or DEFAULT_PORTS[database]) as proxy:
        yield proxy


@pytest.fixture
def proxied(database: str, direct: Engine, proxy: FaultProxy) -> Iterator[Engine]:
    """The same database through the proxy; a new connection for every session."""
    url: URL = direct.url.set(host=proxy.host, port=proxy.port)
    url = url.update_query_dict(PLAINTEXT[database])
    engine = create_engine(url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(proxied: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(proxied)
    track_storage(factory)
    return factory


def committed_document(engine: Engine, title: str, content: bytes) -> tuple[uuid.UUID, StoredObjectRef]:
    """A document with content, committed without the proxy."""
    with Session(engine) as session:
        doc = Document(title=title)
        session.add(doc)
        session.flush()
        ref = doc.set_content(content)
        session.commit()
        return doc.id, ref


def replace_and_fail_to_commit(sessions: sessionmaker[Session], doc_id: uuid.UUID) -> StoredObjectRef:
    """Replace a document's content in a tracked session whose commit fails, then roll back."""
    with sessions() as session:
        doc = session.get(Document, doc_id)
        assert doc is not None
        new = doc.replace_content(b"new").new_ref
        with pytest.raises(OperationalError):
            session.commit()
        session.rollback()
    return new


def end_by_rollback(session: Session) -> None:
    session.rollback()
    session.close()


def end_by_close(session: Session) -> None:
    session.close()


ENDINGS: list[Callable[[Session], None]] = [end_by_rollback, end_by_close]


def test_a_commit_whose_answer_is_lost_deletes_nothing(
    database: str,
    direct: Engine,
    proxy: FaultProxy,
    sessions: sessionmaker[Session],
    storage: StorageManager,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for trial in range(TRIALS):
        doc_id, old = committed_document(direct, f"trial {trial}", b"old")
        fault = proxy.drop_after(COMMIT[database], await_reply=True)
        session = sessions()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="granite_storage.orm.tracking"):
            try:
                doc = session.get(Document, doc_id)
                assert doc is not None
                new = doc.replace_content(b"new").new_ref
                extra = Document(title=f"extra {trial}")
                session.add(extra)
                session.flush()
                extra_ref = extra.set_content(b"extra")
                with pytest.raises(OperationalError):
                    session.commit()
            finally:
                ENDINGS[trial % len(ENDINGS)](session)

        assert fault.fired.is_set()
        rows = committed_refs(direct)
        assert rows[doc_id] == new, "the server did not commit: the trial tested nothing"
        assert extra_ref in rows.values()
        assert_no_committed_row_points_at_a_missing_object(direct, storage)
        assert storage.exists(old), "replaced, but the commit's outcome was unknown: kept"
        assert new.location in caplog.text
        assert extra_ref.location in caplog.text


def test_a_commit_that_never_reached_the_server_leaves_its_objects_to_the_garbage_collector(
    database: str,
    direct: Engine,
    proxy: FaultProxy,
    sessions: sessionmaker[Session],
    storage: StorageManager,
) -> None:
    doc_id, old = committed_document(direct, "kept", b"old")
    fault = proxy.drop_after(COMMIT[database], forward=False)
    new = replace_and_fail_to_commit(sessions, doc_id)
    assert fault.fired.is_set()
    assert committed_refs(direct) == {doc_id: old}  # the server rolled back
    assert storage.exists(new)  # the client could not know: kept

    with Session(direct) as session:
        collector = StorageGarbageCollector(
            manager=storage, iter_references=lambda: iter_model_storage_refs(session, Document, "_file_ref")
        )
        report = collector.collect("documents", dry_run=False, min_age=timedelta(0))
    assert report.deleted == 1
    assert not storage.exists(new)
    assert storage.exists(old)


def test_a_connection_lost_before_the_commit_is_a_certain_rollback(
    database: str,
    direct: Engine,
    proxy: FaultProxy,
    sessions: sessionmaker[Session],
    storage: StorageManager,
) -> None:
    doc_id, old = committed_document(direct, "kept", b"old")
    fault = proxy.drop_after(b"UPDATE document SET", forward=False)  # the flush loses the connection
    new = replace_and_fail_to_commit(sessions, doc_id)
    assert fault.fired.is_set()
    assert committed_refs(direct) == {doc_id: old}
    assert not storage.exists(new)
    assert storage.exists(old)


def test_a_session_inside_an_outer_transaction_deletes_nothing_when_the_outer_commit_is_lost(
    database: str,
    direct: Engine,
    proxy: FaultProxy,
    proxied: Engine,
    storage: StorageManager,
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc_id, old = committed_document(direct, "outer", b"old")
    fault = proxy.drop_after(COMMIT[database], await_reply=True)
    with proxied.connect() as connection:
        outer = connection.begin()  # the transaction is the connection's, not the session's
        factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
        track_storage(factory)
        with factory() as session:
            doc = session.get(Document, doc_id)
            assert doc is not None
            new = doc.replace_content(b"new").new_ref
            session.commit()  # only a SAVEPOINT: the decisions wait for the connection's COMMIT
        with (
            caplog.at_level(logging.WARNING, logger="granite_storage.orm.tracking"),
            pytest.raises(OperationalError),
        ):
            outer.commit()
    assert fault.fired.is_set()
    assert committed_refs(direct) == {doc_id: new}
    assert_no_committed_row_points_at_a_missing_object(direct, storage)
    assert storage.exists(old), "replaced, but the COMMIT's outcome was unknown: kept"
    assert old.location in caplog.text
