"""The quick start, run by ``make demo``: files on local disk, then files owned by SQLAlchemy models.

Objects go under ``./var/storage`` and the demo's table into the SQLite file ``./var/demo.db`` (both
created if missing); every object and row the demo stores, it deletes.
"""

from __future__ import annotations

import io
import json
import uuid

from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from granite_storage import (
    ContentTooLargeError,
    StorageManager,
    StoragePolicy,
    StoredContentMixin,
    StoredObjectRef,
    StoredObjectRefType,
    track_storage,
)
from granite_storage.orm import enable_sqlite_savepoints
from granite_storage_local import LocalStorageBackend


class Base(DeclarativeBase):
    """The demo's declarative base."""


class Document(StoredContentMixin, Base):
    """A model that owns one file, as the user guide's SQLAlchemy chapter declares it."""

    __tablename__ = "document"
    __stored_content_field_name__ = "_file_ref"
    __stored_content_storage_key__ = "documents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(200))
    _file_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)


def main() -> None:
    """Walk through the storage API and print what each step did."""
    manager = StorageManager(
        backends={"local": LocalStorageBackend("./var/storage")},
        policies={
            "avatars": StoragePolicy(
                storage_key="avatars", backend_key="local", max_size=2 * 1024 * 1024, key_prefix="avatars"
            ),
            "documents": StoragePolicy(
                "documents", backend_key="local", max_size=10 * 1024 * 1024, key_prefix="docs"
            ),
        },
    )
    user_id = uuid.uuid4()

    image_stream = io.BytesIO(b"\xff\xd8\xff\xe0" + b"\x00" * 4096)  # stands in for an uploaded JPEG
    ref = manager.put_stream(
        storage_key="avatars",
        model_name="user",
        entity_id=str(user_id),
        field_name="avatar",
        stream=image_stream,
        content_type="image/jpeg",
        original_filename="photo.jpg",
    )
    print(f"stored {ref.size} bytes at {ref.backend}:{ref.location}")
    print(f"  checksum {ref.checksum}")

    stored_json = json.dumps(ref.to_dict())
    print(f"  the database row keeps {len(stored_json)} bytes of JSON")
    ref = StoredObjectRef.from_dict(json.loads(stored_json))
    print(f"read back {len(manager.get(ref))} bytes; exists: {manager.exists(ref)}")

    report = manager.put_bytes(
        storage_key="documents",
        model_name="document",
        entity_id="42",
        field_name="file",
        content=b"Quarterly report\n",
        original_filename="Q3 report.TXT",
    )
    with manager.open(report) as stream:
        print(f"stored {report.location} as {report.content_type}: {stream.read()!r}")

    try:
        manager.put_bytes(
            storage_key="avatars",
            model_name="user",
            entity_id=str(user_id),
            field_name="avatar",
            content=b"\x00" * (2 * 1024 * 1024 + 1),
        )
    except ContentTooLargeError as exc:
        print(f"refused an avatar one byte over the limit: {exc}")

    for stored in (ref, report):
        manager.delete(stored)
    print(f"deleted both objects; exists: {manager.exists(ref)}, {manager.exists(report)}")

    models(manager)


def models(manager: StorageManager) -> None:
    """A model owns a file; storage follows the transaction (rollback, replace after commit)."""
    engine = create_engine("sqlite:///./var/demo.db")
    enable_sqlite_savepoints(engine)  # session tracking relies on SAVEPOINTs
    Base.metadata.create_all(engine)
    Document.configure_storage_manager(manager)
    sessions = sessionmaker(engine)
    track_storage(sessions)

    with sessions() as session:
        doc = Document(title="Annual report")
        session.add(doc)
        session.flush()  # the object key needs the primary key
        first = doc.set_content(b"%PDF-1.7 first draft", filename="report.pdf")
        session.commit()
        print(f"model stored {first.location} ({first.content_type})")

        draft = doc.replace_content(b"%PDF-1.7 abandoned").new_ref
        session.rollback()
        print(f"  rolled back: the abandoned object exists: {manager.exists(draft)}")

        final = doc.replace_content(b"%PDF-1.7 final", delete_previous=True).new_ref
        print(f"  replaced; before the commit the first draft exists: {manager.exists(first)}")
        session.commit()
        print(f"  committed; the first draft exists: {manager.exists(first)}; now {doc.get_content()!r}")

        session.delete(doc)
        session.commit()
        print(f"  deleted the row; its object stays (no delete_replaced): {manager.exists(final)}")
        manager.delete(final)
    print(f"deleted the object too; exists: {manager.exists(final)}")
    engine.dispose()


if __name__ == "__main__":
    main()
