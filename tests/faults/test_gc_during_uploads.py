"""Garbage collection while 200 uploads are in flight, on PostgreSQL, with the documented grace period.

200 threads each store a document's content through a tracked session (``track_storage``) and wait;
their objects are stored, their rows not yet committed. Meanwhile the collector runs with its default
grace period (``DEFAULT_MIN_AGE``, one hour, longer than any upload's time from store to commit, as its
documentation asks). Then the threads finish: three in four commit, one in four rolls back, while the
collector runs again and again. Old orphans (objects dated two hours back, no row) and old referenced
objects (committed rows, objects dated back likewise) are there from the start.

What holds: the collector deletes the old orphans and nothing else, none of the in-flight objects and
none that a committed row references; tracking deletes the rolled-back uploads; and the invariant: no
committed row points at a missing object, every object listed is complete. A dry run with
``min_age=0`` at the same moment counts the 200 in-flight objects as orphans: the grace period is what
keeps them.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granite_storage import (
    StorageGarbageCollector,
    StorageManager,
    StoredObjectRef,
    iter_model_storage_refs,
    track_storage,
)

from ..orm.models import Document
from .conftest import models_on
from .invariant import (
    assert_no_committed_row_points_at_a_missing_object,
    assert_only_complete_objects,
    digest,
)

IN_FLIGHT = 200
OLD_ORPHANS = 20
OLD_COMMITTED = 30
TWO_HOURS = 2 * 60 * 60


def content(number: int) -> bytes:
    return f"document {number}\n".encode() * 4096


@pytest.fixture
def postgres() -> Iterator[Engine]:
    with models_on("postgresql", pool_size=5, max_overflow=5) as engine:
        yield engine


def age(root: Path, ref: StoredObjectRef) -> None:
    """Date the object two hours back, as if stored then."""
    then = time.time() - TWO_HOURS
    os.utime(root / ref.location, (then, then))


class Upload(threading.Thread):
    """One document stored through a tracked session, committed (or rolled back) once ``go`` is set."""

    def __init__(self, number: int, sessions: sessionmaker[Session], go: threading.Event) -> None:
        super().__init__(name=f"upload-{number}")
        self.number, self.sessions, self.go = number, sessions, go
        self.stored = threading.Event()
        self.ref: StoredObjectRef | None = None
        self.committed = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.sessions() as session:
                doc = Document(id=uuid.uuid4(), title=f"in flight {self.number}")  # stored before any flush
                session.add(doc)
                self.ref = doc.set_content(content(self.number), filename="doc.txt")
                self.stored.set()
                assert self.go.wait(120)
                if self.number % 4 == 3:
                    session.rollback()
                else:
                    session.commit()
                    self.committed = True
        except BaseException as exc:
            self.error = exc
            self.stored.set()


@pytest.mark.faults
def test_the_collector_deletes_nothing_a_committed_row_references_while_200_uploads_are_in_flight(
    postgres: Engine, storage: StorageManager, storage_root: Path
) -> None:
    sessions = sessionmaker(postgres)
    track_storage(sessions)
    with Session(postgres) as session:
        old_committed = []
        for number in range(OLD_COMMITTED):
            doc = Document(id=uuid.uuid4(), title=f"old {number}")
            session.add(doc)
            old_committed.append(doc.set_content(content(-1 - number), filename="doc.txt"))
        session.commit()
    old_orphans = [
        storage.put_bytes(
            storage_key="documents",
            model_name="document",
            entity_id="-",
            field_name="file",
            content=content(-100),
        )
        for _ in range(OLD_ORPHANS)
    ]
    for ref in old_committed + old_orphans:
        age(storage_root, ref)

    def references() -> Iterator[StoredObjectRef]:
        with Session(postgres) as session:
            yield from iter_model_storage_refs(session, Document, "_file_ref")

    collector = StorageGarbageCollector(storage, references)  # the documented grace period
    go = threading.Event()
    uploads = [Upload(number, sessions, go) for number in range(IN_FLIGHT)]
    for upload in uploads:
        upload.start()
    for upload in uploads:
        assert upload.stored.wait(120)
    assert [upload.error for upload in uploads if upload.error] == []

    # All 200 stored, none committed: without a grace period every one of them is an orphan.
    assert collector.collect("documents", min_age=timedelta(0)).orphaned == IN_FLIGHT + OLD_ORPHANS

    deleted: list[str] = []
    runs = 0
    report = collector.collect("documents", dry_run=False)  # while all 200 are in flight
    deleted += report.orphan_sample
    runs += 1
    go.set()
    while any(upload.is_alive() for upload in uploads) or runs < 3:
        report = collector.collect("documents", dry_run=False)  # while they commit and roll back
        assert report.failed == 0
        deleted += report.orphan_sample
        runs += 1
    for upload in uploads:
        upload.join(120)
    assert [upload.error for upload in uploads if upload.error] == []

    assert sorted(deleted) == sorted(ref.location for ref in old_orphans)
    assert_no_committed_row_points_at_a_missing_object(postgres, storage)
    committed = [upload.ref for upload in uploads if upload.committed and upload.ref]
    rolled_back = [upload.ref for upload in uploads if not upload.committed and upload.ref]
    assert len(committed) == IN_FLIGHT * 3 // 4
    assert all(storage.verify(ref) for ref in committed + old_committed)
    assert not any(storage.exists(ref) for ref in rolled_back), "tracking deletes a rolled-back upload"
    listed = assert_only_complete_objects(
        storage.backend("local"), {digest(content(number)) for number in range(-OLD_COMMITTED, IN_FLIGHT)}
    )
    assert listed == len(committed) + OLD_COMMITTED
    print(
        f"GC during uploads: {IN_FLIGHT} uploads in flight, {runs} collections, {len(deleted)} old orphans "
        f"deleted, 0 referenced or in-flight objects deleted"
    )
