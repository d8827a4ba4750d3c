"""File-aware models: the seed's mixin API and several file fields per model, on every database."""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from granite_storage import (
    ConfigurationError,
    ContentTooLargeError,
    ReplaceContentResult,
    StorageError,
    StorageManager,
    StoredContent,
    StoredObjectRef,
    UnsavedEntityError,
)
from granite_storage.orm import BoundStoredContent

from ..conftest import files_under
from .models import Base, Document, User

pytestmark = pytest.mark.usefixtures("schema")


def new_document(session: Session, title: str = "Annual Report") -> Document:
    doc = Document(title=title)
    session.add(doc)
    session.flush()
    return doc


# -- the seed's documented flow ---------------------------------------------------------------------


def test_the_seed_flow_reads_back_the_same_bytes_in_a_fresh_session(engine: Engine) -> None:
    with Session(engine) as session:
        doc = Document(title="Annual Report")
        session.add(doc)
        session.flush()  # ensure id is set before storing
        doc.set_content(b"%PDF-1.7 report", filename="report.pdf")
        session.commit()
        doc_id = doc.id

    with Session(engine) as session:
        loaded = session.get(Document, doc_id)
        assert loaded is not None
        assert loaded.get_content() == b"%PDF-1.7 report"
        ref = loaded._file_ref
        assert isinstance(ref, StoredObjectRef)
        assert ref.original_filename == "report.pdf"
        assert ref.content_type == "application/pdf"
        assert ref.size == len(b"%PDF-1.7 report")


def test_object_keys_name_the_table_and_the_field_under_a_fanout_directory(
    engine: Engine, storage_root: Path
) -> None:
    with Session(engine) as session:
        doc = new_document(session)
        ref = doc.set_content(b"x", filename="notes.txt")
        session.commit()
        assert re.fullmatch(r"docs/document/file_ref/([0-9a-f]{2})/\1[0-9a-f]{30}\.txt", ref.location)
        assert str(doc.id) not in ref.location
    assert files_under(storage_root) == [ref.location]


@pytest.mark.usefixtures("entity_layout")
def test_the_entity_layout_names_the_table_the_entity_and_the_field(
    engine: Engine, storage_root: Path
) -> None:
    with Session(engine) as session:
        doc = new_document(session)
        ref = doc.set_content(b"x", filename="notes.txt")
        session.commit()
        assert re.fullmatch(rf"docs/document/{doc.id}/file_ref/[0-9a-f]{{32}}\.txt", ref.location)
    assert files_under(storage_root) == [ref.location]


# -- set_content and friends ------------------------------------------------------------------------


def test_text_is_stored_as_utf8_with_its_charset(engine: Engine) -> None:
    with Session(engine) as session:
        doc = new_document(session)
        ref = doc.set_content("Grüße, 世界")
        assert ref.content_type == "text/plain; charset=utf-8"
        assert doc.get_content() == "Grüße, 世界".encode()
        assert doc.get_content_text() == "Grüße, 世界"


def test_text_content_type_is_guessed_from_the_filename(engine: Engine) -> None:
    with Session(engine) as session:
        ref = new_document(session).set_content("# Title", filename="README.md")
        assert ref.content_type == "text/markdown; charset=utf-8"


def test_get_content_text_decodes_with_the_stored_charset(engine: Engine) -> None:
    with Session(engine) as session:
        doc = new_document(session)
        doc.set_content("café".encode("latin-1"), content_type="text/plain; charset=latin-1")
        assert doc.get_content_text() == "café"
        assert doc.get_content_text("utf-8", errors="replace") == "caf\ufffd"


def test_an_explicit_content_type_wins_over_the_guess(engine: Engine) -> None:
    with Session(engine) as session:
        ref = new_document(session).set_content(b"{}", filename="data.txt", content_type="application/json")
        assert ref.content_type == "application/json"


def test_set_content_from_stream_streams_and_records_size_and_checksum(engine: Engine) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with Session(engine) as session:
        doc = new_document(session)
        ref = doc.set_content_from_stream(io.BytesIO(payload), filename="blob.bin")
        session.commit()
        assert ref.size == len(payload)
        assert ref.sha256 is not None
        assert len(ref.sha256) == 64
        with doc.open_content() as stream:  # type: ignore[union-attr]
            assert stream.read() == payload


