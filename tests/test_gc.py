"""The garbage collector on the real local backend: what it deletes, what it never touches."""

from __future__ import annotations

import dataclasses
import io
import os
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from granite_storage import (
    ConfigurationError,
    GarbageCollectionReport,
    InvalidReferenceError,
    PluginHost,
    StorageError,
    StorageGarbageCollector,
    StorageManager,
    StoragePermissionError,
    StoragePolicy,
    StoredObjectRef,
    hookimpl,
)
from granite_storage.gc import GarbageCollectionProgress
from granite_storage_local import LocalStorageBackend

from .conftest import files_under

DAY = 24 * 3600


def store(
    manager: StorageManager, storage_key: str, content: bytes = b"x", *, age: float = DAY
) -> StoredObjectRef:
    """Store an object and make it ``age`` seconds old (a day by default: past any grace period)."""
    ref = manager.put_bytes(
        storage_key=storage_key, model_name="doc", entity_id="1", field_name="file", content=content
    )
    backend = manager.backend(ref.backend)
    assert isinstance(backend, LocalStorageBackend)
    moment = time.time() - age
    os.utime(backend.root / ref.location, (moment, moment))
    return ref


def refs_of(*refs: StoredObjectRef) -> Iterator[StoredObjectRef]:
    return iter(refs)


def stored(manager: StorageManager, ref: StoredObjectRef) -> bool:
    return manager.exists(ref)


def test_dry_run_is_the_default_and_deletes_nothing(manager: StorageManager) -> None:
    kept, orphan = store(manager, "documents"), store(manager, "documents")
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(kept))
    report = gc.collect(storage_key="documents")
    assert report.dry_run
    assert (report.scanned, report.referenced, report.orphaned, report.deleted) == (2, 1, 1, 0)
    assert report.orphan_sample == (orphan.location,)
    assert stored(manager, kept)
    assert stored(manager, orphan)


def test_deleting_removes_old_orphans_and_keeps_every_referenced_object(manager: StorageManager) -> None:
    kept = [store(manager, "documents", b"kept %d" % n) for n in range(5)]
    orphans = [store(manager, "documents", b"orphan %d" % n) for n in range(7)]
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: iter(kept))
    report = gc.collect(storage_key="documents", dry_run=False)
    assert (report.scanned, report.referenced, report.orphaned, report.deleted, report.failed) == (
        12,
        5,
        7,
        7,
        0,
    )
    assert report.ok
    assert all(manager.get(ref) == b"kept %d" % n for n, ref in enumerate(kept))
    assert not any(stored(manager, ref) for ref in orphans)
    assert sorted(report.orphan_sample) == sorted(ref.location for ref in orphans)


def test_unreferenced_objects_younger_than_the_grace_period_are_kept_and_counted(
    manager: StorageManager,
) -> None:
    young = store(manager, "documents", age=10 * 60)  # ten minutes: inside the default hour
    old = store(manager, "documents", age=2 * 3600)
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of())
    assert gc.min_age == timedelta(hours=1)
    report = gc.collect(storage_key="documents", dry_run=False)
    assert (report.skipped_too_young, report.orphaned, report.deleted) == (1, 1, 1)
    assert stored(manager, young)
    assert not stored(manager, old)


def test_an_object_stamped_in_the_future_is_too_young(manager: StorageManager) -> None:
    skewed = store(manager, "documents", age=-3600)  # a clock an hour ahead wrote it
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(), min_age=timedelta(0))
    report = gc.collect(storage_key="documents", dry_run=False)
    assert report.skipped_too_young == 1
    assert stored(manager, skewed)


def test_the_grace_period_is_configurable_and_overridable_per_run(manager: StorageManager) -> None:
    ref = store(manager, "documents", age=10 * 60)
    gc = StorageGarbageCollector(
        manager=manager, iter_references=lambda: refs_of(), min_age=timedelta(minutes=5)
    )
    assert gc.collect(storage_key="documents", min_age=timedelta(minutes=30)).skipped_too_young == 1
    report = gc.collect(storage_key="documents")
    assert (report.min_age, report.orphaned) == (timedelta(minutes=5), 1)
    report = gc.collect(storage_key="documents", dry_run=False, min_age=timedelta(0))
    assert report.deleted == 1
    assert not stored(manager, ref)


