"""Moving a slot between backends (:mod:`granite_storage.migrate`) on real databases and real storage.

Local disk, SeaweedFS (started by the S3 plugin tests' own launcher) and SQLite, PostgreSQL and MariaDB
(``engine``). A killed run is a real subprocess killed with SIGKILL at chosen points, then run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, MetaData, String, Table, Uuid, delete, insert, select, update
from sqlalchemy.orm import Session

from granite_storage import (
    PluginHost,
    StorageBackend,
    StorageLocation,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
)
from granite_storage.migrate import StorageMigrator, migration_key
from granite_storage.orm import configure_storage_manager, portable_storage_ref_type
from granite_storage.streams import Readable
from granite_storage_local import LocalStorageBackend

from .models import Base, Document

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


# -- servers and set-up ---------------------------------------------------------------------------------


def _s3_launcher() -> Any:
    """The SeaweedFS launcher the S3 plugin ships for tests (:mod:`granite_storage_s3.testing`)."""
    return pytest.importorskip("granite_storage_s3.testing", reason="the S3 plugin is not installed")


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A SeaweedFS server with a bucket of its own, for this module."""
    launcher = _s3_launcher()
    with launcher.seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        client = server.client()
        client.create_bucket(Bucket=server.bucket)
        try:
            yield server
        finally:
            launcher.empty_bucket(client, server.bucket)
            client.delete_bucket(Bucket=server.bucket)


@pytest.fixture
def bucket(seaweedfs: Any) -> StorageBackend:
    """An S3 backend on SeaweedFS under a fresh prefix."""
    backend: StorageBackend = seaweedfs.backend()
    return backend


@pytest.fixture
def tables(engine: Engine) -> Iterator[Engine]:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    try:
        yield engine
    finally:
        Base.metadata.drop_all(engine)
        with contextlib.suppress(AttributeError):
            del Base.__storage_manager__  # type: ignore[attr-defined]


def manager_on(backend: StorageBackend, name: str = "old") -> StorageManager:
    return StorageManager(
        backends={name: backend},
        policies={"documents": StoragePolicy("documents", backend_key=name)},
        plugins=PluginHost(strict=False, disabled=()),
    )


def moved_manager(old: StorageBackend, new: StorageBackend, **policy: Any) -> StorageManager:
    """The slot moved from backend ``old`` to ``new``, with ``old`` listed as its previous location."""
    return StorageManager(
        backends={"old": old, "new": new},
        policies={
            "documents": StoragePolicy(
                "documents", backend_key="new", previous_locations=[StorageLocation("old")], **policy
            )
        },
        plugins=PluginHost(strict=False, disabled=()),
    )


def store_documents(engine: Engine, manager: StorageManager, contents: list[bytes]) -> list[uuid.UUID]:
    """One Document row per content, stored through the model as an application does."""
    configure_storage_manager(Base, manager)
    ids = []
    with Session(engine) as session:
        for index, content in enumerate(contents):
            document = Document(title=f"doc {index}")
            session.add(document)
            session.flush()
            document.set_content(content, filename=f"file-{index}.pdf", content_type="application/pdf")
            ids.append(document.id)
        session.commit()
    return ids


def references(engine: Engine) -> dict[uuid.UUID, StoredObjectRef]:
    with Session(engine) as session:
        return {
            row.id: row._file_ref for row in session.scalars(select(Document)) if row._file_ref is not None
        }


def migrator(manager: StorageManager, engine: Engine, **options: Any) -> StorageMigrator:
    return StorageMigrator(manager=manager, engine=engine, columns=[(Document, "_file_ref")], **options)


def assert_every_row_reads(manager: StorageManager, engine: Engine, contents: dict[uuid.UUID, bytes]) -> None:
    refs = references(engine)
    assert set(refs) == set(contents)
    for row_id, ref in refs.items():
        assert manager.get(ref) == contents[row_id]
        assert manager.verify(ref)


def keys(backend: StorageBackend) -> set[str]:
    return {info.key for info in backend.list()}


