"""StoredObjectRefType: NULL for None, change detection, and rows written by granite-storage 0.1.0."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, bindparam, insert, select, text
from sqlalchemy.orm import Session

from granite_storage import (
    InvalidReferenceError,
    InvalidStoredObjectRef,
    StoredObjectRef,
    StoredObjectRefType,
)

from .models import Document

pytestmark = pytest.mark.usefixtures("schema")

# A reference exactly as granite-storage 0.1.0 wrote it into the JSON column.
SEED_ROW = {
    "storage_key": "documents",
    "backend": "local",
    "location": "docs/document/1/file_ref/0123456789abcdef0123456789abcdef.pdf",
    "size": 1234,
    "checksum": "sha256:" + "ab" * 32,
    "content_type": "application/pdf",
    "original_filename": "report.pdf",
    "created_at": "2025-06-01T12:30:00",
    "extra": {},
}


def sample_ref() -> StoredObjectRef:
    return StoredObjectRef(
        storage_key="documents",
        backend="local",
        location="docs/document/1/file_ref/00112233445566778899aabbccddeeff.txt",
        size=3,
        checksum="sha256:" + "0" * 64,
        content_type="text/plain",
        original_filename='Grüße "quoted".txt',
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        extra={"pages": 1},
    )


def insert_raw(engine: Engine, file_ref_json: str | None) -> uuid.UUID:
    """Insert a row as another program would, with the column's JSON text given verbatim."""
    doc_id = uuid.uuid4()
    statement = text("INSERT INTO document (id, title, _file_ref) VALUES (:id, 'raw', :file_ref)").bindparams(
        bindparam("id", type_=Document.__table__.c.id.type)
    )
    with engine.begin() as connection:
        connection.execute(statement, {"id": doc_id, "file_ref": file_ref_json})
    return doc_id


def test_a_reference_round_trips_through_the_database(engine: Engine) -> None:
    ref = sample_ref()
    with Session(engine) as session:
        doc = Document(title="t", _file_ref=ref)
        session.add(doc)
        session.commit()
        doc_id = doc.id
    with Session(engine) as session:
        loaded = session.get(Document, doc_id)
        assert loaded is not None
        assert loaded._file_ref == ref
        assert loaded._file_ref is not None
        assert loaded._file_ref.created_at == ref.created_at


def test_none_is_stored_as_sql_null_not_json_null(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Document(title="empty", _file_ref=None))
        session.commit()
        assert (
            session.execute(text("SELECT COUNT(*) FROM document WHERE _file_ref IS NULL")).scalar_one() == 1
        )


def test_reassignment_is_detected_and_flushed(engine: Engine) -> None:
    first, second = (
        sample_ref(),
        StoredObjectRef(storage_key="documents", backend="local", location="docs/x", size=1),
    )
    with Session(engine) as session:
        doc = Document(title="t", _file_ref=first)
        session.add(doc)
        session.commit()
        doc._file_ref = second
        assert doc in session.dirty
        session.commit()
        doc._file_ref = None
        session.commit()
        doc_id = doc.id
    with Session(engine) as session:
        stored = session.execute(select(Document._file_ref).where(Document.id == doc_id)).scalar_one()
        assert stored is None


def test_assigning_an_equal_reference_is_not_a_change(engine: Engine) -> None:
    with Session(engine) as session:
        doc = Document(title="t", _file_ref=sample_ref())
        session.add(doc)
        session.commit()
        assert doc._file_ref == sample_ref()  # loaded again after the commit expired it
        doc._file_ref = sample_ref()
        assert not session.is_modified(doc)


def test_rows_written_by_0_1_0_load(engine: Engine) -> None:
    doc_id = insert_raw(engine, json.dumps(SEED_ROW))
    with Session(engine) as session:
        loaded = session.get(Document, doc_id)
        assert loaded is not None
        ref = loaded._file_ref
        assert ref is not None
        assert ref.to_dict() | {"created_at": SEED_ROW["created_at"]} == SEED_ROW
        assert ref.created_at == datetime(2025, 6, 1, 12, 30, tzinfo=UTC)


def test_a_json_null_written_by_0_1_0_loads_as_none(engine: Engine) -> None:
    doc_id = insert_raw(engine, "null")
    with Session(engine) as session:
        loaded = session.get(Document, doc_id)
        assert loaded is not None
        assert loaded._file_ref is None


def test_a_row_that_is_not_a_reference_loads_as_one_that_raises_a_clear_error_when_used(
    engine: Engine,
) -> None:
    doc_id = insert_raw(engine, json.dumps({"location": "x"}))
    with Session(engine) as session:
        doc = session.get(Document, doc_id)
        assert doc is not None
        assert isinstance(doc._file_ref, InvalidStoredObjectRef)
        assert doc._file_ref.data == {"location": "x"}
        with pytest.raises(InvalidReferenceError, match="storage_key"):
            raise doc._file_ref.error


def test_binding_something_else_is_a_type_error(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Document(title="t", _file_ref={"storage_key": "documents"}))
        with pytest.raises(Exception, match="StoredObjectRef") as raised:
            session.flush()
        assert isinstance(raised.value.__cause__ or raised.value, TypeError)


def test_the_column_is_jsonb_on_postgresql_and_json_elsewhere(engine: Engine) -> None:
    expected = "JSONB" if engine.dialect.name == "postgresql" else "JSON"
    assert StoredObjectRefType().compile(dialect=engine.dialect) == expected
    assert StoredObjectRefType().python_type is StoredObjectRef


def test_insert_statements_take_references_too(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(insert(Document).values(id=uuid.uuid4(), title="core", _file_ref=sample_ref()))
    with Session(engine) as session:
        assert session.scalars(select(Document._file_ref)).one() == sample_ref()
