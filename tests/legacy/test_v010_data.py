"""Data written by granite-storage 0.1.0 works after the upgrade, with 0.1.0's configuration unchanged.

Each test runs on every configuration in ``v010/`` (local disk with and without ``key_prefix``; S3 with
the README's ``prefix="production"``, with ``key_prefix``, with neither; S3 on SeaweedFS and on moto),
and on the data 0.2.0 wrote under its first key layout, ``<prefix>/<model>/<entity id>/<field>/<token>``
(``v020/``, local disk with and without ``key_prefix``), which this release reads as just keys,
with the rows in SQLite and in PostgreSQL. The manager is built as 0.1.0's README builds it:
``StorageManager(backends=..., policies=...)``, and (where said) with ``StorageManager.from_config``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from granite_storage import (
    InvalidKeyError,
    InvalidReferenceError,
    ObjectNotFoundError,
    StorageManager,
    StoredObjectRef,
    iter_model_storage_refs,
)
from granite_storage.gc import StorageGarbageCollector

from .conftest import LegacyStore
from .models import Document, User

REFUSED = (InvalidKeyError, InvalidReferenceError)


def sha256(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def models_use(manager: StorageManager) -> Iterator[StorageManager]:
    """Configure ``manager`` on the seed's model for the duration (the README: "once at startup")."""
    Document.configure_storage_manager(manager)
    try:
        yield manager
    finally:
        del Document.__storage_manager__


def expected_rows(legacy: LegacyStore, table: str) -> dict[str, dict[str, Any] | None]:
    """The reference each row of ``table`` must hold (``None``: no content), by the row's id as text."""
    rows = legacy.data.expected["rows"][table]
    return {str(row["id"]): row["ref"] for row in rows}


def referenced(legacy: LegacyStore, storage_key: str | None = None) -> list[dict[str, Any]]:
    """Every object a row references (in the slot ``storage_key``, or in any)."""
    return [
        ref
        for table in ("document", "users")
        for ref in expected_rows(legacy, table).values()
        if ref is not None and storage_key in (None, ref["storage_key"])
    ]


def read_problems(
    manager: StorageManager,
    refs: Mapping[str, StoredObjectRef | None],
    expected: Mapping[str, Mapping[str, Any] | None],
) -> list[str]:
    """What differs from ``expected`` when reading each reference with ``get`` and ``open``."""
    problems = []
    for row_id, ref in refs.items():
        want = expected[row_id]
        try:
            if want is None or ref is None:
                assert (ref, want) == (None, None)
                continue
            assert ref.location == want["location"]
            assert ref.size == want["size"]
            assert sha256(manager.get(ref)) == want["sha256"]
            with manager.open(ref) as stream:
                assert sha256(stream.read()) == want["sha256"]
        except Exception as exc:  # collected, so that one failure does not hide the others
            problems.append(f"row {row_id}: {type(exc).__name__}: {exc}")
    return problems


@pytest.mark.parametrize("build", ["seed_calls", "from_config"])
def test_every_row_loads_and_every_object_reads(legacy: LegacyStore, database: Engine, build: str) -> None:
    manager = legacy.seed_manager() if build == "seed_calls" else legacy.configured_manager()
    with models_use(manager), Session(database) as session:
        documents = {str(doc.id): doc for doc in session.scalars(select(Document))}
        users = {str(user.id): user for user in session.scalars(select(User))}
        assert documents.keys() == expected_rows(legacy, "document").keys()
        assert users.keys() == expected_rows(legacy, "users").keys()

        problems = read_problems(
            manager, {key: doc._file_ref for key, doc in documents.items()}, expected_rows(legacy, "document")
        )
        problems += read_problems(
            manager, {key: user.avatar for key, user in users.items()}, expected_rows(legacy, "users")
        )
        for row_id, doc in documents.items():  # the model's own read calls
            want = expected_rows(legacy, "document")[row_id]
            try:
                if want is None:
                    assert doc.get_content() is None
                    assert doc.open_content() is None
                    continue
                assert sha256(doc.get_content()) == want["sha256"]
                stream = doc.open_content()
                assert stream is not None
                with stream:
                    assert sha256(stream.read()) == want["sha256"]
            except Exception as exc:
                problems.append(f"{doc.title}: {type(exc).__name__}: {exc}")
    assert problems == []


