"""A documents API on granite-storage and FastAPI: upload, list, read, download (ranges), replace, delete.

Run it with ``make serve-example`` (or ``uvicorn --factory documents_app:create_app`` from this
directory) and open http://127.0.0.1:8000/docs. With no configuration it keeps a SQLite database and
the files under ``./var``; two environment variables move it to PostgreSQL and S3:

* ``GRANITE_EXAMPLE_DATABASE_URL``: an async SQLAlchemy URL (default
  ``sqlite+aiosqlite:///./var/documents.db``; ``postgresql+psycopg://user@host/db`` works too).
* ``GRANITE_EXAMPLE_STORAGE_CONFIG``: a TOML file for ``StorageManager.from_config`` defining the
  ``documents`` slot (default: local disk under ``./var/storage``, 1 GiB per file).

The endpoints are ``async``: uploads are stored by a worker thread (``set_content_from_uploadfile``),
downloads are read by worker threads (``storage_response``), and the database is reached through an
``AsyncSession``, so one slow client never holds up the others. Session tracking makes storage follow
each request's transaction: a request that fails after storing leaves no file behind, and a replaced
or deleted document's file is deleted once the commit has succeeded.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request, Response, UploadFile
from pydantic import BaseModel
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from granite_storage import StorageManager, StoredObjectRef, track_storage
from granite_storage.integrations.fastapi import (
    StorageManagerDep,
    get_async_session,
    install_storage,
    storage_response,
)
from granite_storage.orm import StoredContentMixin, StoredObjectRefType, enable_sqlite_savepoints

TITLE_LENGTH = 200
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/documents.db"
DEFAULT_STORAGE: dict[str, Any] = {
    "backends": {"files": {"type": "local", "root": "./var/storage"}},
    "policies": {"documents": {"backend": "files", "max_size": "1GiB", "delete_replaced": True}},
}


@dataclass(frozen=True)
class Settings:
    """Where the service keeps its rows and its files."""

    database_url: str = DEFAULT_DATABASE_URL
    storage_config: Path | None = None  # None: DEFAULT_STORAGE

    @classmethod
    def from_environment(cls) -> Settings:
        """Settings from ``GRANITE_EXAMPLE_DATABASE_URL`` and ``GRANITE_EXAMPLE_STORAGE_CONFIG``."""
        config = os.environ.get("GRANITE_EXAMPLE_STORAGE_CONFIG")
        return cls(
            database_url=os.environ.get("GRANITE_EXAMPLE_DATABASE_URL") or DEFAULT_DATABASE_URL,
            storage_config=Path(config) if config else None,
        )


# -- the model ---------------------------------------------------------------------------------------


class Base(DeclarativeBase):
    """The service's declarative base."""


class Document(StoredContentMixin, Base):
    """A document: a title and one stored file."""

    __tablename__ = "example_document"
    __stored_content_field_name__ = "file_ref"
    __stored_content_storage_key__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_LENGTH))
    file_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType())


class DocumentOut(BaseModel):
    """A document as the API shows it: never the storage location."""

    id: int
    title: str
    filename: str | None
    content_type: str | None
    size: int | None
    sha256: str | None
    uploaded_at: datetime | None

    @classmethod
    def of(cls, document: Document) -> DocumentOut:
        """The public view of ``document``."""
        ref = document.content_ref
        return cls(
            id=document.id,
            title=document.title,
            filename=ref.original_filename if ref else None,
            content_type=ref.content_type if ref else None,
            size=ref.size if ref else None,
            sha256=ref.sha256 if ref else None,
            uploaded_at=ref.created_at if ref else None,
        )


# -- the endpoints -----------------------------------------------------------------------------------

router = APIRouter(prefix="/documents", tags=["documents"])
SessionDep = Annotated[AsyncSession, Depends(get_async_session)]


async def _document(session: AsyncSession, document_id: int) -> Document:
    document = await session.get(Document, document_id)
    if document is None:
        raise HTTPException(404, "no such document")
    return document


@router.post("", status_code=201)
async def upload_document(
    file: UploadFile, session: SessionDep, title: Annotated[str | None, Form(max_length=TITLE_LENGTH)] = None
) -> DocumentOut:
    """Upload a file as a new document (multipart form: ``file``, optional ``title``).

    Over the slot's size limit: 413, and neither a row nor a file is kept.
    """
    document = Document(title=(title or file.filename or "untitled")[:TITLE_LENGTH])
    session.add(document)
    await session.flush()  # the primary key names the file's key
    await document.set_content_from_uploadfile(file)
    await session.commit()
    return DocumentOut.of(document)


@router.get("")
async def list_documents(session: SessionDep) -> list[DocumentOut]:
    """Every document, oldest first."""
    documents = await session.scalars(select(Document).order_by(Document.id))
    return [DocumentOut.of(document) for document in documents]


@router.get("/{document_id}")
async def read_document(document_id: int, session: SessionDep) -> DocumentOut:
    """One document's metadata."""
    return DocumentOut.of(await _document(session, document_id))


@router.get("/{document_id}/content", response_class=Response)
@router.head("/{document_id}/content", response_class=Response)
async def download_document(
    document_id: int,
    request: Request,
    session: SessionDep,
    manager: StorageManagerDep,
    inline: bool = False,
    redirect: bool = False,
) -> Response:
    """Download the file; ``Range``, ``If-None-Match`` and ``HEAD`` work.

    With ``redirect=true``, a file on S3 is served by a redirect to a short-lived presigned URL.
    """
    ref = (await _document(session, document_id)).content_ref
    # The body streams for as long as the client takes, and FastAPI closes the session only once it
    # is sent: end the read now rather than hold a pooled database connection for the whole download.
    await session.close()
    if ref is None:
        raise HTTPException(404, "the document has no file")
    return storage_response(
        manager,
        ref,
        request,
        disposition="inline" if inline else "attachment",
        redirect=redirect,
    )


@router.put("/{document_id}/content")
async def replace_document(document_id: int, file: UploadFile, session: SessionDep) -> DocumentOut:
    """Replace the file; the previous one is deleted once the new one is committed."""
    document = await _document(session, document_id)
    await document.set_content_from_uploadfile(file)
    await session.commit()
    return DocumentOut.of(document)


@router.delete("/{document_id}", status_code=204)
async def delete_document(document_id: int, session: SessionDep) -> None:
    """Delete the document; its file is deleted once the deletion is committed."""
    await session.delete(await _document(session, document_id))
    await session.commit()


# -- the application ---------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service from ``settings`` (by default, from the environment).

    The model class holds the manager, so one process serves one configuration at a time.
    """
    settings = settings or Settings.from_environment()
    manager = StorageManager.from_config(settings.storage_config or DEFAULT_STORAGE)
    engine = create_async_engine(settings.database_url)
    if engine.dialect.name == "sqlite":
        Path(engine.url.database or ".").parent.mkdir(parents=True, exist_ok=True)
        enable_sqlite_savepoints(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    track_storage(sessions)
    Document.configure_storage_manager(manager)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as connection:  # a real service runs Alembic migrations instead
            await connection.run_sync(Base.metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(title="granite-storage documents example", lifespan=lifespan)
    install_storage(app, manager, sessions=sessions)
    app.include_router(router)
    return app