def test_an_injected_clock_ages_objects_and_dates_the_report(manager: StorageManager) -> None:
    kept = store(manager, "documents", age=0)
    fresh = store(manager, "documents", age=0)
    later = datetime.now(UTC) + timedelta(hours=2)
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(kept), clock=lambda: later)
    report = gc.collect(storage_key="documents", dry_run=False)  # the default grace period: an hour
    assert report.started_at == later
    assert (report.referenced, report.skipped_too_young, report.deleted) == (1, 0, 1)
    assert stored(manager, kept)
    assert not stored(manager, fresh)


def test_the_clock_is_read_once_per_run_and_may_use_any_time_zone(manager: StorageManager) -> None:
    young = store(manager, "documents", age=0)
    readings: list[datetime] = []

    def clock() -> datetime:
        readings.append(datetime.now(timezone(timedelta(hours=-5))))
        return readings[-1]

    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(), clock=clock)
    report = gc.collect(storage_key="documents", dry_run=False)
    assert len(readings) == 1
    assert report.started_at == readings[0]
    assert report.started_at.tzinfo == UTC
    assert report.skipped_too_young == 1
    assert stored(manager, young)


def test_a_clock_that_is_not_callable_or_returns_a_naive_time_is_refused(manager: StorageManager) -> None:
    with pytest.raises(TypeError, match="clock"):
        StorageGarbageCollector(
            manager=manager,
            iter_references=lambda: refs_of(),
            clock=datetime.now(UTC),  # type: ignore[arg-type]  # a time, not a clock
        )
    kept = store(manager, "documents")
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(), clock=datetime.now)
    with pytest.raises(ValueError, match="timezone-aware"):
        gc.collect(storage_key="documents", dry_run=False)
    assert stored(manager, kept)


@pytest.mark.parametrize("min_age", [timedelta(seconds=-1), timedelta(days=-1)])
def test_a_negative_grace_period_is_refused(manager: StorageManager, min_age: timedelta) -> None:
    with pytest.raises(ValueError, match="negative"):
        StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(), min_age=min_age)
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of())
    with pytest.raises(ValueError, match="negative"):
        gc.collect(storage_key="documents", min_age=min_age)


def test_prefixes_are_path_segments_collecting_docs_never_touches_docs2(
    local_backend: LocalStorageBackend, empty_host: PluginHost
) -> None:
    manager = StorageManager(
        backends={"local": local_backend},
        policies={
            "documents": StoragePolicy("documents", backend_key="local", key_prefix="docs"),
            "documents2": StoragePolicy("documents2", backend_key="local", key_prefix="docs2"),
        },
        plugins=empty_host,
    )
    neighbours = [store(manager, "documents2") for _ in range(3)]
    orphan = store(manager, "documents")
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of())
    report = gc.collect(storage_key="documents", dry_run=False)
    assert (report.scanned, report.deleted) == (1, 1)
    assert not stored(manager, orphan)
    assert all(stored(manager, ref) for ref in neighbours)


def test_a_slot_without_key_prefix_collects_only_its_own_namespace(
    local_backend: LocalStorageBackend, empty_host: PluginHost
) -> None:
    manager = StorageManager(
        backends={"local": local_backend},
        policies={
            "thumbnails": StoragePolicy("thumbnails", backend_key="local"),
            "documents": StoragePolicy("documents", backend_key="local", key_prefix="docs"),
        },
        plugins=empty_host,
    )
    other = store(manager, "documents")
    local_backend.put("stray/file.bin", io.BytesIO(b"not any slot's"))  # someone else's file on the backend
    orphan = store(manager, "thumbnails")
    assert orphan.location.startswith("thumbnails/")
    report = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of()).collect(
        storage_key="thumbnails", dry_run=False
    )
    assert (report.prefix, report.scanned, report.deleted) == ("thumbnails", 1, 1)
    assert stored(manager, other)
    assert local_backend.exists("stray/file.bin")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("media", "media/thumbs"),  # nested
        ("media", "Media"),  # one directory on some file systems
        (None, "first"),  # the default namespace is the storage key
    ],
)
def test_overlapping_slots_on_one_backend_are_refused_before_any_collection(
    local_backend: LocalStorageBackend, empty_host: PluginHost, first: str | None, second: str
) -> None:
    with pytest.raises(ConfigurationError, match="overlapping key prefixes"):
        StorageManager(
            backends={"local": local_backend},
            policies={
                "first": StoragePolicy("first", backend_key="local", key_prefix=first),
                "second": StoragePolicy("second", backend_key="local", key_prefix=second),
            },
            plugins=empty_host,
        )


