"""Every snippet of the published 0.1.0 README (the seed) runs as written, and type-checks.

Each test holds one snippet with the seed's own names, arguments and import paths; what the README
leaves to the reader (an engine, ``pdf_bytes``, an ``upload_file``) is filled in around it. This file is
checked by ``mypy --strict`` with the rest of the tests, so the snippets' calls type-check too. Where the
seed's own annotations are wrong for 0.1.0 as well (``get_content()`` and ``open_content()`` return
``None`` for a row without content, in both releases), the snippet narrows the value first: "typed
correctly", as the seed's promise of mypy's strict mode requires.

The seed's model uses PostgreSQL's ``UUID`` type and a ``String`` without a length, which MariaDB
cannot create; its snippets therefore run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

# The seed's imports, each from the path it names (sorted and merged by the formatter).
from granite_storage import (
    ContentTooLargeError,
    StorageError,
    StorageManager,
    StoragePolicy,
    StoredContentMixin,
    StoredObjectRef,
    StoredObjectRefType,
    portable_storage_ref_type,
)
from granite_storage.backends.local import LocalStorageBackend
from granite_storage.gc import StorageGarbageCollector
from granite_storage.integrations.sqlalchemy import iter_model_storage_refs

MIB = 1024 * 1024
#: The databases the seed's model can be created on (see the module docstring).
SEED_DATABASES = pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)


class Base(DeclarativeBase):
    pass


class Document(StoredContentMixin, Base):
    __tablename__ = "document"
    __stored_content_field_name__ = "_file_ref"
    __stored_content_storage_key__ = "documents"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column()
    _file_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)


def seed_manager() -> StorageManager:
    """The quick start's manager, as written: relative to the working directory."""
    return StorageManager(
        backends={
            "local": LocalStorageBackend("./var/storage"),
        },
        policies={
            "avatars": StoragePolicy(
                storage_key="avatars",
                backend_key="local",
                max_size=2 * 1024 * 1024,  # 2 MB
                key_prefix="avatars",
            ),
            "documents": StoragePolicy(
                storage_key="documents",
                backend_key="local",
                max_size=10 * 1024 * 1024,  # 10 MB
                key_prefix="docs",
            ),
        },
    )


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StorageManager:
    monkeypatch.chdir(tmp_path)
    return seed_manager()


