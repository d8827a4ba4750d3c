"""Async use: AsyncSession with tracking, and FastAPI uploads stored without blocking the event loop."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import UploadFile
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from starlette.datastructures import Headers

from granite_storage import ContentTooLargeError, StorageManager, iter_model_storage_refs, track_storage
from granite_storage.orm import configure_storage_manager, enable_sqlite_savepoints

from ..conftest import files_under
from .conftest import server_engine, server_url
from .models import Base, Document

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
async def async_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An async engine on SQLite (aiosqlite) and PostgreSQL (asyncpg), with the test tables."""
    if request.param == "sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
        enable_sqlite_savepoints(engine)
    else:
        server_engine("postgresql").dispose()  # skips (or fails in CI) when it is not reachable
        url = make_url(server_url("postgresql")).set(drivername="postgresql+asyncpg")
        engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.run_sync(Base.metadata.create_all)
    try:
        yield engine
    finally:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
        await engine.dispose()


@pytest.fixture
def sessions(async_engine: AsyncEngine, orm_manager: StorageManager) -> async_sessionmaker[AsyncSession]:
    factory = async_sessionmaker(async_engine, expire_on_commit=False)
    track_storage(factory)
    configure_storage_manager(Base, orm_manager)
    return factory


def upload(content: bytes | io.RawIOBase, filename: str, content_type: str) -> UploadFile:
    file = io.BytesIO(content) if isinstance(content, bytes) else content
    return UploadFile(file, filename=filename, headers=Headers({"content-type": content_type}))  # type: ignore[arg-type]


# -- AsyncSession -------------------------------------------------------------------------------------


async def test_the_seed_flow_works_with_an_async_session(
    sessions: async_sessionmaker[AsyncSession], storage_root: Path
) -> None:
    async with sessions() as session:
        doc = Document(title="async")
        session.add(doc)
        await session.flush()
        await asyncio.to_thread(doc.set_content, b"stored off the event loop", filename="a.txt")
        await session.commit()
        doc_id = doc.id

    async with sessions() as session:
        loaded = await session.get(Document, doc_id)
        assert loaded is not None
        assert await asyncio.to_thread(loaded.get_content) == b"stored off the event loop"
    assert len(files_under(storage_root)) == 1


