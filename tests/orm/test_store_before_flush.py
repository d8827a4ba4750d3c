"""Storing before the first flush: a new row with a file costs one INSERT carrying its reference.

Statements are counted with SQLAlchemy's ``before_cursor_execute`` event on each database (SQLite,
PostgreSQL, MariaDB). With session tracking, an object stored for an instance in no session is
adopted by the session it joins, and deleted if that transaction rolls back.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from granite_storage import StoredObjectRef, track_storage

from ..conftest import files_under
from .models import Document, User

pytestmark = pytest.mark.usefixtures("schema")


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement sent on ``engine`` inside the block, its first word upper-cased, in order."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def writes(sent: list[str]) -> list[str]:
    return [word for word in sent if word in {"INSERT", "UPDATE", "DELETE"}]


@dataclass
class Upload:
    file: BinaryIO
    filename: str | None
    content_type: str | None


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(engine)
    track_storage(factory)
    return factory


def stored_ref(engine: Engine, doc_id: object) -> StoredObjectRef | None:
    with Session(engine) as session:
        return session.scalar(select(Document._file_ref).where(Document.id == doc_id))


# -- the natural flow: create, set content, add, commit ---------------------------------------------------


def test_a_new_row_with_a_file_costs_one_insert_and_no_update(engine: Engine) -> None:
    with Session(engine) as session:
        doc = Document(title="natural")
        ref = doc.set_content(b"%PDF-1.7", filename="a.pdf")
        session.add(doc)
        with statements(engine) as sent:
            session.commit()
        assert writes(sent) == ["INSERT"]
        doc_id = doc.id
    assert stored_ref(engine, doc_id) == ref
    with Session(engine) as session:
        loaded = session.get(Document, doc_id)
        assert loaded is not None
        assert loaded.get_content() == b"%PDF-1.7"


def test_a_pending_instance_stores_without_a_flush(engine: Engine) -> None:
    with Session(engine) as session:
        doc = Document(title="pending")
        session.add(doc)
        with statements(engine) as sent:
            ref = doc.set_content_from_stream(io.BytesIO(b"streamed"), filename="s.txt")
        assert sent == [], "storing content flushes nothing"
        with statements(engine) as sent:
            session.commit()
        assert writes(sent) == ["INSERT"]
        doc_id = doc.id
    assert stored_ref(engine, doc_id) == ref


def test_an_upload_and_a_replacement_on_a_new_instance_cost_one_insert(
    engine: Engine, storage_root: Path
) -> None:
    with Session(engine) as session:
        doc = Document(title="uploaded")
        first = asyncio.run(
            doc.set_content_from_uploadfile(Upload(io.BytesIO(b"one"), "a.txt", "text/plain"))
        )
        result = doc.replace_content(b"two", filename="b.txt")
        assert result.previous_ref == first
        session.add(doc)
        with statements(engine) as sent:
            session.commit()
        assert writes(sent) == ["INSERT"]
        doc_id = doc.id
    assert stored_ref(engine, doc_id) == result.new_ref
    assert sorted(files_under(storage_root)) == sorted([first.location, result.new_ref.location])


def test_several_file_fields_of_a_new_row_go_into_its_one_insert(engine: Engine) -> None:
    with Session(engine) as session:
        user = User(name="ada")
        user.avatar.set_content(b"avatar", filename="a.png")
        user.thumbnail.set_content(b"thumb", filename="t.png")
        session.add(user)
        with statements(engine) as sent:
            session.commit()
        assert writes(sent) == ["INSERT"]


def test_the_seed_flow_still_pays_its_insert_and_update(engine: Engine) -> None:
    with Session(engine) as session:
        doc = Document(title="seed")
        session.add(doc)
        with statements(engine) as sent:
            session.flush()
            ref = doc.set_content(b"seed", filename="s.txt")
            session.commit()
        assert writes(sent) == ["INSERT", "UPDATE"]
        doc_id = doc.id
    assert stored_ref(engine, doc_id) == ref


# -- with session tracking --------------------------------------------------------------------------------


def test_a_rollback_deletes_what_a_new_instance_stored_before_it_joined_the_session(
    sessions: sessionmaker[Session], storage_root: Path
) -> None:
    doc = Document(title="rolled back")
    ref = doc.set_content(b"lost", filename="l.txt")
    assert files_under(storage_root) == [ref.location]
    with sessions() as session:
        session.add(doc)
        session.flush()
        session.rollback()
    assert files_under(storage_root) == []


def test_a_commit_keeps_what_a_new_instance_stored_before_it_joined_the_session(
    sessions: sessionmaker[Session], engine: Engine, storage_root: Path
) -> None:
    doc = Document(title="kept")
    ref = doc.set_content(b"kept", filename="k.txt")
    with sessions() as session:
        session.add(doc)
        with statements(engine) as sent:
            session.commit()
        assert writes(sent) == ["INSERT"]
        doc_id = doc.id
    assert files_under(storage_root) == [ref.location]
    assert stored_ref(engine, doc_id) == ref


def test_an_exception_inside_begin_deletes_what_the_new_row_stored(
    sessions: sessionmaker[Session], storage_root: Path
) -> None:
    def request() -> None:
        with sessions.begin() as session:
            doc = Document(title="failed")
            doc.set_content(b"lost")
            session.add(doc)
            raise RuntimeError("request failed")

    with pytest.raises(RuntimeError, match="request failed"):
        request()
    assert files_under(storage_root) == []


def test_an_instance_that_never_joins_a_session_leaves_its_object_for_the_collector(
    sessions: sessionmaker[Session], storage_root: Path
) -> None:
    doc = Document(title="abandoned")
    ref = doc.set_content(b"orphan")
    with sessions() as session:
        session.rollback()
    assert files_under(storage_root) == [ref.location]
