"""A slot moved between local disk and S3: references in the previous location keep working."""

from __future__ import annotations

import io
import urllib.request
from datetime import timedelta
from pathlib import Path

from granite_storage import (
    PluginHost,
    StorageGarbageCollector,
    StorageLocation,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
)
from granite_storage_local import LocalStorageBackend
from granite_storage_s3 import S3StorageBackend
from granite_storage_s3.testing import S3Server


def store(manager: StorageManager, content: bytes) -> StoredObjectRef:
    return manager.put_bytes(
        storage_key="documents",
        model_name="document",
        entity_id="7",
        field_name="file",
        content=content,
        original_filename="report.pdf",
    )


def moved_to_disk(bucket: S3StorageBackend, tmp_path: Path, host: PluginHost) -> StorageManager:
    """``documents`` (prefix ``docs``) moved from ``bucket`` to disk; the bucket is a previous location."""
    policy = StoragePolicy(
        "documents", backend_key="disk", key_prefix="docs", previous_locations=[StorageLocation("bucket")]
    )
    return StorageManager(
        backends={"bucket": bucket, "disk": LocalStorageBackend(tmp_path / "disk")},
        policies={"documents": policy},
        plugins=host,
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
    after = moved_to_disk(bucket, tmp_path, host)
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


def test_collection_of_a_moved_slot_deletes_orphans_in_the_previous_bucket_and_keeps_referenced_ones(
    s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.backend()
    host = PluginHost(strict=False, disabled=())
    before = StorageManager(
        backends={"bucket": bucket},
        policies={"documents": StoragePolicy("documents", backend_key="bucket", key_prefix="docs")},
        plugins=host,
    )
    kept, orphan = store(before, b"referenced"), store(before, b"orphaned")
    after = moved_to_disk(bucket, tmp_path, host)
    gc = StorageGarbageCollector(manager=after, iter_references=lambda: [kept], min_age=timedelta(0))
    assert gc.collect("documents", dry_run=False).scanned == 0  # the current location only: empty
    assert bucket.exists(orphan.location)
    report = gc.collect("documents", dry_run=False, previous_locations=True)
    assert (report.scanned, report.referenced, report.deleted) == (2, 1, 1)
    assert not bucket.exists(orphan.location)
    assert after.get(kept) == b"referenced"


def test_collection_of_a_slot_without_key_prefix_keeps_its_0_1_0_objects_on_s3(s3: S3Server) -> None:
    bucket = s3.backend()
    legacy_key = "document/5f0c6ffc-7fe8-4c3a-8468-29e03b6bb76f-1a2b3c4d.pdf"
    bucket.put(legacy_key, io.BytesIO(b"%PDF 0.1.0"))
    manager = StorageManager(
        backends={"s3": bucket},
        policies={"documents": StoragePolicy("documents", backend_key="s3")},
        plugins=PluginHost(strict=False, disabled=()),
    )
    row = {
        "storage_key": "documents",
        "backend": "s3",
        "location": legacy_key,
        "size": 10,
        "checksum": "",
        "content_type": "application/pdf",
        "original_filename": "report.pdf",
        "created_at": "2025-06-01T12:30:00",
        "extra": {"bucket": s3.bucket},
    }
    legacy = StoredObjectRef.from_dict(row)
    orphan = store(manager, b"lost")
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: [legacy], min_age=timedelta(0))
    report = gc.collect("documents", dry_run=False, previous_locations=True)
    assert (report.scanned, report.deleted) == (1, 1)
    assert not bucket.exists(orphan.location)
    assert manager.get(legacy) == b"%PDF 0.1.0"
