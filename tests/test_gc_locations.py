"""Garbage collection of a slot with previous locations: what is listed, kept, deleted and skipped."""

from __future__ import annotations

import importlib
import io
import json
import os
import secrets
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from granite_storage import (
    PluginHost,
    StorageGarbageCollector,
    StorageLocation,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
    hookimpl,
)
from granite_storage.cli import EXIT_OK
from granite_storage.cli._commands import cli
from granite_storage.gc import GarbageCollectionReport, SkippedLocation
from granite_storage_local import LocalStorageBackend

from .test_cli import MODELS

DAY = 24 * 3600


def aged(manager: StorageManager, backend: str, ref: StoredObjectRef) -> StoredObjectRef:
    root = manager.backend(backend)
    assert isinstance(root, LocalStorageBackend)
    moment = time.time() - DAY
    os.utime(root.root / ref.location, (moment, moment))
    return ref


def store(
    manager: StorageManager, storage_key: str, content: bytes = b"x", *, backend: str
) -> StoredObjectRef:
    ref = manager.put_bytes(
        storage_key=storage_key, model_name="document", entity_id="1", field_name="file", content=content
    )
    return aged(manager, backend, ref)


def collect(
    manager: StorageManager,
    refs: Iterable[StoredObjectRef],
    storage_key: str = "documents",
    **options: object,
) -> GarbageCollectionReport:
    listed = list(refs)
    gc = StorageGarbageCollector(
        manager=manager, iter_references=lambda: iter(listed), min_age=timedelta(hours=1)
    )
    return gc.collect(storage_key, dry_run=False, **options)  # type: ignore[arg-type]


@pytest.fixture
def backends(tmp_path: Path) -> dict[str, LocalStorageBackend]:
    return {"old": LocalStorageBackend(tmp_path / "old"), "new": LocalStorageBackend(tmp_path / "new")}


def before_and_after(
    backends: dict[str, LocalStorageBackend], host: PluginHost, **previous: object
) -> tuple[StorageManager, StorageManager]:
    """``documents`` on ``old`` (prefix ``docs``), then moved to ``new``, ``old`` its previous location."""
    before = StorageManager(
        backends={"old": backends["old"]},
        policies={"documents": StoragePolicy("documents", backend_key="old", key_prefix="docs")},
        plugins=host,
    )
    after = StorageManager(
        backends=backends,
        policies={
            "documents": StoragePolicy(
                "documents", backend_key="new", key_prefix="docs", previous_locations=[StorageLocation("old")]
            ),
            **previous,  # type: ignore[dict-item]
        },
        plugins=host,
    )
    return before, after


def test_by_default_only_the_current_location_is_collected(
    backends: dict[str, LocalStorageBackend], empty_host: PluginHost
) -> None:
    before, after = before_and_after(backends, empty_host)
    kept_old, orphan_old = (
        store(before, "documents", backend="old"),
        store(before, "documents", backend="old"),
    )
    kept_new, orphan_new = store(after, "documents", backend="new"), store(after, "documents", backend="new")
    report = collect(after, [kept_old, kept_new])
    assert report.locations == (StorageLocation("new", "docs"),)
    assert (report.scanned, report.referenced, report.deleted) == (2, 1, 1)
    assert not after.exists(orphan_new)
    assert all(after.exists(ref) for ref in (kept_old, orphan_old, kept_new))


def test_with_previous_locations_orphans_there_are_collected_and_referenced_objects_kept(
    backends: dict[str, LocalStorageBackend], empty_host: PluginHost
) -> None:
    before, after = before_and_after(backends, empty_host)
    kept_old, orphan_old = (
        store(before, "documents", backend="old"),
        store(before, "documents", backend="old"),
    )
    kept_new = store(after, "documents", backend="new")
    report = collect(after, [kept_old, kept_new], previous_locations=True)
    assert report.locations == (StorageLocation("new", "docs"), StorageLocation("old", "docs"))
    assert report.skipped_locations == ()
    assert (report.scanned, report.referenced, report.orphaned, report.deleted) == (3, 2, 1, 1)
    assert not after.exists(orphan_old)
    assert after.exists(kept_old)
    assert report.to_dict()["locations"] == [
        {"backend": "new", "prefix": "docs"},
        {"backend": "old", "prefix": "docs"},
    ]


