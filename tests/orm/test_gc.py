"""The garbage collector fed by real tables: the seed's API, several models, uploads in flight."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from granite_storage import (
    GarbageCollectionReport,
    StorageGarbageCollector,
    StorageManager,
    StoredObjectRef,
    iter_model_storage_refs,
    track_storage,
)
from granite_storage_local import LocalStorageBackend

from .models import Attachment, Document, User

pytestmark = pytest.mark.usefixtures("schema")

DAY = 24 * 3600


def make_old(backend: LocalStorageBackend, ref: StoredObjectRef, seconds: float = DAY) -> None:
    moment = time.time() - seconds
    os.utime(backend.root / ref.location, (moment, moment))


def orphan(
    manager: StorageManager, backend: LocalStorageBackend, storage_key: str = "documents"
) -> StoredObjectRef:
    """An old object no row points at: what a process killed between upload and commit leaves."""
    ref = manager.put_bytes(
        storage_key=storage_key, model_name="document", entity_id="lost", field_name="file", content=b"lost"
    )
    make_old(backend, ref)
    return ref


def add_document(engine: Engine, content: bytes) -> StoredObjectRef:
    with Session(engine) as session:
        doc = Document(title="kept")
        session.add(doc)
        session.flush()
        doc.set_content(content, filename="kept.pdf")
        session.commit()
        ref = doc._file_ref
    assert ref is not None
    return ref


def collect(engine: Engine, manager: StorageManager, **options: object) -> GarbageCollectionReport:
    """The seed's API, as written in its documentation."""
    with Session(engine) as session:
        gc = StorageGarbageCollector(
            manager=manager, iter_references=lambda: iter_model_storage_refs(session, Document, "_file_ref")
        )
        return gc.collect(storage_key="documents", **options)  # type: ignore[arg-type]


def test_the_seed_api_reports_then_deletes_orphans(
    engine: Engine, orm_manager: StorageManager, local_backend: LocalStorageBackend
) -> None:
    kept = add_document(engine, b"%PDF kept")
    make_old(local_backend, kept)
    lost = orphan(orm_manager, local_backend)

    report = collect(engine, orm_manager, dry_run=True)
    assert (report.scanned, report.orphaned, report.deleted) == (2, 1, 0)
    assert orm_manager.exists(lost)

    report = collect(engine, orm_manager, dry_run=False)
    assert (report.scanned, report.orphaned, report.deleted) == (2, 1, 1)
    assert not orm_manager.exists(lost)
    assert orm_manager.get(kept) == b"%PDF kept"


def test_references_from_several_models_and_fields_feed_one_collection(
    engine: Engine, orm_manager: StorageManager, local_backend: LocalStorageBackend
) -> None:
    by_document = add_document(engine, b"document")
    by_attachment = orphan(orm_manager, local_backend)  # stored in the documents slot...
    avatar = orphan(orm_manager, local_backend, "avatars")
    with Session(engine) as session:
        session.add(Attachment(file_ref=by_attachment))  # ...and referenced from another table
        session.add(User(name="u", avatar_ref=avatar))
        session.commit()
    make_old(local_backend, by_document)
    lost = orphan(orm_manager, local_backend)

    with Session(engine) as session:
        gc = StorageGarbageCollector(
            manager=orm_manager,
            iter_references=[
                lambda: iter_model_storage_refs(session, Document, "_file_ref"),
                lambda: iter_model_storage_refs(session, Attachment, Attachment.file_ref),
                lambda: iter_model_storage_refs(session, User, "avatar"),  # another slot: ignored here
            ],
        )
        report = gc.collect(storage_key="documents", dry_run=False)
        assert (report.references, report.ignored_references) == (2, 1)
        assert (report.referenced, report.deleted) == (2, 1)
        assert gc.collect(storage_key="avatars", dry_run=False).referenced == 1
    assert orm_manager.exists(by_document)
    assert orm_manager.exists(by_attachment)
    assert orm_manager.exists(avatar)
    assert not orm_manager.exists(lost)


class Uploads:
    """Threads storing documents through the ORM and committing each a while after its upload.

    Each upload waits, before its commit, until the first collection has run, so that collection
    certainly sees uploads whose rows are not committed yet. Even threads use a session with storage
    tracking, odd ones a plain session.
    """

    def __init__(self, engine: Engine, *, threads: int, per_thread: int, commit_delay: float) -> None:
        self.tracked = sessionmaker(engine)
        track_storage(self.tracked)
        self.plain = sessionmaker(engine)
        self.per_thread = per_thread
        self.commit_delay = commit_delay
        self.uploaded: list[StoredObjectRef] = []
        self.committed: list[StoredObjectRef] = []
        self.errors: list[BaseException] = []
        self.first_upload = threading.Event()
        self.first_collection_done = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, number: int) -> None:
        factory = self.tracked if number % 2 == 0 else self.plain
        try:
            for upload in range(self.per_thread):
                with factory() as session:
                    doc = Document(title=f"in flight {number}.{upload}")
                    session.add(doc)
                    session.flush()
                    doc.set_content(b"uploaded by %d" % number, filename="upload.pdf")
                    ref = doc._file_ref
                    assert ref is not None
                    with self._lock:
                        self.uploaded.append(ref)
                    self.first_upload.set()
                    self.first_collection_done.wait(timeout=30)
                    time.sleep(self.commit_delay)
                    session.commit()
                    with self._lock:
                        self.committed.append(ref)
        except BaseException as exc:
            self.errors.append(exc)
            self.first_upload.set()


def committed_refs(engine: Engine) -> list[StoredObjectRef]:
    with Session(engine) as session:
        return [ref for ref in session.scalars(select(Document._file_ref)) if ref is not None]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)
def test_collecting_while_uploads_are_in_flight_loses_nothing(
    engine: Engine, orm_manager: StorageManager, local_backend: LocalStorageBackend
) -> None:
    kept = add_document(engine, b"committed long ago")
    make_old(local_backend, kept)
    lost = orphan(orm_manager, local_backend)
    uploads = Uploads(engine, threads=4, per_thread=3, commit_delay=0.05)
    uploads.start()
    try:
        assert uploads.first_upload.wait(timeout=30)
        first = collect(engine, orm_manager, dry_run=False)  # the default grace period: one hour
    finally:
        uploads.first_collection_done.set()
    reports = [first]
    while uploads.running():
        reports.append(collect(engine, orm_manager, dry_run=False))
    uploads.join()
    assert uploads.errors == []

    assert first.skipped_too_young >= 1, "the first run saw no upload in flight"
    assert (first.deleted, sum(report.deleted for report in reports)) == (1, 1)  # the old orphan only
    assert not orm_manager.exists(lost)
    rows = committed_refs(engine)
    assert len(rows) == 1 + 4 * 3
    assert all(orm_manager.exists(ref) for ref in rows)
    assert all(orm_manager.exists(ref) for ref in uploads.uploaded)


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_without_a_grace_period_an_upload_not_yet_committed_is_collected(
    engine: Engine, orm_manager: StorageManager
) -> None:
    """Why the grace period exists: the same race with ``min_age=timedelta(0)`` loses the upload."""
    uploads = Uploads(engine, threads=1, per_thread=1, commit_delay=0)
    uploads.start()
    try:
        assert uploads.first_upload.wait(timeout=30)
        report = collect(engine, orm_manager, dry_run=False, min_age=timedelta(0))
    finally:
        uploads.first_collection_done.set()
    uploads.join()
    assert uploads.errors == []
    assert report.deleted == 1
    [row] = committed_refs(engine)
    assert not orm_manager.exists(row)