def test_replace_content_stores_the_new_object_in_the_slots_current_location(
    legacy: LegacyStore, database: Engine
) -> None:
    manager = legacy.seed_manager()
    current = manager.policy("documents")
    replaced: dict[str, tuple[StoredObjectRef, bytes]] = {}
    with models_use(manager):
        with Session(database) as session:
            for doc in session.scalars(select(Document)):
                if doc._file_ref is None:
                    continue
                old = manager.get(doc._file_ref)
                new = f"version 2 of {doc.title}".encode()
                result = doc.replace_content(new, filename="report-v2.pdf", content_type="application/pdf")
                assert result.previous_ref is not None
                assert sha256(manager.get(result.previous_ref)) == sha256(old)  # kept, as in 0.1.0
                assert result.new_ref.backend == current.backend_key
                assert manager.location_of(result.new_ref) == current.location
                replaced[str(doc.id)] = (result.previous_ref, new)
            session.commit()
        assert len(replaced) == len([ref for ref in expected_rows(legacy, "document").values() if ref])

        with Session(database) as session:
            for doc in session.scalars(select(Document)):
                if str(doc.id) in replaced:
                    previous, new = replaced[str(doc.id)]
                    assert doc.get_content() == new
                    assert doc._file_ref is not None
                    assert doc._file_ref.location.startswith(current.prefix + "/")
                    assert legacy.is_stored(previous.location)


def test_delete_removes_each_legacy_object_and_nothing_else(legacy: LegacyStore, database: Engine) -> None:
    manager = legacy.seed_manager()
    with Session(database) as session:
        avatars = [user.avatar for user in session.scalars(select(User)) if user.avatar is not None]
        documents = [doc._file_ref for doc in session.scalars(select(Document)) if doc._file_ref is not None]
    for ref in avatars:
        manager.delete(ref)
        assert not legacy.is_stored(ref.location)
        assert not manager.exists(ref)
        with pytest.raises(ObjectNotFoundError):
            manager.get(ref)
    by_location = {ref["location"]: ref for ref in referenced(legacy, "documents")}
    assert read_problems(manager, {ref.location: ref for ref in documents}, by_location) == []
    for ref in documents:
        manager.delete(ref)
        assert not legacy.is_stored(ref.location)
    for orphan in legacy.data.expected["orphans"]:  # no row references them: deleting rows left them
        assert legacy.is_stored(orphan["location"])


def test_iter_model_storage_refs_yields_every_legacy_reference(legacy: LegacyStore, database: Engine) -> None:
    with Session(database) as session:
        documents = list(iter_model_storage_refs(session, Document, "_file_ref"))
        avatars = list(iter_model_storage_refs(session, User, "avatar"))
    assert sorted(ref.location for ref in documents) == sorted(
        ref["location"] for ref in referenced(legacy, "documents")
    )
    assert sorted(ref.location for ref in avatars) == sorted(
        ref["location"] for ref in referenced(legacy, "avatars")
    )


def collector(manager: StorageManager, session: Session) -> StorageGarbageCollector:
    """The seed's collector, over the references of both models, without a grace period (every
    object the fixtures put in place is seconds old)."""
    return StorageGarbageCollector(
        manager=manager,
        iter_references=[
            lambda: iter_model_storage_refs(session, Document, "_file_ref"),
            lambda: iter_model_storage_refs(session, User, "avatar"),
        ],
        min_age=timedelta(0),
    )


@pytest.mark.parametrize("storage_key", ["documents", "avatars"])
def test_garbage_collection_never_deletes_a_referenced_legacy_object(
    legacy: LegacyStore, database: Engine, storage_key: str
) -> None:
    manager = legacy.seed_manager()
    with Session(database) as session:
        gc = collector(manager, session)
        dry = gc.collect(storage_key=storage_key, dry_run=True)
        assert dry.deleted == 0
        real = gc.collect(storage_key=storage_key, dry_run=False)
        assert real.failed == 0
        assert real.deleted == dry.orphaned
    for ref in referenced(legacy):  # of both slots: collecting one never touches the other
        assert legacy.is_stored(ref["location"]), ref


