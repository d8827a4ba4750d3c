"""Rows earlier releases (or other programs) wrote: tolerated where harmless, refused row by row where not."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from granite_storage import (
    InvalidReferenceError,
    InvalidStoredObjectRef,
    PluginHost,
    StorageGarbageCollector,
    StorageLocation,
    StorageManager,
    StoragePolicy,
    UnverifiableReferenceError,
    configure_storage_manager,
    iter_model_storage_refs,
    track_storage,
)
from granite_storage_local import LocalStorageBackend

from .models import Document
from .test_types import insert_raw

pytestmark = pytest.mark.usefixtures("schema")

CONTENT = b"%PDF-1.4 written by 0.1.0"
DAY = 24 * 3600


def row_0_1_0(location: str, **changes: object) -> dict[str, object]:
    """A reference as granite-storage 0.1.0 wrote it, with the values 0.1.0 accepted."""
    return {
        "storage_key": "documents",
        "backend": "local",
        "location": location,
        "size": len(CONTENT),
        "checksum": "sha256:" + hashlib.sha256(CONTENT).hexdigest(),
        "content_type": "application/pdf",
        "original_filename": "report.pdf",
        "created_at": "2025-06-01T12:30:00",
        "extra": None,
        **changes,
    }


@pytest.fixture
def legacy_manager(tmp_path: Path, empty_host: PluginHost) -> Iterator[StorageManager]:
    """The seed's configuration for Document's slot: ``documents`` without key_prefix, on local disk."""
    manager = StorageManager(
        backends={"local": LocalStorageBackend(tmp_path / "legacy")},
        policies={"documents": StoragePolicy("documents", backend_key="local", max_size=10 * 1024 * 1024)},
        plugins=empty_host,
    )
    configure_storage_manager(Document, manager)
    yield manager
    del Document.__storage_manager__


def stored_0_1_0(manager: StorageManager, key: str) -> None:
    backend = manager.backend("local")
    assert isinstance(backend, LocalStorageBackend)
    backend.put(key, io.BytesIO(CONTENT))
    moment = time.time() - DAY
    os.utime(backend.root / key, (moment, moment))


#: Hostile values: each must fail with InvalidReferenceError for its own row only.
HOSTILE = {
    "dot-dot location": json.dumps(row_0_1_0("document/../../etc/passwd")),
    "created_at out of range": json.dumps(
        row_0_1_0("document/9-1a2b3c4d.pdf", created_at="0001-01-01T00:00:00+01:00")
    ),
    "lone surrogate": json.dumps(row_0_1_0("document/8-1a2b3c4d.pdf", original_filename="\ud800.pdf")),
    "not an object": json.dumps(["document/7-1a2b3c4d.pdf"]),
    "no size": json.dumps({k: v for k, v in row_0_1_0("document/6-1a2b3c4d.pdf").items() if k != "size"}),
}


def can_hold(engine: Engine, case: str) -> bool:
    """PostgreSQL's jsonb and MariaDB's JSON check refuse a lone surrogate: only SQLite can hold one."""
    return case != "lone surrogate" or engine.dialect.name == "sqlite"


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_row_fails_alone_and_the_others_of_the_table_load_and_read(
    engine: Engine, legacy_manager: StorageManager, case: str
) -> None:
    if not can_hold(engine, case):
        with pytest.raises(DBAPIError):  # the server itself refuses: no such row can exist there
            insert_raw(engine, HOSTILE[case])
        return
    stored_0_1_0(legacy_manager, "document/1-1a2b3c4d.pdf")
    good = insert_raw(engine, json.dumps(row_0_1_0("document/1-1a2b3c4d.pdf")))
    bad = insert_raw(engine, HOSTILE[case])
    with Session(engine) as session:
        documents = {doc.id: doc for doc in session.scalars(select(Document))}
        assert documents[good].get_content() == CONTENT
        unreadable = documents[bad]._file_ref
        assert isinstance(unreadable, InvalidStoredObjectRef)
        for operation in (
            legacy_manager.get,
            legacy_manager.open,
            legacy_manager.stat,
            legacy_manager.exists,
            legacy_manager.delete,
            legacy_manager.verify,
            legacy_manager.location_of,
        ):
            with pytest.raises(InvalidReferenceError, match="cannot be used"):
                operation(unreadable)
        with pytest.raises(InvalidReferenceError):
            documents[bad].get_content()
        refs = list(iter_model_storage_refs(session, Document, "_file_ref"))
    assert len(refs) == 2
    assert sum(isinstance(ref, InvalidStoredObjectRef) for ref in refs) == 1


def test_an_unreadable_reference_is_never_written_back(
    engine: Engine, legacy_manager: StorageManager
) -> None:
    bad = insert_raw(engine, HOSTILE["created_at out of range"])
    with Session(engine) as session:
        doc = session.get(Document, bad)
        assert doc is not None
        assert isinstance(doc._file_ref, InvalidStoredObjectRef)
        other = Document(title="copy", _file_ref=doc._file_ref)
        session.add(other)
        with pytest.raises(Exception, match="cannot be used") as raised:
            session.flush()
        assert isinstance(raised.value.__cause__ or raised.value, InvalidReferenceError)


def test_a_row_can_be_repaired_by_assigning_a_new_reference(
    engine: Engine, legacy_manager: StorageManager
) -> None:
    bad = insert_raw(engine, HOSTILE["dot-dot location"])
    with Session(engine) as session:
        doc = session.get(Document, bad)
        assert doc is not None
        doc.set_content(b"fresh")
        session.commit()
    with Session(engine) as session:
        doc = session.get(Document, bad)
        assert doc is not None
        assert doc.get_content() == b"fresh"


@pytest.mark.parametrize(
    "changes",
    [
        {"checksum": ""},
        {"checksum": "md5:" + hashlib.md5(CONTENT).hexdigest()},
        {"checksum": None},
        {"created_at": None},
        {"extra": {"bucket": "b", "anything": [1, {"x": None}]}},
        {"unknown": "key", "another": {"nested": True}},
    ],
    ids=["empty checksum", "md5 checksum", "null checksum", "null created_at", "extra", "unknown keys"],
)
def test_a_0_1_0_row_loads_and_reads_whatever_its_checksum_extra_or_unknown_keys_hold(
    engine: Engine, legacy_manager: StorageManager, changes: dict[str, object]
) -> None:
    stored_0_1_0(legacy_manager, "document/1-1a2b3c4d.pdf")
    doc_id = insert_raw(engine, json.dumps(row_0_1_0("document/1-1a2b3c4d.pdf", **changes)))
    with Session(engine) as session:
        doc = session.get(Document, doc_id)
        assert doc is not None
        ref = doc._file_ref
        assert ref is not None
        assert not isinstance(ref, InvalidStoredObjectRef)
        assert doc.get_content() == CONTENT
        if ref.sha256 is None:
            with pytest.raises(UnverifiableReferenceError, match="cannot verify"):
                legacy_manager.verify(ref)
        else:
            assert legacy_manager.verify(ref)


def test_a_0_1_0_object_is_replaced_into_the_current_location_and_deleted_after_commit(
    engine: Engine, legacy_manager: StorageManager
) -> None:
    key = "document/1-1a2b3c4d.pdf"
    stored_0_1_0(legacy_manager, key)
    doc_id = insert_raw(engine, json.dumps(row_0_1_0(key, checksum="")))
    root = Path(legacy_manager.backend("local").root)  # type: ignore[attr-defined]
    with Session(engine) as session:
        track_storage(session)
        doc = session.get(Document, doc_id)
        assert doc is not None
        result = doc.replace_content(b"replaced", filename="new.pdf", delete_previous=True)
        assert result.previous_ref is not None
        assert result.previous_ref.location == key
        assert legacy_manager.location_of(result.new_ref) == legacy_manager.policy("documents").location
        assert (root / key).exists()  # not before the commit
        session.commit()
    assert not (root / key).exists()
    with Session(engine) as session:
        doc = session.get(Document, doc_id)
        assert doc is not None
        assert doc.get_content() == b"replaced"
        assert doc._file_ref is not None
        assert doc._file_ref.location.startswith("documents/document/")


def test_collection_keeps_referenced_0_1_0_objects_and_what_an_unreadable_row_names(
    engine: Engine, legacy_manager: StorageManager
) -> None:
    # The slot's own prefix is "documents"; 0.1.0's area "document/" is never listed, and an
    # orphan of the slot's namespace next to rows of every kind is still found.
    for key in ("document/1-1a2b3c4d.pdf", "document/9-1a2b3c4d.pdf", "document/2-1a2b3c4d.pdf"):
        stored_0_1_0(legacy_manager, key)
    insert_raw(engine, json.dumps(row_0_1_0("document/1-1a2b3c4d.pdf", checksum="")))
    hostile = [case for case in HOSTILE if can_hold(engine, case)]
    for case in hostile:
        insert_raw(engine, HOSTILE[case])
    orphan = legacy_manager.put_bytes(
        storage_key="documents", model_name="document", entity_id="x", field_name="file", content=b"lost"
    )
    named = legacy_manager.put_bytes(
        storage_key="documents", model_name="document", entity_id="y", field_name="file", content=b"named"
    )
    insert_raw(engine, json.dumps(row_0_1_0(named.location, created_at="0001-01-01T00:00:00+01:00")))
    root = Path(legacy_manager.backend("local").root)  # type: ignore[attr-defined]
    for ref in (orphan, named):
        moment = time.time() - DAY
        os.utime(root / ref.location, (moment, moment))
    with Session(engine) as session:
        gc = StorageGarbageCollector(
            manager=legacy_manager,
            iter_references=lambda: iter_model_storage_refs(session, Document, "_file_ref"),
            min_age=timedelta(hours=1),
        )
        report = gc.collect("documents", dry_run=False, previous_locations=True)
    assert report.locations == (StorageLocation("local", "documents"),)
    assert report.invalid_references == len(hostile) + 1
    assert (report.scanned, report.referenced, report.deleted) == (2, 1, 1)
    assert not (root / orphan.location).exists()
    assert (root / named.location).read_bytes() == b"named"
    for key in ("document/1-1a2b3c4d.pdf", "document/9-1a2b3c4d.pdf", "document/2-1a2b3c4d.pdf"):
        assert (root / key).exists()