def test_references_from_several_sources_feed_one_collection(manager: StorageManager) -> None:
    by_documents, by_attachments = store(manager, "documents"), store(manager, "documents")
    orphan = store(manager, "documents")
    gc = StorageGarbageCollector(
        manager=manager, iter_references=[lambda: refs_of(by_documents), lambda: refs_of(by_attachments)]
    )
    report = gc.collect(storage_key="documents", dry_run=False)
    assert (report.references, report.referenced, report.deleted) == (2, 2, 1)
    assert stored(manager, by_documents)
    assert stored(manager, by_attachments)
    assert not stored(manager, orphan)


def test_a_reference_of_another_slot_neither_protects_nor_condemns(manager: StorageManager) -> None:
    orphan = store(manager, "documents")
    avatar = store(manager, "avatars")
    # A tampered avatars row pointing into the documents slot: it does not keep the object alive...
    foreign = StoredObjectRef(storage_key="avatars", backend="local", location=orphan.location, size=1)
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(foreign, avatar))
    report = gc.collect(storage_key="documents", dry_run=False)
    assert (report.references, report.ignored_references, report.deleted) == (0, 2, 1)
    assert not stored(manager, orphan)
    # ...and collecting documents never looked at, let alone deleted, the avatars slot's objects.
    assert stored(manager, avatar)
    report = gc.collect(storage_key="avatars", dry_run=False)
    assert (report.scanned, report.referenced, report.deleted) == (1, 1, 0)


def test_a_reference_naming_a_renamed_backend_or_an_unknown_slot_still_protects(
    manager: StorageManager,
) -> None:
    renamed, unknown_slot, orphan = (store(manager, "documents") for _ in range(3))
    refs = [
        StoredObjectRef(storage_key="documents", backend="old-name", location=renamed.location, size=1),
        StoredObjectRef(storage_key="retired", backend="local", location=unknown_slot.location, size=1),
    ]
    report = StorageGarbageCollector(manager=manager, iter_references=lambda: iter(refs)).collect(
        storage_key="documents", dry_run=False
    )
    assert (report.referenced, report.deleted) == (2, 1)
    assert stored(manager, renamed)
    assert stored(manager, unknown_slot)
    assert not stored(manager, orphan)


class RefusingBackend(LocalStorageBackend):
    """The real local backend, except that deleting the keys in ``refused`` fails."""

    def __init__(self, root: Path, refused: set[str]) -> None:
        super().__init__(root)
        self.refused = refused
        self.batches: list[int] = []

    def delete(self, key: str) -> None:
        if key in self.refused:
            raise StoragePermissionError(f"local storage denied access to {key!r}: Permission denied")
        super().delete(key)

    def delete_many(self, keys: Sequence[str]) -> dict[str, Exception]:
        self.batches.append(len(keys))
        return dict(super().delete_many(keys))


def refusing_manager(backend: LocalStorageBackend, host: PluginHost) -> StorageManager:
    return StorageManager(
        backends={"local": backend},
        policies={"documents": StoragePolicy("documents", backend_key="local", key_prefix="docs")},
        plugins=host,
    )


def test_a_failed_deletion_is_recorded_and_the_run_goes_on(tmp_path: Path, empty_host: PluginHost) -> None:
    refused: set[str] = set()
    backend = RefusingBackend(tmp_path / "storage", refused)
    manager = refusing_manager(backend, empty_host)
    orphans = [store(manager, "documents") for _ in range(5)]
    refused.add(orphans[2].location)
    report = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of()).collect(
        storage_key="documents", dry_run=False
    )
    assert (report.orphaned, report.deleted, report.failed, report.ok) == (5, 4, 1, False)
    assert [failure.key for failure in report.failures] == [orphans[2].location]
    assert report.failures[0].error.startswith("StoragePermissionError: local storage denied access")
    assert [stored(manager, ref) for ref in orphans] == [False, False, True, False, False]