def test_a_previous_location_overlapping_another_slots_previous_one_is_skipped_and_reported(
    backends: dict[str, LocalStorageBackend], empty_host: PluginHost
) -> None:
    before, after = before_and_after(
        backends,
        empty_host,
        archive=StoragePolicy(
            "archive",
            backend_key="new",
            key_prefix="archive",
            previous_locations=[StorageLocation("old", "docs/archive")],
        ),
    )
    orphan_old = store(before, "documents", backend="old")
    report = collect(after, [], previous_locations=True)
    assert report.locations == (StorageLocation("new", "docs"),)
    [skipped] = report.skipped_locations
    assert skipped.location == StorageLocation("old", "docs")
    assert "'archive'" in skipped.reason
    assert after.exists(orphan_old)
    assert report.to_dict()["skipped_locations"] == [
        {"backend": "old", "prefix": "docs", "reason": skipped.reason}
    ]


def test_a_plugin_slot_found_overlapping_a_previous_location_by_its_rows_skips_it(
    backends: dict[str, LocalStorageBackend],
) -> None:
    class Tenants:
        @hookimpl
        def granite_storage_resolve_policy(self, storage_key: str) -> StoragePolicy | None:
            return StoragePolicy(
                storage_key,
                backend_key="new",
                key_prefix=storage_key,
                previous_locations=[StorageLocation("old", "docs")],
            )

    host = PluginHost(strict=False, disabled=())
    host.register(Tenants(), name="tenants")
    before, after = before_and_after(backends, host)
    orphan_old = store(before, "documents", backend="old")
    tenant = StoredObjectRef(storage_key="tenant-1", backend="old", location="docs/tenant/x.bin", size=1)
    report = collect(after, [tenant], previous_locations=True)
    assert [skip.location for skip in report.skipped_locations] == [StorageLocation("old", "docs")]
    assert "'tenant-1'" in report.skipped_locations[0].reason
    assert after.exists(orphan_old)


def test_a_row_of_another_slot_naming_an_object_in_a_previous_location_keeps_it(
    backends: dict[str, LocalStorageBackend], empty_host: PluginHost
) -> None:
    before, after = before_and_after(
        backends, empty_host, avatars=StoragePolicy("avatars", backend_key="new", key_prefix="avatars")
    )
    shared = store(before, "documents", backend="old")
    other = StoredObjectRef(storage_key="avatars", backend="old", location=shared.location, size=shared.size)
    report = collect(after, [other], previous_locations=True)
    assert report.deleted == 0
    assert after.exists(shared)


def nested(
    backends: dict[str, LocalStorageBackend], host: PluginHost, *, prefix: str, previous: str
) -> StorageManager:
    """``documents`` on ``new`` with prefix ``prefix``, and ``previous`` on ``new`` as a previous location."""
    policy = StoragePolicy(
        "documents",
        backend_key="new",
        key_prefix=prefix,
        previous_locations=[StorageLocation("new", previous)],
    )
    return StorageManager(backends=backends, policies={"documents": policy}, plugins=host)


def test_a_previous_location_inside_the_current_one_is_listed_once(
    backends: dict[str, LocalStorageBackend], empty_host: PluginHost
) -> None:
    manager = nested(backends, empty_host, prefix="docs", previous="docs/2024")
    orphan = store(manager, "documents", backend="new")
    report = collect(manager, [], previous_locations=True)
    assert report.skipped_locations == (
        SkippedLocation(StorageLocation("new", "docs/2024"), "it lies inside 'new' / 'docs', listed already"),
    )
    assert (report.scanned, report.deleted) == (1, 1)
    assert not manager.exists(orphan)


