"""Storage that follows the transaction: rollbacks, SAVEPOINTs and deletes after commit, on every database.

Every test reads the files on disk and the rows in the database after the fact: a committed row must
always point at an object that exists, and an object must never outlive a rollback of the transaction
that stored it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, event, select
from sqlalchemy.orm import Session, load_only, sessionmaker

from granite_storage import (
    ObjectNotFoundError,
    StorageError,
    StorageManager,
    StoredObjectRef,
    hookimpl,
    track_storage,
)
from granite_storage.orm import register_stored_object
from granite_storage_local import LocalStorageBackend

from ..conftest import files_under
from .conftest import make_manager
from .models import Attachment, Base, Document, User

pytestmark = pytest.mark.usefixtures("schema")


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory with storage tracking installed."""
    factory = sessionmaker(engine)
    track_storage(factory)
    return factory


@pytest.fixture
def deleting(local_backend: LocalStorageBackend, orm_manager: StorageManager) -> StorageManager:
    """The models' manager, with ``delete_replaced`` on for every slot."""
    manager = make_manager(local_backend, orm_manager.plugins, delete_replaced=True)
    Base.__storage_manager__ = manager
    return manager


def new_document(session: Session, title: str = "doc") -> Document:
    doc = Document(title=title)
    session.add(doc)
    session.flush()
    return doc


def committed_document_id(sessions: sessionmaker[Session]) -> uuid.UUID:
    """A document without content, committed; its id."""
    with sessions() as setup:
        seed_id: uuid.UUID = new_document(setup, "seed").id
        setup.commit()
    return seed_id


def committed_refs(engine: Engine) -> list[StoredObjectRef]:
    """Every reference the database holds, read in a session of its own."""
    with Session(engine) as session:
        refs = [
            *session.scalars(select(Document._file_ref)),
            *session.scalars(select(User.avatar_ref)),
            *session.scalars(select(Attachment.file_ref)),
        ]
    return [ref for ref in refs if ref is not None]


def assert_storage_matches_database(engine: Engine, storage_root: Path) -> None:
    """The objects on disk are exactly those the committed rows point at."""
    assert files_under(storage_root) == sorted(ref.location for ref in committed_refs(engine))


# -- rollbacks --------------------------------------------------------------------------------------