def test_extra_is_recorded_on_the_reference_and_survives_the_database(engine: Engine) -> None:
    with Session(engine) as session:
        doc = new_document(session)
        doc.set_content(b"x", extra={"uploaded_by": "alice", "pages": 3})
        session.commit()
        doc_id = doc.id
    with Session(engine) as session:
        loaded = session.get(Document, doc_id)
        assert loaded is not None
        assert loaded._file_ref is not None
        assert dict(loaded._file_ref.extra) == {"uploaded_by": "alice", "pages": 3}


def test_storage_key_overrides_the_slot_for_one_call(engine: Engine) -> None:
    with Session(engine) as session:
        ref = new_document(session).set_content(b"x", storage_key="thumbnails")
        assert ref.storage_key == "thumbnails"
        assert ref.location.startswith("thumbnails/document/")


def test_reading_without_content_returns_none(engine: Engine) -> None:
    with Session(engine) as session:
        doc = new_document(session)
        assert doc.get_content() is None
        assert doc.get_content_text() is None
        assert doc.open_content() is None
        assert doc.content_ref is None


def test_replace_content_returns_the_previous_and_the_new_reference(engine: Engine) -> None:
    with Session(engine) as session:
        doc = new_document(session)
        first = doc.set_content(b"one")
        result = doc.replace_content(b"two", filename="two.txt")
        assert result == ReplaceContentResult(previous_ref=first, new_ref=result.new_ref)
        assert doc._file_ref == result.new_ref
        assert doc.get_content() == b"two"
        # Without tracking nothing is deleted implicitly: the previous object is still there.
        manager = Document.__storage_manager__
        assert manager.get(first) == b"one"


def test_replace_content_of_an_empty_field_has_no_previous_reference(engine: Engine) -> None:
    with Session(engine) as session:
        result = new_document(session).replace_content(b"first")
        assert result.previous_ref is None


def test_clear_content_reference_returns_the_old_reference_and_keeps_the_object(engine: Engine) -> None:
    with Session(engine) as session:
        doc = new_document(session)
        ref = doc.set_content(b"x")
        session.commit()
        assert doc.clear_content_reference() == ref
        session.commit()
        assert doc._file_ref is None
        assert Document.__storage_manager__.exists(ref)
        assert doc.clear_content_reference() is None


# -- refusals ---------------------------------------------------------------------------------------


def test_content_over_the_limit_is_refused_and_changes_nothing(engine: Engine, storage_root: Path) -> None:
    with Session(engine) as session:
        doc = new_document(session)
        original = doc.set_content(b"kept")
        with pytest.raises(ContentTooLargeError):
            doc.set_content_from_stream(io.BytesIO(b"x" * (10 * 1024 * 1024 + 1)))
        with pytest.raises(ContentTooLargeError):
            doc.set_content(b"x" * (10 * 1024 * 1024 + 1))
        assert doc._file_ref == original
        assert files_under(storage_root) == [original.location]


@pytest.mark.usefixtures("entity_layout")
def test_the_entity_layout_refuses_an_instance_without_a_primary_key(
    engine: Engine, storage_root: Path
) -> None:
    with Session(engine) as session:
        doc = Document(title="not flushed")
        session.add(doc)
        with pytest.raises(UnsavedEntityError, match=r"flush\(\)") as raised:
            doc.set_content(b"x")
        assert isinstance(raised.value, StorageError)
    assert not storage_root.exists() or files_under(storage_root) == []


@pytest.mark.usefixtures("entity_layout")
def test_the_entity_layout_takes_an_assigned_primary_key_without_a_flush(engine: Engine) -> None:
    doc = Document(id=uuid.uuid4(), title="assigned")
    ref = doc.set_content(b"x")
    assert str(doc.id) in ref.location


