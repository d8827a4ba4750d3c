"""The garbage collector on S3 (moto and the real server): batch deletes, and only the slot's prefix."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from granite_storage import (
    PluginHost,
    StorageGarbageCollector,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
)
from granite_storage_s3.testing import S3Server

from .test_s3_backend import operations, recording_backend


@pytest.fixture
def calls() -> list[tuple[str, dict[str, Any]]]:
    """The S3 operations a recording backend sends, with their parameters."""
    return []


def test_collection_deletes_orphans_in_one_request_per_batch_and_keeps_the_rest(
    s3: S3Server, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    backend = recording_backend(s3, calls)
    manager = StorageManager(
        backends={"bucket": backend},
        policies={
            "documents": StoragePolicy("documents", backend_key="bucket", key_prefix="docs"),
            "documents2": StoragePolicy("documents2", backend_key="bucket", key_prefix="docs2"),
        },
        plugins=PluginHost(strict=False, disabled=()),
    )

    def store(storage_key: str) -> StoredObjectRef:
        return manager.put_bytes(
            storage_key=storage_key, model_name="doc", entity_id="1", field_name="file", content=b"x"
        )

    kept = [store("documents") for _ in range(3)]
    orphans = [store("documents") for _ in range(5)]
    neighbours = [store("documents2") for _ in range(2)]
    backend.put("outside/any-slot.bin", io.BytesIO(b"not a slot's"))
    calls.clear()
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: iter(kept), min_age=timedelta(0))
    report = gc.collect(storage_key="documents", dry_run=False)

    assert (report.scanned, report.referenced, report.orphaned, report.deleted) == (8, 3, 5, 5)
    assert [name for name in operations(calls) if name != "ListObjectsV2"] == ["DeleteObjects"]
    [(_, params)] = [call for call in calls if call[0] == "DeleteObjects"]
    assert sorted(item["Key"] for item in params["Delete"]["Objects"]) == sorted(
        f"{backend.prefix}/{ref.location}" for ref in orphans
    )
    assert sorted(info.key for info in backend.list()) == sorted(
        [*(ref.location for ref in [*kept, *neighbours]), "outside/any-slot.bin"]
    )


def test_a_clock_set_ahead_ages_objects_that_s3_dated_just_now(s3: S3Server) -> None:
    # S3 dates an object when it is written and offers no way to back-date it, unlike a local file's
    # mtime: a test ages objects by running the collector on a clock set ahead.
    manager = StorageManager(
        backends={"bucket": s3.backend()},
        policies={"documents": StoragePolicy("documents", backend_key="bucket", key_prefix="docs")},
        plugins=PluginHost(strict=False, disabled=()),
    )
    kept, orphan = (
        manager.put_bytes(
            storage_key="documents", model_name="doc", entity_id="1", field_name="file", content=b"x"
        )
        for _ in range(2)
    )
    now = StorageGarbageCollector(manager=manager, iter_references=lambda: iter([kept]))
    assert now.collect(storage_key="documents", dry_run=False).skipped_too_young == 1

    later = datetime.now(UTC) + timedelta(days=1)
    ahead = StorageGarbageCollector(
        manager=manager, iter_references=lambda: iter([kept]), clock=lambda: later
    )
    report = ahead.collect(storage_key="documents", dry_run=False)
    assert (report.started_at, report.referenced, report.orphaned, report.deleted) == (later, 1, 1, 1)
    assert manager.exists(kept)
    assert not manager.exists(orphan)