def test_deletes_go_in_batches(tmp_path: Path, empty_host: PluginHost) -> None:
    backend = RefusingBackend(tmp_path / "storage", set())
    manager = refusing_manager(backend, empty_host)
    for _ in range(10):
        store(manager, "documents")
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(), batch_size=4)
    assert gc.collect(storage_key="documents", dry_run=False).deleted == 10
    assert backend.batches == [4, 4, 2]
    assert files_under(backend.root) == []


def test_the_report_lists_a_bounded_sample_and_complete_counts(
    tmp_path: Path, empty_host: PluginHost
) -> None:
    backend = RefusingBackend(tmp_path / "storage", set())
    manager = refusing_manager(backend, empty_host)
    orphans = [store(manager, "documents") for _ in range(10)]
    backend.refused.update(ref.location for ref in orphans)
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(), sample_size=3)
    report = gc.collect(storage_key="documents", dry_run=False)
    assert (report.orphaned, report.failed, len(report.orphan_sample), len(report.failures)) == (10, 10, 3, 3)
    assert set(report.orphan_sample) <= {ref.location for ref in orphans}


def test_a_bad_reference_stops_the_run_before_anything_is_deleted(manager: StorageManager) -> None:
    orphan = store(manager, "documents")

    def rows() -> Iterator[StoredObjectRef]:
        yield store(manager, "documents")
        raise InvalidReferenceError("stored reference lacks 'location'")

    with pytest.raises(InvalidReferenceError):
        StorageGarbageCollector(manager=manager, iter_references=rows).collect(
            storage_key="documents", dry_run=False
        )
    assert stored(manager, orphan)


def test_an_unknown_slot_is_a_configuration_error(manager: StorageManager) -> None:
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of())
    with pytest.raises(ConfigurationError, match="no storage policy"):
        gc.collect(storage_key="nope")


def test_a_listing_that_fails_stops_the_run(tmp_path: Path, empty_host: PluginHost) -> None:
    class BrokenListing(LocalStorageBackend):
        def list(self, prefix: str = "") -> Iterator[object]:  # type: ignore[override]
            raise StorageError("the listing broke")
            yield  # pragma: no cover

    manager = refusing_manager(BrokenListing(tmp_path / "storage"), empty_host)
    with pytest.raises(StorageError, match="listing broke"):
        StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of()).collect(
            storage_key="documents", dry_run=False
        )


def test_progress_is_reported_for_both_phases(manager: StorageManager) -> None:
    refs = [store(manager, "documents") for _ in range(3)]
    seen: list[GarbageCollectionProgress] = []
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: iter(refs), progress=seen.append)
    gc.collect(storage_key="documents")
    assert seen[0].phase == "references"
    assert (seen[-1].phase, seen[-1].references, seen[-1].scanned) == ("objects", 3, 3)


def test_the_report_is_frozen_and_serialisable(manager: StorageManager) -> None:
    store(manager, "documents")
    report = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of()).collect(
        storage_key="documents"
    )
    assert isinstance(report, GarbageCollectionReport)
    with pytest.raises(AttributeError):
        report.deleted = 5  # type: ignore[misc]
    data = report.to_dict()
    assert data["orphaned"] == 1
    assert data["min_age_seconds"] == 3600
    assert data["dry_run"] is True


def test_incomplete_uploads_are_removed_only_on_request_and_never_in_a_dry_run(
    manager: StorageManager, local_backend: LocalStorageBackend
) -> None:
    leftover = local_backend.root / "docs" / ".granite-0123456789abcdef.part"
    # Another slot's upload, running for a day: never this slot's to abort.
    theirs = local_backend.root / "docs2" / "x" / ".granite-fedcba9876543210.part"
    for path in (leftover, theirs):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"half an upload")
        os.utime(path, (time.time() - DAY, time.time() - DAY))
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of())
    assert (
        gc.collect(storage_key="documents", remove_incomplete_uploads=True).incomplete_uploads_removed is None
    )
    assert gc.collect(storage_key="documents", dry_run=False).incomplete_uploads_removed is None
    assert leftover.exists()
    report = gc.collect(storage_key="documents", dry_run=False, remove_incomplete_uploads=True)
    assert report.incomplete_uploads_removed == 1
    assert not leftover.exists()
    assert theirs.exists()


