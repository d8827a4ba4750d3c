"""The models of the 0.1.0 data: the seed's ``Document`` as its README writes it, and ``users``.

``users.avatar`` holds references stored with ``manager.put_stream`` / ``put_bytes`` and assigned by
hand, as the README's "persist it in your database as JSON" suggests.
"""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from granite_storage import StoredContentMixin, StoredObjectRef, StoredObjectRefType


class Base(DeclarativeBase):
    pass


class Document(StoredContentMixin, Base):
    __tablename__ = "document"
    __stored_content_field_name__ = "_file_ref"
    __stored_content_storage_key__ = "documents"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column()
    _file_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column()
    avatar: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)