@pytest.fixture
def seed_schema(engine: Engine, manager: StorageManager) -> Iterator[Engine]:
    """The seed's table on ``engine``, with the manager injected once, as the seed does at startup."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    # Inject the manager once at startup
    Document.configure_storage_manager(manager)
    try:
        yield engine
    finally:
        Base.metadata.drop_all(engine)
        del Document.__storage_manager__


def stored_files(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def test_the_quick_start_manager_stores_under_each_slots_prefix(
    manager: StorageManager, tmp_path: Path
) -> None:
    ref = manager.put_bytes(
        storage_key="documents", model_name="document", entity_id="1", field_name="file", content=b"x"
    )
    assert ref.location.startswith("docs/")
    assert stored_files(tmp_path / "var" / "storage") == [ref.location]


@SEED_DATABASES
@pytest.mark.usefixtures("seed_schema")
def test_the_session_flow_stores_reads_replaces_and_clears(
    engine: Engine, manager: StorageManager, tmp_path: Path
) -> None:
    from fastapi import UploadFile
    from starlette.datastructures import Headers

    pdf_bytes, new_bytes = b"%PDF-1.7 annual", b"%PDF-1.7 annual, v2"
    (tmp_path / "video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" * 1000)
    upload_file = UploadFile(
        io.BytesIO(b"uploaded"), filename="upload.txt", headers=Headers({"content-type": "text/plain"})
    )

    async def store_the_upload(doc: Document) -> None:
        await doc.set_content_from_uploadfile(upload_file)

    with Session(engine) as session:
        doc = Document(title="Annual Report")
        session.add(doc)
        session.flush()  # ensure id is set before storing the file

        # From bytes
        doc.set_content(pdf_bytes, filename="report.pdf", content_type="application/pdf")
        session.commit()
        assert doc.get_content() == pdf_bytes

        # From a stream (memory-safe for large files)
        with open("video.mp4", "rb") as f:
            doc.set_content_from_stream(f, filename="video.mp4", content_type="video/mp4")
        session.commit()
        assert doc._file_ref is not None
        assert doc._file_ref.content_type == "video/mp4"

        # From a FastAPI UploadFile
        asyncio.run(store_the_upload(doc))
        session.commit()

        # Read back
        data = doc.get_content()
        assert data is not None
        assert data == b"uploaded"
        stream = doc.open_content()
        assert stream is not None
        with stream as fh:
            first_chunk = fh.read(8192)
        assert first_chunk == b"uploaded"

        # Replace (returns previous ref for manual cleanup or GC)
        result = doc.replace_content(new_bytes, filename="report-v2.pdf")
        assert result.previous_ref is not None
        assert result.previous_ref.original_filename == "upload.txt"
        assert result.new_ref == doc._file_ref
        assert result.new_ref.original_filename == "report-v2.pdf"

        # Remove the reference (does NOT delete the physical file)
        old_ref = doc.clear_content_reference()
        session.commit()
        assert old_ref == result.new_ref
        assert old_ref is not None
        assert manager.get(old_ref) == new_bytes

    with Session(engine) as session:
        assert session.scalars(select(Document)).one()._file_ref is None


def test_put_stream_get_and_delete_with_a_manager(manager: StorageManager) -> None:
    user_id = uuid.uuid4()
    image_stream = io.BytesIO(b"\xff\xd8\xff jpeg")
    ref = manager.put_stream(
        storage_key="avatars",
        model_name="user",
        entity_id=str(user_id),
        field_name="avatar",
        stream=image_stream,
        content_type="image/jpeg",
        original_filename="photo.jpg",
    )
    # ref is a StoredObjectRef — persist it in your database as JSON
    assert StoredObjectRef.from_dict(ref.to_dict()) == ref
    data = manager.get(ref)
    assert data == b"\xff\xd8\xff jpeg"
    manager.delete(ref)
    assert not manager.exists(ref)


def test_the_s3_manager_as_written_stores_under_the_backend_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    moto = pytest.importorskip("moto", reason="moto is not installed")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    with moto.mock_aws():
        import boto3

        from granite_storage.backends.s3 import S3StorageBackend

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="my-app-uploads")

        manager = StorageManager(
            backends={
                "s3": S3StorageBackend(
                    bucket="my-app-uploads",
                    prefix="production",
                    client=boto3.client("s3", region_name="us-east-1"),
                ),
            },
            policies={
                "avatars": StoragePolicy("avatars", backend_key="s3", max_size=2 * 1024 * 1024),
            },
        )

        ref = manager.put_bytes(
            storage_key="avatars", model_name="user", entity_id="7", field_name="avatar", content=b"png"
        )
        assert manager.get(ref) == b"png"
        listed = boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket="my-app-uploads")
        assert [item.get("Key") for item in listed.get("Contents", [])] == [f"production/{ref.location}"]


def test_error_handling_catches_too_large_content_then_any_storage_error(manager: StorageManager) -> None:
    huge_bytes = b"\x00" * (2 * MIB + 1)
    caught: list[str] = []
    for storage_key in ("avatars", "no-such-slot"):
        try:
            ref = manager.put_bytes(
                storage_key=storage_key,
                model_name="user",
                entity_id="1",
                field_name="avatar",
                content=huge_bytes,
            )
        except ContentTooLargeError:
            # Content exceeds the policy max_size — return HTTP 413
            caught.append("too large")
        except StorageError:
            # Unknown policy, backend failure, etc.
            caught.append("storage error")
        else:
            pytest.fail(f"stored {ref!r}")
    assert caught == ["too large", "storage error"]


def age(path: Path, seconds: float) -> None:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


@SEED_DATABASES
@pytest.mark.usefixtures("seed_schema")
def test_garbage_collection_as_written_finds_and_deletes_orphans(
    engine: Engine, manager: StorageManager, tmp_path: Path
) -> None:
    with Session(engine) as session:
        kept = Document(title="kept")
        session.add(kept)
        session.flush()
        kept_ref = kept.set_content(b"kept", filename="kept.txt")
        orphan = manager.put_bytes(
            storage_key="documents", model_name="document", entity_id="x", field_name="file", content=b"o"
        )
        session.commit()
    root = tmp_path / "var" / "storage"
    for path in root.rglob("*"):
        age(path, 2 * 3600)  # older than the collector's grace period (one hour)

    with Session(engine) as session:
        gc = StorageGarbageCollector(
            manager=manager,
            iter_references=lambda: iter_model_storage_refs(session, Document, "_file_ref"),
        )

        # Dry run
        report = gc.collect(storage_key="documents", dry_run=True)
        print(f"Orphaned: {report.orphaned} / {report.scanned}")
        assert (report.orphaned, report.scanned, report.deleted) == (1, 2, 0)

        # Delete orphans
        report = gc.collect(storage_key="documents", dry_run=False)
        print(f"Deleted: {report.deleted}")
        assert report.deleted == 1
    assert not manager.exists(orphan)
    assert stored_files(root) == [kept_ref.location]


def test_the_alembic_migration_as_written_adds_a_reference_column(engine: Engine) -> None:
    pytest.importorskip("alembic", reason="Alembic is not installed")
    import sqlalchemy as sa
    from alembic import op
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    def upgrade() -> None:
        op.add_column(
            "document",
            sa.Column("_file_ref", portable_storage_ref_type(), nullable=True),
        )

    table = sa.Table("document", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    table.metadata.drop_all(engine)
    table.create(engine)
    try:
        with engine.begin() as connection, Operations.context(MigrationContext.configure(connection)):
            upgrade()
        columns = {column["name"]: column for column in inspect(engine).get_columns("document")}
        assert columns["_file_ref"]["nullable"]
        expected = "JSONB" if engine.dialect.name == "postgresql" else "JSON"
        assert type(columns["_file_ref"]["type"]).__name__ in {expected, "LONGTEXT"}  # MariaDB's JSON
    finally:
        table.metadata.drop_all(engine)