def test_referenced_keys_take_about_eight_bytes_each(manager: StorageManager) -> None:
    """Memory stays bounded: 50,000 references take under 1 MiB (a set of the keys would take 6)."""
    count = 50_000

    def many() -> Iterator[StoredObjectRef]:
        for n in range(count):
            yield StoredObjectRef(
                storage_key="documents", backend="local", location=f"docs/doc/{n}/file/{n:032x}.pdf", size=1
            )

    gc = StorageGarbageCollector(manager=manager, iter_references=many)
    tracemalloc.start()
    try:
        report = gc.collect(storage_key="documents")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.references == count
    assert peak < 1024 * 1024, f"{peak / 1024 / 1024:.1f} MiB for {count} references"


class TenantPolicies:
    """A plugin resolving slots at run time, whose prefixes overlap (``tenants``, ``tenants/2``)."""

    @hookimpl
    def granite_storage_resolve_policy(
        self, storage_key: str, manager: StorageManager
    ) -> StoragePolicy | None:
        prefixes = {"all-tenants": "tenants", "tenant-2": "tenants/2"}
        if storage_key not in prefixes:
            return None
        return StoragePolicy(storage_key, backend_key="local", key_prefix=prefixes[storage_key])


def test_slots_a_plugin_resolves_with_overlapping_prefixes_are_refused_when_their_rows_show_it(
    local_backend: LocalStorageBackend,
) -> None:
    host = PluginHost(strict=False, disabled=())
    host.register(TenantPolicies(), name="tenants")
    manager = StorageManager(backends={"local": local_backend}, policies={}, plugins=host)
    tenant = store(manager, "tenant-2")
    old = store(manager, "all-tenants")
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(tenant))
    with pytest.raises(ConfigurationError, match="overlapping key prefixes 'tenants' and 'tenants/2'"):
        gc.collect(storage_key="all-tenants", dry_run=False)
    assert stored(manager, tenant)
    assert stored(manager, old)


def test_a_key_listed_in_another_letter_case_than_its_reference_is_kept(manager: StorageManager) -> None:
    # On a case-insensitive file system (macOS, Windows), an upload for entity "alice" lands in the
    # directory that entity "Alice" created first, and the listing returns the directory's case.
    first = manager.put_bytes(
        storage_key="documents", model_name="user", entity_id="Alice", field_name="file", content=b"A"
    )
    second = store(manager, "documents")
    backend = manager.backend(second.backend)
    assert isinstance(backend, LocalStorageBackend)
    listed_as = second.location.replace("/doc/1/", "/user/Alice/")
    (backend.root / listed_as).parent.mkdir(parents=True, exist_ok=True)
    os.replace(backend.root / second.location, backend.root / listed_as)
    live = dataclasses.replace(second, location=listed_as.replace("/Alice/", "/alice/"))
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(first, live))
    report = gc.collect("documents", dry_run=False)
    assert (report.referenced, report.orphaned) == (2, 0)
    assert (backend.root / listed_as).exists()


def test_a_reference_written_under_the_prefix_in_another_case_still_protects(manager: StorageManager) -> None:
    # key_prefix "Docs" renamed "docs" in the configuration: on a case-insensitive file system both
    # name one directory, and the rows written before still point at their files.
    ref = store(manager, "documents")
    written_before = dataclasses.replace(ref, location="Docs" + ref.location.removeprefix("docs"))
    gc = StorageGarbageCollector(manager=manager, iter_references=lambda: refs_of(written_before))
    report = gc.collect("documents", dry_run=False)
    assert (report.references, report.referenced, report.orphaned) == (1, 1, 0)
    assert stored(manager, ref)
