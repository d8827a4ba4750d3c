"""The same model code on S3: swapping the backend is configuration, tracking included (moto in-process).

The S3 plugin's own tests cover the backend against a real server; this checks that nothing in the
SQLAlchemy integration assumes local disk.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from granite_storage import PluginHost, StorageManager, track_storage
from granite_storage.orm import configure_storage_manager

from .models import Base, Document

pytest.importorskip("granite_storage_s3", reason="the S3 plugin is not installed")
moto = pytest.importorskip("moto", reason="moto is not installed")

BUCKET = "granite-models"


@pytest.fixture
def s3_manager(monkeypatch: pytest.MonkeyPatch, plugin_host: PluginHost) -> Iterator[StorageManager]:
    """A manager built from configuration whose documents live in an (in-process) S3 bucket."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    with moto.mock_aws():
        manager = StorageManager.from_config(
            {
                "backends": {
                    "files": {"type": "s3", "bucket": BUCKET, "prefix": "app", "region_name": "us-east-1"}
                },
                "policies": {"documents": {"backend": "files", "max_size": "10MB", "delete_replaced": True}},
            },
            plugins=plugin_host,
        )
        manager.backend("files").client.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
        yield manager


def keys_in_bucket(manager: StorageManager) -> list[str]:
    return sorted(info.key for info in manager.backend("files").list())


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_models_store_on_s3_and_follow_the_transaction(engine: Engine, s3_manager: StorageManager) -> None:
    Base.metadata.create_all(engine)
    configure_storage_manager(Document, s3_manager)
    try:
        sessions = sessionmaker(engine)
        track_storage(sessions)
        with sessions() as session:
            doc = Document(title="on S3")
            session.add(doc)
            session.flush()
            first = doc.set_content(b"%PDF first", filename="report.pdf")
            session.commit()
            assert keys_in_bucket(s3_manager) == [first.location]

            doc.replace_content(b"%PDF second", filename="report.pdf")
            session.rollback()  # the second object goes, the first stays
            assert keys_in_bucket(s3_manager) == [first.location]

            second = doc.replace_content(b"%PDF third", filename="report.pdf").new_ref
            session.commit()  # delete_replaced: the first goes after the commit
            assert keys_in_bucket(s3_manager) == [second.location]
            doc_id = doc.id

        with Session(engine) as session:
            loaded = session.get(Document, doc_id)
            assert loaded is not None
            assert loaded.get_content() == b"%PDF third"
            assert s3_manager.verify(loaded._file_ref)  # type: ignore[arg-type]
    finally:
        del Document.__storage_manager__
        Base.metadata.drop_all(engine)