def test_a_previous_location_containing_the_current_one_judges_each_object_once(
    backends: dict[str, LocalStorageBackend], empty_host: PluginHost
) -> None:
    manager = nested(backends, empty_host, prefix="all/docs", previous="all")
    kept = store(manager, "documents", backend="new")
    old = StoredObjectRef(storage_key="documents", backend="new", location="all/old.bin", size=1)
    backends["new"].put(old.location, io.BytesIO(b"x"))
    aged(manager, "new", old)
    report = collect(manager, [kept], previous_locations=True)
    assert report.locations == (StorageLocation("new", "all/docs"), StorageLocation("new", "all"))
    assert (report.scanned, report.referenced, report.deleted) == (2, 1, 1)
    assert manager.exists(kept)
    assert not manager.exists(old)


def test_the_0_1_0_area_is_never_collected(tmp_path: Path, empty_host: PluginHost) -> None:
    backend = LocalStorageBackend(tmp_path)
    manager = StorageManager(
        backends={"local": backend},
        policies={"documents": StoragePolicy("documents", backend_key="local")},
        plugins=empty_host,
    )
    legacy = StoredObjectRef(
        storage_key="documents", backend="local", location="document/1-1a2b3c4d.pdf", size=1
    )
    backend.put(legacy.location, io.BytesIO(b"x"))
    aged(manager, "local", legacy)
    unreferenced = StoredObjectRef(
        storage_key="documents", backend="local", location="document/2-1a2b3c4d.pdf", size=1
    )
    backend.put(unreferenced.location, io.BytesIO(b"x"))
    aged(manager, "local", unreferenced)
    report = collect(manager, [legacy], previous_locations=True)
    assert report.locations == (StorageLocation("local", "documents"),)
    assert (report.scanned, report.deleted, report.ignored_references) == (0, 0, 1)
    assert manager.exists(legacy)
    assert manager.exists(unreferenced)


# -- the command ----------------------------------------------------------------------------------------

CONFIG = """
    [backends.old]
    type = "local"
    root = "old"

    [backends.new]
    type = "local"
    root = "new"

    [policies.documents]
    backend = "new"
    key_prefix = "docs"
    previous_locations = [{ backend = "old" }]
"""


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"gc_locations_app_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / "storage.toml").write_text(textwrap.dedent(CONFIG))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield name
    finally:
        sys.modules.pop(name, None)


def test_gc_previous_locations_collects_orphans_where_the_slot_was(tmp_path: Path, app_module: str) -> None:
    module = importlib.import_module(app_module)
    manager = StorageManager.from_config(tmp_path / "storage.toml")
    before = StorageManager(
        backends={"old": manager.backend("old")},
        policies={"documents": StoragePolicy("documents", backend_key="old", key_prefix="docs")},
    )
    kept, orphan = store(before, "documents", backend="old"), store(before, "documents", backend="old")
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(url)
    module.Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(module.Document(title="moved", _file_ref=kept))
        session.commit()
    engine.dispose()
    arguments = ["gc", "--config", "storage.toml", "--database-url", url, "--storage-key", "documents"]
    arguments += ["--model", f"{app_module}:Document", "--delete"]

    result = CliRunner().invoke(cli, arguments, catch_exceptions=False)
    assert result.exit_code == EXIT_OK, result.output
    assert manager.exists(orphan)

    result = CliRunner().invoke(cli, [*arguments, "--previous-locations", "--json"], catch_exceptions=False)
    assert result.exit_code == EXIT_OK, result.output
    report = json.loads(result.output)
    assert report["locations"] == [{"backend": "new", "prefix": "docs"}, {"backend": "old", "prefix": "docs"}]
    assert (report["referenced"], report["deleted"]) == (1, 1)
    assert not manager.exists(orphan)
    assert manager.get(kept) == b"x"