def test_a_rollback_deletes_what_the_transaction_stored(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    with sessions() as session:
        doc = new_document(session)
        ref = doc.set_content(b"never committed")
        assert files_under(storage_root) == [ref.location]
        session.rollback()
    assert files_under(storage_root) == []
    assert committed_refs(engine) == []


def test_closing_a_session_without_commit_deletes_what_it_stored(
    sessions: sessionmaker[Session], storage_root: Path
) -> None:
    with sessions() as session:
        new_document(session).set_content(b"abandoned")
    assert files_under(storage_root) == []


def test_a_failed_commit_deletes_what_the_transaction_stored(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    with sessions() as session:
        existing = new_document(session, "first")
        session.commit()
        existing_id = existing.id

    with sessions() as session:
        doc = new_document(session)
        doc.set_content(b"stored before the failing flush")
        session.add(Document(id=existing_id, title="duplicate primary key"))
        with pytest.raises(Exception, match=r"(?i)duplicate|unique"):
            session.commit()
        session.rollback()
    assert files_under(storage_root) == []


def test_an_exception_before_the_commit_deletes_what_the_transaction_stored(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    def unit_of_work() -> None:
        with sessions.begin() as session:  # commits at the end of the block, unless it raises
            new_document(session).set_content(b"stored before the exception")
            raise LookupError("the block fails before its COMMIT is sent")

    with pytest.raises(LookupError):
        unit_of_work()
    assert files_under(storage_root) == []
    assert committed_refs(engine) == []


def test_a_commit_keeps_what_the_transaction_stored(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    with sessions() as session:
        new_document(session).set_content(b"kept")
        session.commit()
    assert_storage_matches_database(engine, storage_root)
    assert len(files_under(storage_root)) == 1


def test_a_rollback_of_a_later_transaction_keeps_what_an_earlier_one_committed(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    with sessions() as session:
        doc = new_document(session)
        doc.set_content(b"committed")
        session.commit()
        doc.set_content(b"rolled back")
        session.rollback()
        assert doc.get_content() == b"committed"
    assert_storage_matches_database(engine, storage_root)


# -- SAVEPOINTs -------------------------------------------------------------------------------------


def test_a_savepoint_rollback_deletes_only_what_the_savepoint_stored(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    with sessions() as session:
        outer = new_document(session, "outer")
        outer_ref = outer.set_content(b"outer")
        savepoint = session.begin_nested()
        new_document(session, "inner").set_content(b"inner")
        outer.set_content(b"outer, replaced inside the savepoint")
        savepoint.rollback()
        assert files_under(storage_root) == [outer_ref.location]
        session.commit()
    assert committed_refs(engine) == [outer_ref]
    assert_storage_matches_database(engine, storage_root)


def test_a_released_savepoint_hands_its_objects_to_the_outer_transaction(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    with sessions() as session:
        with session.begin_nested():
            new_document(session).set_content(b"stored in a savepoint")
        assert len(files_under(storage_root)) == 1
        session.rollback()  # the outer transaction rolls back: the released savepoint goes with it
    assert files_under(storage_root) == []
    assert committed_refs(engine) == []


def test_a_released_savepoint_inside_a_committed_transaction_keeps_its_objects(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    with sessions() as session:
        with session.begin_nested():
            new_document(session).set_content(b"stored in a savepoint")
        session.commit()
    assert len(committed_refs(engine)) == 1
    assert_storage_matches_database(engine, storage_root)


def test_nested_savepoints_roll_back_exactly_their_own_objects(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    with sessions() as session:
        first = new_document(session, "level 0")
        first.set_content(b"0")
        level1 = session.begin_nested()
        new_document(session, "level 1").set_content(b"1")
        level2 = session.begin_nested()
        new_document(session, "level 2").set_content(b"2")
        level2.rollback()
        assert len(files_under(storage_root)) == 2
        level1.commit()
        level3 = session.begin_nested()
        new_document(session, "level 3").set_content(b"3")
        level3.rollback()
        session.commit()
    with Session(engine) as session:
        titles = sorted(session.scalars(select(Document.title)))
    assert titles == ["level 0", "level 1"]
    assert_storage_matches_database(engine, storage_root)


def test_every_committed_row_points_at_an_object_after_savepoint_rollbacks(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        doc.set_content(b"v1")
        session.commit()
        for attempt in range(3):
            savepoint = session.begin_nested()
            doc.replace_content(f"attempt {attempt}".encode())
            session.flush()
            savepoint.rollback()
        session.commit()
        assert doc.get_content() == b"v1"
    assert_storage_matches_database(engine, storage_root)
    manager = deleting
    for ref in committed_refs(engine):
        assert manager.get(ref) == b"v1"


# -- deleting what the database no longer points at ------------------------------------------------


def test_a_replaced_object_is_deleted_after_commit_never_before(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        old = doc.set_content(b"old")
        session.commit()
        new = doc.replace_content(b"new").new_ref
        session.flush()
        assert deleting.exists(old), "deleted before the commit"
        session.commit()
        assert not deleting.exists(old)
        assert deleting.get(new) == b"new"
    assert_storage_matches_database(engine, storage_root)


def test_a_rollback_keeps_the_replaced_object(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        old = doc.set_content(b"old")
        session.commit()
        doc.replace_content(b"new")
        session.flush()
        session.rollback()
        assert doc.get_content() == b"old"
        assert deleting.exists(old)
    assert_storage_matches_database(engine, storage_root)


def test_a_cleared_reference_deletes_its_object_after_commit(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        ref = doc.set_content(b"x")
        session.commit()
        doc.clear_content_reference()
        session.commit()
        assert not deleting.exists(ref)
    assert files_under(storage_root) == []


def test_deleting_the_row_deletes_its_objects_after_commit(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        user = User(name="ada")
        session.add(user)
        session.flush()
        user.avatar.set_content(b"a")
        user.thumbnail.set_content(b"t")
        session.commit()
        assert len(files_under(storage_root)) == 2
        session.delete(user)
        session.flush()
        assert len(files_under(storage_root)) == 2
        session.commit()
    assert files_under(storage_root) == []


def test_deleting_an_expired_row_still_finds_its_objects(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        doc.set_content(b"x")
        session.commit()  # expires doc: its reference is no longer loaded
        session.delete(doc)
        session.commit()
    assert files_under(storage_root) == []


def test_assigning_to_an_expired_reference_releases_the_old_object(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        doc.set_content(b"x")
        session.commit()
        doc._file_ref = None  # plain assignment, not through the mixin, on an expired instance
        session.commit()
    assert files_under(storage_root) == []


def test_assigning_to_a_deferred_reference_releases_the_old_object(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        new_document(session).set_content(b"x")
        session.commit()
    with sessions() as session:
        doc = session.scalars(select(Document).options(load_only(Document.title))).one()
        doc._file_ref = None  # the old reference was never loaded
        session.commit()
    assert files_under(storage_root) == []


def test_storing_into_a_row_just_inserted_queries_no_previous_reference(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    statements: list[str] = []

    def record(connection: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    with sessions() as session:
        doc = new_document(session)  # inserted with NULL: SQLAlchemy knows there is nothing to release
        event.listen(engine, "before_cursor_execute", record)
        try:
            doc.set_content(b"x")
            session.commit()
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert [s.split()[0] for s in statements] == ["UPDATE"]
    assert_storage_matches_database(engine, storage_root)


def test_an_exception_in_a_savepoint_block_deletes_what_the_block_stored(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    with sessions() as session:
        kept = new_document(session, "kept")
        kept.set_content(b"kept")
        try:
            with session.begin_nested():
                new_document(session, "lost").set_content(b"lost")
                raise LookupError("the block fails")
        except LookupError:
            pass
        session.commit()
    assert [ref.location for ref in committed_refs(engine)] == files_under(storage_root)
    assert len(files_under(storage_root)) == 1


def test_a_savepoint_rollback_keeps_an_object_replaced_inside_it(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        old = doc.set_content(b"old")
        session.commit()
        savepoint = session.begin_nested()
        doc.replace_content(b"new")
        savepoint.rollback()
        session.commit()
        assert deleting.get(old) == b"old"
    assert_storage_matches_database(engine, storage_root)


def test_an_object_moved_to_another_row_is_not_deleted(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        ref = doc.set_content(b"moved")
        session.commit()
        attachment = Attachment(document_id=doc.id, file_ref=doc._file_ref)
        session.add(attachment)
        doc._file_ref = None
        session.commit()
        assert deleting.exists(ref)
    assert_storage_matches_database(engine, storage_root)


def test_without_delete_replaced_replaced_objects_are_kept(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, orm_manager: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        old = doc.set_content(b"old")
        session.commit()
        doc.replace_content(b"new")
        session.commit()
        assert orm_manager.exists(old)


def test_a_call_can_ask_to_delete_the_previous_object(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, orm_manager: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        old = doc.set_content(b"old")
        session.commit()
        doc.replace_content(b"new", delete_previous=True)
        assert orm_manager.exists(old)
        session.commit()
        assert not orm_manager.exists(old)
        cleared = doc.content_ref
        assert cleared is not None
        doc.clear_content_reference(delete=True)
        session.commit()
        assert not orm_manager.exists(cleared)
    assert files_under(storage_root) == []


def test_a_call_can_keep_the_previous_object_against_its_policy(
    engine: Engine, sessions: sessionmaker[Session], deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        old = doc.set_content(b"old")
        session.commit()
        doc.replace_content(b"new", delete_previous=False)
        session.commit()
        assert deleting.exists(old)


def test_asking_to_delete_without_tracking_is_refused_and_changes_nothing(engine: Engine) -> None:
    with Session(engine) as session:  # not tracked
        doc = new_document(session)
        ref = doc.set_content(b"x")
        with pytest.raises(StorageError, match="track_storage"):
            doc.clear_content_reference(delete=True)
        assert doc._file_ref == ref


# -- cleanup failures -------------------------------------------------------------------------------


class Reporter:
    def __init__(self) -> None:
        self.reports: list[tuple[StoredObjectRef, Exception, str]] = []

    @hookimpl
    def granite_storage_cleanup_failed(self, ref: StoredObjectRef, error: Exception, reason: str) -> None:
        self.reports.append((ref, error, reason))


class Broken:
    @hookimpl
    def granite_storage_cleanup_failed(self, ref: StoredObjectRef) -> None:
        raise RuntimeError("a reporter that fails must not reach the commit")


@pytest.fixture
def reporter(orm_manager: StorageManager) -> Iterator[Reporter]:
    reporter = Reporter()
    names = [orm_manager.plugins.register(Broken()), orm_manager.plugins.register(reporter)]
    try:
        yield reporter
    finally:
        for name in names:
            orm_manager.plugins.unregister(name)


@pytest.fixture
def failing_deletes(monkeypatch: pytest.MonkeyPatch, local_backend: LocalStorageBackend) -> None:
    def refuse(key: str) -> None:
        raise PermissionError(13, "Permission denied", key)

    monkeypatch.setattr(local_backend, "delete", refuse)


@pytest.mark.usefixtures("failing_deletes")
def test_a_failed_cleanup_after_commit_keeps_the_commit_and_is_reported(
    engine: Engine,
    sessions: sessionmaker[Session],
    deleting: StorageManager,
    reporter: Reporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with sessions() as session:
        doc = new_document(session)
        old = doc.set_content(b"old")
        session.commit()
        new = doc.replace_content(b"new").new_ref
        with caplog.at_level(logging.WARNING, logger="granite_storage.orm.tracking"):
            session.commit()  # does not raise
    assert committed_refs(engine) == [new]
    assert [(ref, reason) for ref, _, reason in reporter.reports] == [(old, "replaced")]
    assert isinstance(reporter.reports[0][1], PermissionError)
    assert "stays in storage" in caplog.text


@pytest.mark.usefixtures("failing_deletes")
def test_a_failed_cleanup_after_rollback_does_not_raise_and_is_reported(
    sessions: sessionmaker[Session], orm_manager: StorageManager, reporter: Reporter
) -> None:
    with sessions() as session:
        ref = new_document(session).set_content(b"x")
        session.rollback()  # does not raise
    assert [(r, reason) for r, _, reason in reporter.reports] == [(ref, "rollback")]


# -- what tracking covers -------------------------------------------------------------------------


def test_without_tracking_nothing_is_deleted_implicitly(
    engine: Engine, storage_root: Path, deleting: StorageManager
) -> None:
    with Session(engine) as session:
        doc = new_document(session)
        doc.set_content(b"a")
        session.rollback()
    with Session(engine) as session:
        doc = new_document(session)
        doc.set_content(b"b")
        session.commit()
        doc.replace_content(b"c")
        session.commit()
    assert len(files_under(storage_root)) == 3


def test_tracking_can_be_installed_on_one_session(engine: Engine, storage_root: Path) -> None:
    with Session(engine) as session:
        new_document(session)  # the transaction has begun before tracking is installed
        track_storage(session)
        track_storage(session)  # twice is harmless
        new_document(session).set_content(b"x")
        session.rollback()
    assert files_under(storage_root) == []


def test_tracking_can_be_installed_on_a_session_class(engine: Engine, storage_root: Path) -> None:
    class TrackedSession(Session):
        pass

    track_storage(TrackedSession)
    with TrackedSession(engine) as session:
        new_document(session).set_content(b"x")
        session.rollback()
    assert files_under(storage_root) == []


def test_objects_stored_through_the_manager_can_be_registered(
    engine: Engine, sessions: sessionmaker[Session], orm_manager: StorageManager, storage_root: Path
) -> None:
    with sessions() as session:
        ref = orm_manager.put_bytes(
            storage_key="documents", model_name="attachment", entity_id="1", field_name="file", content=b"x"
        )
        assert register_stored_object(session, ref, manager=orm_manager) is True
        session.add(Attachment(file_ref=ref))
        session.rollback()
    assert files_under(storage_root) == []
    with Session(engine) as untracked:
        assert register_stored_object(untracked, ref, manager=orm_manager) is False


def test_bulk_statements_are_invisible_to_tracking(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        new_document(session).set_content(b"x")
        session.commit()
        session.execute(delete(Document))
        session.commit()
    # The row is gone, the object is not: the garbage collector is the backstop for this.
    assert len(files_under(storage_root)) == 1
    assert committed_refs(engine) == []


def test_track_storage_refuses_other_targets() -> None:
    with pytest.raises(TypeError, match="sessionmaker"):
        track_storage("session")  # type: ignore[arg-type]


# -- found in review: the edges of "never a row without its object" --------------------------------


@pytest.mark.parametrize("mode", ["create_savepoint", "rollback_only"])
def test_a_session_inside_an_outer_transaction_waits_for_its_rollback(
    engine: Engine, storage_root: Path, deleting: StorageManager, mode: str
) -> None:
    with Session(engine) as setup:
        seed = new_document(setup, "seed")
        seed_ref = seed.set_content(b"seed")
        setup.commit()
        seed_id = seed.id

    with engine.connect() as connection:
        outer = connection.begin()  # the test-fixture pattern: the test owns the transaction
        factory = sessionmaker(bind=connection, join_transaction_mode=mode)
        track_storage(factory)
        with factory() as session:
            doc = session.get(Document, seed_id)
            assert doc is not None
            test_ref = doc.set_content(b"written by the test")
            session.commit()  # commits nothing for real: the outer transaction is still open
            assert deleting.exists(seed_ref)
        outer.rollback()

    assert committed_refs(engine) == [seed_ref]
    assert deleting.get(seed_ref) == b"seed"
    assert not deleting.exists(test_ref)
    assert_storage_matches_database(engine, storage_root)


@pytest.mark.parametrize("then", ["the connection closes", "the connection begins again"])
def test_a_session_inside_an_outer_transaction_acts_once_its_commit_succeeded(
    engine: Engine, storage_root: Path, deleting: StorageManager, then: str
) -> None:
    with Session(engine) as setup:
        seed = new_document(setup, "seed")
        seed_ref = seed.set_content(b"seed")
        setup.commit()
        seed_id = seed.id

    with engine.connect() as connection:
        outer = connection.begin()
        factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
        track_storage(factory)
        with factory() as session:
            doc = session.get(Document, seed_id)
            assert doc is not None
            new_ref = doc.set_content(b"new")
            session.commit()
        assert deleting.exists(seed_ref)
        outer.commit()  # SQLAlchemy announces it before sending it: nothing can be deleted yet
        if then == "the connection begins again":
            with connection.begin():
                assert not deleting.exists(seed_ref)

    assert committed_refs(engine) == [new_ref]
    assert not deleting.exists(seed_ref)
    assert_storage_matches_database(engine, storage_root)


@pytest.mark.parametrize("move", ["merge", "expunge and add"])
def test_an_instance_flushed_by_another_session_takes_its_object_along(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager, move: str
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("two sessions writing at once: SQLite locks the database file")
    with sessions() as setup:
        new_document(setup, "seed").set_content(b"seed")
        setup.commit()

    first = sessions()
    doc = first.scalars(select(Document)).one()
    moved_ref = doc.set_content(b"stored in the first session")
    with sessions() as second:
        if move == "merge":
            second.merge(doc)
        else:
            first.expunge(doc)
            second.add(doc)
        second.commit()
    first.rollback()
    first.close()

    assert committed_refs(engine) == [moved_ref]
    assert_storage_matches_database(engine, storage_root)


# -- ownership across sessions: the object follows the instance and its reference -----------------


@pytest.mark.parametrize("ending", ["rollback", "close"])
@pytest.mark.parametrize("move", ["expunge and add", "merge"])
def test_an_instance_moved_to_another_session_keeps_its_object_when_the_first_session_ends_first(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, move: str, ending: str
) -> None:
    seed_id = committed_document_id(sessions)

    first = sessions()
    doc = first.get(Document, seed_id)
    assert doc is not None
    moved_ref = doc.set_content(b"stored in the first session")
    first.expunge(doc)
    second = sessions()
    if move == "merge":
        second.merge(doc)  # the second session's own copy now points at the object
    else:
        second.add(doc)
    if ending == "rollback":
        first.rollback()
    first.close()  # the first session ends before the second one flushes
    second.commit()
    second.close()

    assert committed_refs(engine) == [moved_ref]
    assert_storage_matches_database(engine, storage_root)


def test_an_object_is_kept_while_another_session_may_still_commit_a_row_pointing_at_it(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path
) -> None:
    seed_id = committed_document_id(sessions)

    first = sessions()
    doc = first.get(Document, seed_id)
    assert doc is not None
    ref = doc.set_content(b"pointed at from two sessions")
    with sessions() as second:
        second.merge(doc)  # a copy: doc itself stays in the first session
        second.flush()
        second.rollback()  # the first session may still commit its row
    first.commit()
    first.close()

    assert committed_refs(engine) == [ref]
    assert_storage_matches_database(engine, storage_root)


def test_an_object_stored_for_an_instance_in_no_session_belongs_to_the_session_it_joins(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, orm_manager: StorageManager
) -> None:
    rolled_back = Document(id=uuid.uuid4(), title="added, then rolled back")
    lost = rolled_back.set_content(b"stored before the instance joined a session")
    with sessions() as session:
        session.add(rolled_back)
        session.rollback()
    assert not orm_manager.exists(lost)

    committed = Document(id=uuid.uuid4(), title="added, then committed")
    kept = committed.set_content(b"kept")
    with sessions() as session:
        session.add(committed)
        session.commit()
    assert committed_refs(engine) == [kept]
    assert_storage_matches_database(engine, storage_root)


@pytest.mark.parametrize("how", ["rolled back, then added again", "expunged, then its session rolled back"])
def test_a_row_is_never_written_pointing_at_an_object_a_rollback_deleted(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, orm_manager: StorageManager, how: str
) -> None:
    seed_id = committed_document_id(sessions)

    with sessions() as first:
        doc = new_document(first) if how == "rolled back, then added again" else first.get(Document, seed_id)
        assert doc is not None
        deleted = doc.set_content(b"stored, then rolled back")
        if how == "expunged, then its session rolled back":
            first.expunge(doc)
        first.rollback()
    assert doc._file_ref == deleted, "SQLAlchemy keeps the attribute of a transient or detached instance"
    assert not orm_manager.exists(deleted)

    with sessions() as second:
        second.add(doc)
        with pytest.raises(ObjectNotFoundError, match="store the content again"):
            second.flush()
        second.rollback()
        second.add(doc)
        stored_again = doc.set_content(b"stored again")
        second.commit()
    assert stored_again in committed_refs(engine)
    assert_storage_matches_database(engine, storage_root)


def test_replacing_twice_in_one_transaction_deletes_both_replaced_objects(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        doc.set_content(b"v0")
        session.commit()
        doc.set_content(b"v1")
        session.flush()
        doc.set_content(b"v2")
        session.commit()
        assert doc.get_content() == b"v2"
    assert_storage_matches_database(engine, storage_root)
    assert len(files_under(storage_root)) == 1


def test_a_delete_orphan_cascade_deletes_the_childs_object_after_commit(
    engine: Engine, sessions: sessionmaker[Session], storage_root: Path, deleting: StorageManager
) -> None:
    with sessions() as session:
        doc = new_document(session)
        ref = deleting.put_bytes(
            storage_key="documents", model_name="attachment", entity_id="1", field_name="file", content=b"x"
        )
        doc.attachments.append(Attachment(file_ref=ref))
        session.commit()
        doc.attachments[0].file_ref  # noqa: B018 - loaded, as a page showing it would have
        doc.attachments.clear()
        session.commit()
        assert not deleting.exists(ref)
    assert files_under(storage_root) == []


def test_delete_previous_without_tracking_is_refused_before_anything_is_stored(
    engine: Engine, storage_root: Path
) -> None:
    with Session(engine) as session:  # not tracked
        doc = new_document(session)
        ref = doc.set_content(b"x")
        with pytest.raises(StorageError, match="track_storage"):
            doc.set_content(b"y", delete_previous=True)
        with pytest.raises(StorageError, match="track_storage"):
            doc.replace_content(b"y", delete_previous=True)
        assert doc._file_ref == ref
    assert files_under(storage_root) == [ref.location]


def test_a_cleanup_that_fails_unexpectedly_still_does_not_reach_the_commit(
    engine: Engine,
    sessions: sessionmaker[Session],
    deleting: StorageManager,
    reporter: Reporter,
    monkeypatch: pytest.MonkeyPatch,
    local_backend: LocalStorageBackend,
) -> None:
    def broken(key: str) -> None:
        raise RuntimeError("a backend bug")

    with sessions() as session:
        doc = new_document(session)
        old = doc.set_content(b"old")
        session.commit()
        monkeypatch.setattr(local_backend, "delete", broken)
        new = doc.replace_content(b"new").new_ref
        session.commit()
    assert committed_refs(engine) == [new]
    assert [(ref, reason) for ref, _, reason in reporter.reports] == [(old, "replaced")]


def test_enable_sqlite_savepoints_refuses_other_databases_and_may_be_called_twice(engine: Engine) -> None:
    from granite_storage.orm import enable_sqlite_savepoints

    if engine.dialect.name != "sqlite":
        with pytest.raises(ValueError, match="SQLite"):
            enable_sqlite_savepoints(engine)
        return
    enable_sqlite_savepoints(engine)  # the fixture's engine has it already: nothing changes
    with engine.connect() as connection:
        outer = connection.begin()
        connection.exec_driver_sql("SELECT COUNT(*) FROM user_account")  # left alone, sqlite3 begins nothing
        savepoint = connection.begin_nested()
        connection.exec_driver_sql("INSERT INTO user_account (name) VALUES ('released')")
        savepoint.commit()
        outer.rollback()  # with the driver managing transactions, the release would have committed
        assert connection.exec_driver_sql("SELECT COUNT(*) FROM user_account").scalar_one() == 0
