"""The models the SQLAlchemy integration tests use: the seed's ``Document`` and a two-file ``User``."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from granite_storage import StoredContent, StoredContentMixin, StoredObjectRef, StoredObjectRefType


class Base(DeclarativeBase):
    pass


class Document(StoredContentMixin, Base):
    """The seed's model, as its documentation writes it."""

    __tablename__ = "document"
    __stored_content_field_name__ = "_file_ref"
    __stored_content_storage_key__ = "documents"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(200))
    _file_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)

    attachments: Mapped[list[Attachment]] = relationship(cascade="all, delete-orphan")


class User(Base):
    """Two file fields on one model, declared with :class:`StoredContent`."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    avatar_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)
    thumbnail_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)

    avatar = StoredContent("avatar_ref", storage_key="avatars")
    thumbnail = StoredContent("thumbnail_ref", storage_key="thumbnails")


class Attachment(Base):
    """A model with a reference column but no file API: references assigned by hand."""

    __tablename__ = "attachment"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    document_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("document.id"), nullable=True)
    file_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)