@pytest.mark.parametrize("previous_locations", [False, True])
def test_garbage_collection_deletes_0_1_0_orphans_only_inside_a_slots_own_key_prefix(
    legacy: LegacyStore, database: Engine, previous_locations: bool
) -> None:
    """With ``key_prefix`` the 0.1.0 objects lie in the slot's own namespace, and orphans there go;
    without it they lie in an area the slots shared in 0.1.0, which is never collected, not even
    when previous locations are. 0.2.0 gave every slot a namespace of its own: its orphans go."""
    manager = legacy.seed_manager()
    with Session(database) as session:
        gc = collector(manager, session)
        for storage_key in ("documents", "avatars"):
            gc.collect(storage_key=storage_key, dry_run=False, previous_locations=previous_locations)
    for orphan in legacy.data.expected["orphans"]:
        own_namespace = (
            legacy.data.release == "0.2.0" or legacy.data.key_prefix(orphan["storage_key"]) is not None
        )
        assert legacy.is_stored(orphan["location"]) is not own_namespace, orphan


def insert_raw_row(engine: Engine, table: str, row_id: Any, reference: dict[str, Any]) -> None:
    """Write a row the way a hand-written import or a tampered database would: raw JSON."""
    json_value = "CAST(:ref AS JSONB)" if engine.dialect.name == "postgresql" else ":ref"
    columns = {"document": ("id", "title", "_file_ref"), "users": ("id", "name", "avatar")}[table]
    with engine.begin() as connection:
        connection.execute(
            text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES (:id, :label, {json_value})"),
            {"id": row_id, "label": "forged", "ref": json.dumps(reference)},
        )


def v010_reference(legacy: LegacyStore, storage_key: str, location: str) -> dict[str, Any]:
    """A reference as 0.1.0 wrote it (the backend class's name, an empty checksum) naming ``location``."""
    backend = legacy.data.backend_options["type"]
    return {
        "storage_key": storage_key,
        "backend": backend,
        "location": location,
        "size": 6,
        "checksum": "",
        "content_type": None,
        "original_filename": None,
        "created_at": None,
        "extra": None,
    }


def test_a_forged_row_never_reaches_another_slots_objects(legacy: LegacyStore, database: Engine) -> None:
    manager = legacy.seed_manager()
    with models_use(manager), Session(database) as session:
        secret = Document(title="secret")
        session.add(secret)
        session.flush()
        secret.set_content(b"secret", filename="secret.pdf")  # in the documents slot's current prefix
        session.commit()
        secret_ref = secret._file_ref
        assert secret_ref is not None
        avatar = manager.put_bytes(
            storage_key="avatars", model_name="user", entity_id="7", field_name="avatar", content=b"avatar"
        )
    # Every object of the other slot that a forged row could name: 0.2.0's, and 0.1.0's where the
    # slot has a key_prefix of its own (without one, 0.1.0 gave the slots no namespaces to keep apart).
    targets = {"avatars": [secret_ref.location], "documents": [avatar.location]}
    for slot, other in (("avatars", "documents"), ("documents", "avatars")):
        if legacy.data.key_prefix(other) is not None:
            targets[slot] += [ref["location"] for ref in referenced(legacy, other)][:2]

    for number, location in enumerate(targets["avatars"], start=900):
        insert_raw_row(database, "users", number, v010_reference(legacy, "avatars", location))
    for number, location in enumerate(targets["documents"]):
        # SQLAlchemy keeps a UUID in SQLite as 32 hex digits; letters among them keep SQLite from
        # reading them as a number (the column's declared type UUID has numeric affinity).
        doc_id = uuid.UUID(f"f0f0f0f0-0000-4000-8000-{number:012d}")
        row_id = str(doc_id) if database.dialect.name == "postgresql" else doc_id.hex
        insert_raw_row(database, "document", row_id, v010_reference(legacy, "documents", location))

    with Session(database) as session:
        forged = [user.avatar for user in session.scalars(select(User).where(User.name == "forged"))]
        forged += [
            doc._file_ref for doc in session.scalars(select(Document).where(Document.title == "forged"))
        ]
    assert len(forged) == len(targets["avatars"]) + len(targets["documents"])
    for ref in forged:
        assert ref is not None
        with pytest.raises(REFUSED):
            manager.get(ref)
        with pytest.raises(REFUSED):
            manager.open(ref)
        with pytest.raises(REFUSED):
            manager.delete(ref)
        assert legacy.is_stored(ref.location)
    assert manager.get(secret_ref) == b"secret"
    assert manager.get(avatar) == b"avatar"
