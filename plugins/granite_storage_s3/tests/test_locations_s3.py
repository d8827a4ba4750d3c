"""A slot moved between local disk and S3: references in the previous location keep working."""

from __future__ import annotations

import urllib.request
from datetime import timedelta
from pathlib import Path

from granite_storage import PluginHost, StorageLocation, StorageManager, StoragePolicy, StoredObjectRef
from granite_storage_local import LocalStorageBackend

from .conftest import S3Server


def store(manager: StorageManager, content: bytes) -> StoredObjectRef:
    return manager.put_bytes(
        storage_key="documents",
        model_name="document",
        entity_id="7",
        field_name="file",
        content=content,
        original_filename="report.pdf",
    )


def test_a_slot_moved_from_s3_to_local_disk_still_presigns_and_deletes_its_s3_objects(
    real_s3: S3Server, tmp_path: Path
) -> None:
    bucket = real_s3.backend()
    host = PluginHost(strict=False, disabled=())
    before = StorageManager(
        backends={"bucket": bucket},
        policies={"documents": StoragePolicy("documents", backend_key="bucket", key_prefix="docs")},
        plugins=host,
    )
    old_ref = store(before, b"stored on S3")
    after = StorageManager(
        backends={"bucket": bucket, "disk": LocalStorageBackend(tmp_path / "disk")},
        policies={
            "documents": StoragePolicy(
                "documents",
                backend_key="disk",
                key_prefix="docs",
                previous_locations=[StorageLocation("bucket")],
            )
        },
        plugins=host,
    )
    with urllib.request.urlopen(after.url(old_ref, expires_in=timedelta(minutes=5)), timeout=10) as response:
        assert response.read() == b"stored on S3"
    assert after.get(old_ref) == b"stored on S3"
    assert after.verify(old_ref)
    assert after.location_of(old_ref) == StorageLocation("bucket", "docs")

    new_ref = store(after, b"stored on disk")
    assert (tmp_path / "disk" / new_ref.location).read_bytes() == b"stored on disk"
    assert not bucket.exists(new_ref.location)

    after.delete(old_ref)
    assert not bucket.exists(old_ref.location)


def test_a_slot_moved_from_local_disk_to_s3_reads_its_files_and_stores_in_the_bucket(
    s3: S3Server, tmp_path: Path
) -> None:
    disk = LocalStorageBackend(tmp_path / "disk")
    host = PluginHost(strict=False, disabled=())
    before = StorageManager(
        backends={"files": disk},
        policies={"documents": StoragePolicy("documents", backend_key="files")},
        plugins=host,
    )
    old_ref = store(before, b"stored on disk")
    bucket = s3.backend()
    after = StorageManager(
        backends={"files": disk, "s3": bucket},
        policies={
            "documents": StoragePolicy(
                "documents", backend_key="s3", previous_locations=[StorageLocation("files")]
            )
        },
        plugins=host,
    )
    with after.open(old_ref, start=7) as stream:
        assert stream.read() == b"on disk"
    new_ref = store(after, b"stored on S3")
    assert bucket.get(new_ref.location) == b"stored on S3"
    assert (
        after.location_of(new_ref) == after.policy("documents").location == StorageLocation("s3", "documents")
    )
    assert after.url(new_ref, expires_in=timedelta(minutes=5)).startswith("http")