def test_a_model_without_a_manager_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Document, "__storage_manager__", None)
    with pytest.raises(ConfigurationError, match=r"Document.configure_storage_manager\(manager\)"):
        Document(id=uuid.uuid4(), title="t").set_content(b"x")


def test_a_mixin_model_must_name_its_field(orm_manager: StorageManager) -> None:
    from granite_storage import StoredContentMixin

    class Incomplete(StoredContentMixin):
        __storage_manager__ = orm_manager

    with pytest.raises(ConfigurationError, match="__stored_content_field_name__"):
        Incomplete().set_content(b"x")


def test_configure_storage_manager_takes_only_a_manager() -> None:
    with pytest.raises(TypeError, match="StorageManager"):
        Document.configure_storage_manager("not a manager")  # type: ignore[arg-type]


def test_a_model_can_override_its_bases_manager(orm_manager: StorageManager, tmp_path: Path) -> None:
    other = StorageManager(
        backends=dict(orm_manager.backends), policies=dict(orm_manager.policies), plugins=orm_manager.plugins
    )
    Document.configure_storage_manager(other)
    try:
        assert Document.__storage_manager__ is other
        assert User.__storage_manager__ is orm_manager  # type: ignore[attr-defined]
    finally:
        del Document.__storage_manager__


# -- several file fields ----------------------------------------------------------------------------


def test_each_field_stores_in_its_own_slot_under_its_own_name(engine: Engine, storage_root: Path) -> None:
    with Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        session.flush()
        avatar = user.avatar.set_content(b"PNG avatar", filename="me.png")
        thumb = user.thumbnail.set_content(b"PNG thumb", filename="me.png")
        session.commit()
        user_id = user.id

    assert avatar.storage_key == "avatars"
    assert avatar.location.startswith("avatars/user_account/avatar/")
    assert thumb.storage_key == "thumbnails"
    assert thumb.location.startswith("thumbnails/user_account/thumbnail/")
    with Session(engine) as session:
        loaded = session.get(User, user_id)
        assert loaded is not None
        assert loaded.avatar.get_content() == b"PNG avatar"
        assert loaded.thumbnail.get_content() == b"PNG thumb"
        assert loaded.avatar.content_ref == loaded.avatar_ref
        assert loaded.avatar.content_ref is not None
        assert loaded.avatar.content_ref.content_type == "image/png"


def test_each_field_enforces_its_own_slots_limit(engine: Engine) -> None:
    big = b"x" * (2 * 1024 * 1024 + 1)
    with Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        session.flush()
        with pytest.raises(ContentTooLargeError):
            user.avatar.set_content(big)
        assert user.thumbnail.set_content(big).size == len(big)  # thumbnails has no limit
        assert user.avatar_ref is None


def test_fields_offer_every_operation_of_the_mixin(engine: Engine) -> None:
    with Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        session.flush()
        first = user.avatar.set_content("hello")
        assert user.avatar.get_content_text() == "hello"
        result = user.avatar.replace_content(b"again")
        assert result.previous_ref == first
        assert user.avatar.clear_content_reference() == result.new_ref
        assert user.avatar_ref is None
        assert user.thumbnail_ref is None


def test_the_field_descriptor_on_the_class_is_the_declaration() -> None:
    assert isinstance(User.avatar, StoredContent)
    assert User.avatar.ref_attribute == "avatar_ref"
    assert User.avatar.storage_key == "avatars"
    assert isinstance(User(name="x").avatar, BoundStoredContent)


def test_rows_without_content_are_found_with_is_null(engine: Engine) -> None:
    with Session(engine) as session:
        with_file = new_document(session, "with")
        with_file.set_content(b"x")
        new_document(session, "without")
        session.commit()
        titles = session.scalars(select(Document.title).where(Document._file_ref.is_(None))).all()
        assert titles == ["without"]
        raw = session.execute(text("SELECT COUNT(*) FROM document WHERE _file_ref IS NULL")).scalar_one()
        assert raw == 1


def test_the_base_configures_every_model(orm_manager: StorageManager) -> None:
    assert Base.__storage_manager__ is orm_manager  # type: ignore[attr-defined]
    assert Document.__storage_manager__ is orm_manager