async def test_an_async_session_lists_references_with_run_sync(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        doc = Document(title="async")
        session.add(doc)
        await session.flush()
        ref = doc.set_content(b"listed")
        await session.commit()
    async with sessions() as session:  # outside a transaction: read on a connection of its own
        listed = await session.run_sync(
            lambda sync: list(iter_model_storage_refs(sync, Document, "_file_ref"))
        )
        assert listed == [ref]
        assert not session.in_transaction()


async def test_an_async_rollback_deletes_what_the_transaction_stored(
    sessions: async_sessionmaker[AsyncSession], storage_root: Path
) -> None:
    async with sessions() as session:
        doc = Document(title="async")
        session.add(doc)
        await session.flush()
        doc.set_content(b"never committed")
        assert len(files_under(storage_root)) == 1
        await session.rollback()
    assert files_under(storage_root) == []


async def test_an_async_savepoint_rollback_deletes_only_its_objects(
    sessions: async_sessionmaker[AsyncSession], storage_root: Path
) -> None:
    async with sessions() as session:
        kept = Document(title="kept")
        session.add(kept)
        await session.flush()
        kept_ref = kept.set_content(b"kept")
        savepoint = await session.begin_nested()
        lost = Document(title="lost")
        session.add(lost)
        await session.flush()
        lost.set_content(b"lost")
        await savepoint.rollback()
        await session.commit()
        titles = (await session.scalars(select(Document.title))).all()
    assert titles == ["kept"]
    assert files_under(storage_root) == [kept_ref.location]


# -- UploadFile ---------------------------------------------------------------------------------------


async def test_an_upload_file_is_stored_with_its_filename_and_content_type(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        doc = Document(title="upload")
        session.add(doc)
        await session.flush()
        ref = await doc.set_content_from_uploadfile(upload(b"%PDF-1.7", "Bericht Ü.pdf", "application/pdf"))
        await session.commit()
    assert ref.original_filename == "Bericht Ü.pdf"
    assert ref.content_type == "application/pdf"
    assert doc._file_ref == ref
    assert await asyncio.to_thread(doc.get_content) == b"%PDF-1.7"


async def test_an_upload_file_already_read_is_stored_from_its_start(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    file = upload(b"0123456789", "digits.txt", "text/plain")
    assert await file.read(4) == b"0123"
    async with sessions() as session:
        doc = Document(title="upload")
        session.add(doc)
        await session.flush()
        await doc.set_content_from_uploadfile(file)
        assert doc.get_content() == b"0123456789"


async def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(
    sessions: async_sessionmaker[AsyncSession], storage_root: Path
) -> None:
    async with sessions() as session:
        doc = Document(title="too big")
        session.add(doc)
        await session.flush()
        with pytest.raises(ContentTooLargeError):
            await doc.set_content_from_uploadfile(
                upload(b"x" * (10 * 1024 * 1024 + 1), "big.bin", "application/octet-stream")
            )
        assert doc._file_ref is None
    assert files_under(storage_root) == []


class GatedStream(io.RawIOBase):
    """A blocking upload that yields its last chunk only once the event loop has run other work."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.gate = threading.Event()
        self.reading_thread: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.reading_thread = threading.get_ident()
        if len(self.chunks) == 1 and not self.gate.wait(timeout=10):
            raise TimeoutError("the event loop never ran while the upload was being read")
        if not self.chunks:
            return 0
        chunk = self.chunks.pop(0)
        buffer[: len(chunk)] = chunk
        return len(chunk)


async def test_storing_an_upload_does_not_block_the_event_loop(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    stream = GatedStream([b"first ", b"second ", b"last"])
    async with sessions() as session:
        doc = Document(title="upload")
        session.add(doc)
        await session.flush()
        storing = asyncio.create_task(
            doc.set_content_from_uploadfile(upload(stream, "gated.txt", "text/plain"))
        )
        # Another coroutine runs while the upload is read: were the read on the loop's thread, the
        # gate would never open and the upload would time out.
        while stream.reading_thread is None:
            await asyncio.sleep(0.01)
        stream.gate.set()
        ref = await storing
        await session.commit()
    assert stream.reading_thread != threading.get_ident()
    assert doc.get_content() == b"first second last"
    assert ref.size == len(b"first second last")


async def test_a_cancelled_upload_leaves_nothing_behind(
    sessions: async_sessionmaker[AsyncSession], storage_root: Path
) -> None:
    stream = GatedStream([b"first ", b"last"])
    async with sessions() as session:
        doc = Document(title="upload")
        session.add(doc)
        await session.flush()
        storing = asyncio.create_task(
            doc.set_content_from_uploadfile(upload(stream, "gated.txt", "text/plain"))
        )
        while stream.reading_thread is None:
            await asyncio.sleep(0.01)
        storing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await storing
        assert doc._file_ref is None
        stream.gate.set()  # the worker thread finishes storing, then deletes what it stored
        for _ in range(500):
            if stream.chunks == [] and files_under(storage_root) == []:
                break
            await asyncio.sleep(0.01)
    assert stream.chunks == []
    assert files_under(storage_root) == []


async def test_assigning_a_reference_after_commit_needs_no_query_without_tracking(
    async_engine: AsyncEngine, orm_manager: StorageManager
) -> None:
    configure_storage_manager(Base, orm_manager)
    untracked = async_sessionmaker(async_engine)  # expire_on_commit: the reference is unloaded
    async with untracked() as session:
        doc = Document(title="plain")
        session.add(doc)
        await session.flush()
        doc.set_content(b"x")
        await session.commit()
        doc._file_ref = None  # a plain assignment: loads nothing, so no MissingGreenlet
        await session.commit()