def new_backend(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> StorageBackend:
    """The slot's new backend: local disk, or S3 on SeaweedFS under a fresh prefix."""
    if kind == "s3":
        backend: StorageBackend = request.getfixturevalue("bucket")
        return backend
    return LocalStorageBackend(tmp_path / "new")


def recorded(monkeypatch: pytest.MonkeyPatch, backend: StorageBackend, method: str) -> list[str]:
    """The keys passed to ``backend.<method>`` from now on (``stat`` is a HEAD request on S3)."""
    calls: list[str] = []
    original = getattr(backend, method)

    def recording(key: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(key)
        return original(key, *args, **kwargs)

    monkeypatch.setattr(backend, method, recording)
    return calls


# -- the target key ---------------------------------------------------------------------------------------


def test_a_key_inside_the_slots_prefix_is_kept_as_it_is() -> None:
    policy = StoragePolicy("documents", backend_key="new")
    key = "documents/document/7/file/9f1c.pdf"
    assert migration_key(policy, StorageLocation("old", "documents"), key) == key


def test_a_key_of_another_layout_goes_under_the_slots_prefix() -> None:
    policy = StoragePolicy("documents", backend_key="files", key_prefix="docs")
    legacy = "document/0b5e-1a2b3c4d.pdf"
    assert migration_key(policy, StorageLocation("files", "document"), legacy) == f"docs/{legacy}"


def test_a_key_too_long_under_the_prefix_becomes_a_digest_of_its_source_inside_the_prefix() -> None:
    policy = StoragePolicy("documents", backend_key="new", key_prefix="p" * 200)
    location = "/".join(["s" * 200] * 5) + "/x.PDF"
    key = migration_key(policy, StorageLocation("old", "s" * 200), location)
    assert key.startswith("p" * 200 + "/migrated/")
    assert key.endswith(".pdf")
    assert key == migration_key(policy, StorageLocation("old", "s" * 200), location)
    assert key != migration_key(policy, StorageLocation("other", "s" * 200), location)


# -- moving -----------------------------------------------------------------------------------------------


def test_a_dry_run_reports_what_would_move_and_changes_nothing(tables: Engine, tmp_path: Path) -> None:
    old, new = LocalStorageBackend(tmp_path / "old"), LocalStorageBackend(tmp_path / "new")
    store_documents(tables, manager_on(old), [b"one", b"three"])
    before = references(tables)

    report = migrator(moved_manager(old, new), tables).migrate("documents")

    assert report.dry_run
    assert (report.references, report.moved, report.bytes_copied, report.failed) == (2, 2, 8, 0)
    assert (report.copied, report.sources_deleted) == (0, 0)
    assert references(tables) == before
    assert keys(new) == set()


def test_objects_move_from_local_disk_to_s3_and_the_sources_go_after_the_commit(
    tables: Engine, tmp_path: Path, bucket: StorageBackend
) -> None:
    disk = LocalStorageBackend(tmp_path / "disk")
    contents = [os.urandom(size) for size in (0, 1, 4096, 9 * MIB)]  # 9 MiB: a multipart upload
    ids = store_documents(tables, manager_on(disk), contents)
    manager = moved_manager(disk, bucket)

    report = migrator(manager, tables, workers=3).migrate("documents", dry_run=False, delete_source=True)

    assert (report.moved, report.copied, report.failed, report.changed) == (4, 4, 0, 0)
    assert report.bytes_copied == sum(map(len, contents))
    assert report.sources_deleted == 4
    assert report.ok
    assert_every_row_reads(manager, tables, dict(zip(ids, contents, strict=True)))
    refs = references(tables)
    assert {ref.backend for ref in refs.values()} == {"new"}
    assert keys(bucket) == {ref.location for ref in refs.values()}
    assert keys(disk) == set()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)
def test_objects_move_from_s3_back_to_local_disk(
    tables: Engine, tmp_path: Path, bucket: StorageBackend
) -> None:
    disk = LocalStorageBackend(tmp_path / "disk")
    contents = [b"from the bucket", os.urandom(6 * MIB)]
    ids = store_documents(tables, manager_on(bucket), contents)
    manager = moved_manager(bucket, disk)

    report = migrator(manager, tables).migrate("documents", dry_run=False)

    assert (report.moved, report.failed) == (2, 0)
    assert_every_row_reads(manager, tables, dict(zip(ids, contents, strict=True)))
    assert {ref.location for ref in references(tables).values()} == keys(disk)
    assert len(keys(bucket)) == 2  # without delete_source the sources stay


def test_a_second_run_finds_nothing_to_do(tables: Engine, tmp_path: Path) -> None:
    old, new = LocalStorageBackend(tmp_path / "old"), LocalStorageBackend(tmp_path / "new")
    store_documents(tables, manager_on(old), [b"a", b"b"])
    manager = moved_manager(old, new)
    migrator(manager, tables).migrate("documents", dry_run=False)
    after_first = references(tables)

    report = migrator(manager, tables).migrate("documents", dry_run=False)

    assert (report.references, report.skipped, report.moved, report.copied) == (2, 2, 0, 0)
    assert references(tables) == after_first


def test_a_copy_left_by_an_interrupted_run_is_verified_and_reused(tables: Engine, tmp_path: Path) -> None:
    old, new = LocalStorageBackend(tmp_path / "old"), LocalStorageBackend(tmp_path / "new")
    [row_id] = store_documents(tables, manager_on(old), [b"copied before the kill"])
    manager = moved_manager(old, new)
    ref = references(tables)[row_id]
    target = migration_key(manager.policy("documents"), manager.location_of(ref), ref.location)
    with old.open(ref.location) as source:
        new.put(target, source)  # what a run killed before its commit leaves

    report = migrator(manager, tables).migrate("documents", dry_run=False)

    assert (report.moved, report.copied, report.reused) == (1, 0, 1)
    assert references(tables)[row_id].location == target


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_copy_left_by_an_earlier_run_is_found_by_the_listing_and_only_it_is_looked_up(
    tables: Engine, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    old, new = LocalStorageBackend(tmp_path / "old"), new_backend(kind, tmp_path, request)
    contents = [b"copied before the kill", b"not copied yet", b"nor this one"]
    ids = store_documents(tables, manager_on(old), contents)
    manager = moved_manager(old, new)
    ref = references(tables)[ids[0]]
    earlier = migration_key(manager.policy("documents"), manager.location_of(ref), ref.location)
    with old.open(ref.location) as source:
        new.put(earlier, source)
    looked_up = recorded(monkeypatch, new, "stat")

    report = migrator(manager, tables).migrate("documents", dry_run=False)

    assert (report.moved, report.copied, report.reused) == (3, 2, 1)
    assert looked_up == [earlier]  # one listing; no lookup for a key it did not name
    assert_every_row_reads(manager, tables, dict(zip(ids, contents, strict=True)))


def test_rows_of_two_batches_sharing_an_object_get_one_copy_written_once(
    tables: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = LocalStorageBackend(tmp_path / "old"), LocalStorageBackend(tmp_path / "new")
    first, second = store_documents(tables, manager_on(old), [b"shared", b"replaced below"])
    shared = references(tables)[first]
    with tables.begin() as connection:  # e.g. a row duplicated by the application
        connection.execute(update(Document).where(Document.id == second).values(_file_ref=shared))
    manager = moved_manager(old, new)
    written = recorded(monkeypatch, new, "put")

    report = migrator(manager, tables, batch_size=1).migrate("documents", dry_run=False)

    assert (report.moved, report.copied, report.reused) == (2, 1, 1)
    assert len(written) == 1  # the second batch found the first one's copy: verified, not written again
    assert_every_row_reads(manager, tables, {first: b"shared", second: b"shared"})


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_target_key_holding_other_content_is_never_overwritten(
    tables: Engine, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    old, new = LocalStorageBackend(tmp_path / "old"), new_backend(kind, tmp_path, request)
    [row_id] = store_documents(tables, manager_on(old), [b"the row's content"])
    manager = moved_manager(old, new)
    ref = references(tables)[row_id]
    target = migration_key(manager.policy("documents"), manager.location_of(ref), ref.location)
    new.put(target, _bytes(b"someone else's content"))

    report = migrator(manager, tables).migrate("documents", dry_run=False, delete_source=True)

    assert (report.moved, report.failed) == (0, 1)
    assert "MigrationMismatchError" in report.failures[0].error
    assert not report.ok
    assert new.get(target) == b"someone else's content"
    assert references(tables)[row_id] == ref
    assert old.get(ref.location) == b"the row's content"


def test_a_source_that_no_longer_matches_its_reference_is_not_moved(tables: Engine, tmp_path: Path) -> None:
    old, new = LocalStorageBackend(tmp_path / "old"), LocalStorageBackend(tmp_path / "new")
    [row_id] = store_documents(tables, manager_on(old), [b"original content"])
    ref = references(tables)[row_id]
    (tmp_path / "old" / ref.location).write_bytes(b"0riginal content")  # same size, other bytes

    report = migrator(moved_manager(old, new), tables).migrate("documents", dry_run=False)

    assert (report.moved, report.failed) == (0, 1)
    assert "does not match its reference" in report.failures[0].error
    assert keys(new) == set()  # the bad copy was deleted
    assert references(tables)[row_id] == ref


def test_a_missing_source_fails_its_row_and_the_others_move(tables: Engine, tmp_path: Path) -> None:
    old, new = LocalStorageBackend(tmp_path / "old"), LocalStorageBackend(tmp_path / "new")
    lost, kept = store_documents(tables, manager_on(old), [b"lost", b"kept"])
    old.delete(references(tables)[lost].location)
    manager = moved_manager(old, new)

    dry = migrator(manager, tables).migrate("documents")
    report = migrator(manager, tables).migrate("documents", dry_run=False)

    assert (dry.moved, dry.failed) == (1, 1)
    assert (report.moved, report.failed) == (1, 1)
    assert "ObjectNotFoundError" in report.failures[0].error
    assert manager.get(references(tables)[kept]) == b"kept"


def test_delete_source_keeps_a_source_another_reference_still_points_at(
    tables: Engine, tmp_path: Path
) -> None:
    old, new = LocalStorageBackend(tmp_path / "old"), LocalStorageBackend(tmp_path / "new")
    [row_id] = store_documents(tables, manager_on(old), [b"shared"])
    ref = references(tables)[row_id]

    report = StorageMigrator(
        manager=moved_manager(old, new),
        engine=tables,
        columns=[(Document, "_file_ref")],
        references=[lambda: [ref]],  # e.g. an audit table the migrator cannot rewrite
    ).migrate("documents", dry_run=False, delete_source=True)

    assert (report.moved, report.sources_deleted, report.sources_kept) == (1, 0, 1)
    assert old.get(ref.location) == b"shared"


def test_rows_of_other_slots_are_left_alone(tables: Engine, tmp_path: Path) -> None:
    old, new = LocalStorageBackend(tmp_path / "old"), LocalStorageBackend(tmp_path / "new")
    store_documents(tables, manager_on(old), [b"a"])
    manager = StorageManager(
        backends={"old": old, "new": new},
        policies={
            "documents": StoragePolicy(
                "documents", backend_key="new", previous_locations=[StorageLocation("old")]
            ),
            "avatars": StoragePolicy("avatars", backend_key="old"),
        },
        plugins=PluginHost(strict=False, disabled=()),
    )

    report = migrator(manager, tables).migrate("avatars", dry_run=False)

    assert (report.references, report.moved) == (0, 0)
    assert {ref.backend for ref in references(tables).values()} == {"old"}


# -- 0.1.0's layout ----------------------------------------------------------------------------------------


def legacy_table() -> Table:
    """The document table as plain JSON, to write rows exactly as granite-storage 0.1.0 wrote them."""
    return Table(
        "document",
        MetaData(),
        Column("id", Uuid, primary_key=True),
        Column("title", String(200)),
        Column("_file_ref", portable_storage_ref_type()),
    )


def test_a_010_layout_moves_into_the_slots_prefix(
    tables: Engine, tmp_path: Path, plugin_host: PluginHost
) -> None:
    files = LocalStorageBackend(tmp_path / "files")
    rows, contents = [], {}
    for index, checksum in enumerate(["sha256", "md5:0123abcd", ""]):  # 0.1.0 accepted any checksum string
        row_id = uuid.uuid4()
        content = f"0.1.0 content {index}".encode()
        location = f"document/{row_id}-1a2b3c4{index}.pdf"
        files.put(location, _bytes(content))
        rows.append(
            {
                "id": row_id,
                "title": "legacy",
                "_file_ref": {
                    "storage_key": "documents",
                    "backend": "local",  # 0.1.0 recorded the backend's type
                    "location": location,
                    "size": len(content),
                    "checksum": f"sha256:{hashlib.sha256(content).hexdigest()}"
                    if checksum == "sha256"
                    else checksum,
                    "content_type": "application/pdf",
                    "original_filename": "report.pdf",
                    "created_at": "2025-01-02T03:04:05+00:00",
                    "extra": None,
                },
            }
        )
        contents[row_id] = content
    with tables.begin() as connection:
        connection.execute(insert(legacy_table()), rows)
    manager = StorageManager(
        backends={"files": files},
        policies={"documents": StoragePolicy("documents", backend_key="files")},  # as 0.1.0 was configured
        plugins=plugin_host,
    )

    report = migrator(manager, tables).migrate("documents", dry_run=False, delete_source=True)

    assert report.failures == ()
    assert (report.moved, report.failed, report.checksums_computed, report.sources_deleted) == (3, 0, 2, 3)
    assert_every_row_reads(manager, tables, contents)
    refs = references(tables)
    for row_id, ref in refs.items():
        assert ref.location.startswith(f"documents/document/{row_id}-1a2b3c4")
        assert ref.backend == "files"
        assert ref.sha256 == hashlib.sha256(contents[row_id]).hexdigest()
        assert manager.location_of(ref) == manager.policy("documents").location
    assert keys(files) == {ref.location for ref in refs.values()}


# -- the application writing meanwhile --------------------------------------------------------------------


class _WritingMeanwhile(LocalStorageBackend):
    """A local backend that lets the application change rows while the migrator copies into it."""

    def __init__(self, root: Path, during_copy: Any) -> None:
        super().__init__(root)
        self.during_copy = during_copy

    def put(
        self,
        key: str,
        stream: Readable,
        *,
        content_type: str | None = None,
        original_filename: str | None = None,
    ) -> None:
        if self.during_copy is not None:
            action, self.during_copy = self.during_copy, None
            action()
        super().put(key, stream, content_type=content_type, original_filename=original_filename)


def test_rows_the_application_changes_during_the_run_are_left_alone_and_reported(
    tables: Engine, tmp_path: Path
) -> None:
    old = LocalStorageBackend(tmp_path / "old")
    replaced, removed, moved = store_documents(tables, manager_on(old), [b"replaced", b"removed", b"moved"])

    def application_writes() -> None:  # in its own transaction, while the batch is being copied
        configure_storage_manager(Base, manager)
        with Session(tables) as session:
            document = session.get(Document, replaced)
            assert document is not None
            document.set_content(b"new content", filename="new.pdf")
            session.commit()
        with tables.begin() as connection:
            connection.execute(delete(Document).where(Document.id == removed))

    new = _WritingMeanwhile(tmp_path / "new", application_writes)
    manager = moved_manager(old, new)

    report = migrator(manager, tables).migrate("documents", dry_run=False, delete_source=True)

    assert (report.moved, report.changed, report.failed) == (1, 2, 0)
    assert set(report.changed_rows) == {f"Document({replaced})", f"Document({removed})"}
    assert report.ok
    refs = references(tables)
    assert set(refs) == {replaced, moved}
    assert manager.get(refs[replaced]) == b"new content"
    assert manager.get(refs[moved]) == b"moved"


# -- many objects -----------------------------------------------------------------------------------------


@pytest.mark.slow  # about 100 s on a 2-CPU machine; PostgreSQL's rewrites are covered by the tests above
@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_ten_thousand_small_objects_and_a_few_large_ones_move_to_s3(
    tables: Engine, tmp_path: Path, bucket: StorageBackend
) -> None:
    disk = LocalStorageBackend(tmp_path / "disk")
    small, large = 10_000, [20 * MIB, 17 * MIB + 1, 9 * MIB]
    contents = [index.to_bytes(4, "big") * 16 for index in range(small)] + [
        os.urandom(size) for size in large
    ]
    table = legacy_table()
    rows = []
    for index, content in enumerate(
        contents
    ):  # written straight to disk and database: the setup is not tested
        ref = StoredObjectRef(
            storage_key="documents",
            backend="old",
            location=f"documents/document/{index}/file_ref/{uuid.uuid4().hex}.bin",
            size=len(content),
            checksum=f"sha256:{hashlib.sha256(content).hexdigest()}",
        )
        disk.put(ref.location, _bytes(content))
        rows.append({"id": uuid.uuid4(), "title": str(index), "_file_ref": ref.to_dict()})
    with tables.begin() as connection:
        connection.execute(insert(table), rows)
    manager = moved_manager(disk, bucket)

    report = migrator(manager, tables, workers=8, batch_size=1000).migrate(
        "documents", dry_run=False, delete_source=True
    )

    assert (report.moved, report.copied, report.failed, report.sources_deleted) == (len(contents),) * 2 + (
        0,
    ) + (len(contents),)
    assert report.bytes_copied == sum(map(len, contents))
    refs = references(tables)
    assert keys(bucket) == {ref.location for ref in refs.values()}
    with Session(tables) as session:
        by_title = {row.id: int(row.title) for row in session.scalars(select(Document))}
    for row_id, ref in refs.items():
        assert ref.backend == "new"
        if ref.size > MIB:
            assert manager.get(ref) == contents[by_title[row_id]]
    assert keys(disk) == set()
    assert bucket.delete_many(sorted(keys(bucket))) == {}  # 1,000 keys a request, not one


# -- killed, and run again --------------------------------------------------------------------------------

KILLED_RUN = """
    import json, os, signal, sys
    from pathlib import Path

    from sqlalchemy import create_engine

    from granite_storage import PluginHost, StorageLocation, StorageManager, StoragePolicy
    from granite_storage.migrate import StorageMigrator
    from granite_storage_local import LocalStorageBackend
    from tests.orm.models import Document

    settings = json.loads(sys.argv[1])
    point, count = settings["kill"], settings["after"]
    seen = {"put": 0, "delete": 0, "batch": 0}

    def tick(what):
        seen[what] += 1
        if what == point and seen[what] >= count:
            os.kill(os.getpid(), signal.SIGKILL)

    class Halfway:
        def __init__(self, stream):
            self.stream, self.reads = stream, 0

        def read(self, size=-1):
            self.reads += 1
            if self.reads > 1:
                os.kill(os.getpid(), signal.SIGKILL)
            return self.stream.read(3)

    class Killing(LocalStorageBackend):
        def put(self, key, stream, **options):
            if point == "mid-put":  # killed with half of the object written to a temporary file
                seen["put"] += 1
                stream = Halfway(stream) if seen["put"] >= count else stream
            super().put(key, stream, **options)
            if point == "put":
                tick("put")

        def delete(self, key):
            super().delete(key)
            tick("delete")

    old = Killing(Path(settings["old"]))
    new = Killing(Path(settings["new"]))
    manager = StorageManager(
        backends={"old": old, "new": new},
        policies={
            "documents": StoragePolicy(
                "documents", backend_key="new", previous_locations=[StorageLocation("old")]
            )
        },
        plugins=PluginHost(strict=False, disabled=()),
    )
    StorageMigrator(
        manager=manager,
        engine=create_engine(settings["url"]),
        columns=[(Document, "_file_ref")],
        batch_size=4,
        workers=2,
        progress=lambda progress: tick("batch"),
    ).migrate("documents", dry_run=False, delete_source=True)
    sys.exit(0)
"""


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("point", "after"),
    [("mid-put", 3), ("put", 3), ("batch", 1), ("batch", 2), ("delete", 3)],
    ids=[
        "during-a-copy",
        "after-copies-before-the-commit",
        "after-the-first-commit",
        "after-two-commits",
        "while-deleting",
    ],
)
def test_a_run_killed_at_any_point_and_run_again_leaves_every_row_readable(
    tables: Engine, tmp_path: Path, point: str, after: int
) -> None:
    old_root, new_root = tmp_path / "old", tmp_path / "new"
    old, new = LocalStorageBackend(old_root), LocalStorageBackend(new_root)
    contents = [f"object {index}".encode() * (index + 1) for index in range(10)]
    ids = store_documents(tables, manager_on(old), contents)
    script = tmp_path / "killed_run.py"
    script.write_text(textwrap.dedent(KILLED_RUN))
    url = tables.url.render_as_string(hide_password=False)
    settings = {"kill": point, "after": after, "old": str(old_root), "new": str(new_root), "url": url}

    killed = subprocess.run(
        [sys.executable, str(script), json.dumps(settings)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    manager = moved_manager(old, new)
    expected = dict(zip(ids, contents, strict=True))
    assert_every_row_reads(manager, tables, expected)  # readable right after the kill

    report = migrator(manager, tables).migrate("documents", dry_run=False, delete_source=True)

    assert report.ok
    assert_every_row_reads(manager, tables, expected)
    refs = references(tables)
    assert {ref.backend for ref in refs.values()} == {"new"}
    assert keys(new) == {ref.location for ref in refs.values()}  # every copy made is referenced now
    # What the killed run left: the sources of rows it had rewritten, for the garbage collector.
    leftovers = keys(old)
    assert leftovers <= {ref.location for ref in refs.values()}
    if point in ("mid-put", "put"):  # killed before its first commit: the second run deleted them all
        assert leftovers == set()
    elif point == "batch":
        assert len(leftovers) == 4 * after


def _bytes(content: bytes) -> Readable:
    import io

    return io.BytesIO(content)
