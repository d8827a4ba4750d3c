"""Storage locations: a slot's current location, its previous ones, and how references are routed."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from pathlib import Path

import pytest

from granite_storage import (
    ConfigurationError,
    InvalidKeyError,
    InvalidReferenceError,
    ObjectNotFoundError,
    PluginHost,
    StorageLocation,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
    UnsupportedOperationError,
    hookimpl,
)
from granite_storage_local import LocalStorageBackend

# -- StorageLocation and the policy's locations ------------------------------------------------------


def test_a_location_keeps_its_backend_and_its_prefix_stripped_of_slashes() -> None:
    location = StorageLocation("files", "/docs/2024/")
    assert (location.backend, location.prefix) == ("files", "docs/2024")
    assert StorageLocation("files").prefix is None


@pytest.mark.parametrize("prefix", ["", "/", "a/../b", ".hidden", "a//b", "c:/x", 42])
def test_a_location_with_an_unsafe_prefix_is_refused(prefix: object) -> None:
    with pytest.raises(ConfigurationError):
        StorageLocation("files", prefix)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["", None, 3])
def test_a_location_needs_a_backend_name(backend: object) -> None:
    with pytest.raises(ConfigurationError, match="backend"):
        StorageLocation(backend)  # type: ignore[arg-type]


def test_locations_are_frozen_values() -> None:
    location = StorageLocation("files", "docs")
    assert location == StorageLocation("files", "docs/")
    assert hash(location) == hash(StorageLocation("files", "docs"))
    with pytest.raises(AttributeError):
        location.prefix = "other"  # type: ignore[misc]


def test_the_current_location_is_the_backend_and_the_resolved_prefix() -> None:
    assert StoragePolicy("documents", backend_key="s3", key_prefix="docs").location == StorageLocation(
        "s3", "docs"
    )
    assert StoragePolicy("My Documents", backend_key="s3").location == StorageLocation("s3", "My_Documents")


def test_locations_list_the_current_one_first_and_resolve_the_previous_prefixes() -> None:
    policy = StoragePolicy(
        "documents",
        backend_key="s3",
        previous_locations=[StorageLocation("files"), StorageLocation("files", "document")],
    )
    assert policy.previous_locations == (StorageLocation("files"), StorageLocation("files", "document"))
    assert policy.locations == (
        StorageLocation("s3", "documents"),
        StorageLocation("files", "documents"),
        StorageLocation("files", "document"),
    )


def test_a_previous_location_equal_to_the_current_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="current location"):
        StoragePolicy("documents", backend_key="s3", previous_locations=[StorageLocation("s3")])
    with pytest.raises(ConfigurationError, match="current location"):
        StoragePolicy(
            "documents",
            backend_key="s3",
            key_prefix="docs",
            previous_locations=[StorageLocation("s3", "docs/")],
        )


def test_a_previous_location_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        StoragePolicy(
            "documents",
            backend_key="s3",
            previous_locations=[StorageLocation("files"), StorageLocation("files", "documents")],
        )


@pytest.mark.parametrize("previous", ["files", StorageLocation("files"), [{"backend": "files"}], ["files"]])
def test_previous_locations_must_be_a_sequence_of_locations(previous: object) -> None:
    with pytest.raises(ConfigurationError, match="previous_locations"):
        StoragePolicy("documents", backend_key="s3", previous_locations=previous)  # type: ignore[arg-type]


# -- configuration -----------------------------------------------------------------------------------------


def config(tmp_path: Path, **policy: object) -> dict[str, object]:
    return {
        "backends": {
            "s3like": {"type": "local", "root": str(tmp_path / "new")},
            "files": {"type": "local", "root": str(tmp_path / "old")},
        },
        "policies": {"documents": {"backend": "s3like", "max_size": "1GiB", **policy}},
    }


def test_previous_locations_are_read_from_a_toml_file(tmp_path: Path, plugin_host: PluginHost) -> None:
    path = tmp_path / "storage.toml"
    path.write_text(
        f"""
[backends.s3like]
type = "local"
root = "{(tmp_path / "new").as_posix()}"

[backends.files]
type = "local"
root = "{(tmp_path / "old").as_posix()}"

[policies.documents]
backend = "s3like"
max_size = "1GiB"
previous_locations = [{{ backend = "files" }}, {{ backend = "files", prefix = "document" }}]
"""
    )
    manager = StorageManager.from_config(path, plugins=plugin_host)
    assert manager.policy("documents").locations == (
        StorageLocation("s3like", "documents"),
        StorageLocation("files", "documents"),
        StorageLocation("files", "document"),
    )


def test_a_previous_location_with_an_unknown_option_is_refused(
    tmp_path: Path, plugin_host: PluginHost
) -> None:
    bad = config(tmp_path, previous_locations=[{"backend": "files", "key_prefix": "docs"}])
    with pytest.raises(ConfigurationError, match=r"'documents'.*unknown options \['key_prefix'\]"):
        StorageManager.from_config(bad, plugins=plugin_host)


@pytest.mark.parametrize(
    "entries",
    [{"backend": "files"}, "files", [{"prefix": "docs"}], [{"backend": "files", "prefix": "../up"}]],
)
def test_malformed_previous_locations_in_configuration_are_refused(
    tmp_path: Path, plugin_host: PluginHost, entries: object
) -> None:
    with pytest.raises(ConfigurationError, match=r"'documents'"):
        StorageManager.from_config(config(tmp_path, previous_locations=entries), plugins=plugin_host)


def test_a_previous_location_on_an_unconfigured_backend_is_refused(
    tmp_path: Path, plugin_host: PluginHost
) -> None:
    with pytest.raises(ConfigurationError, match=r"no storage backend named 'archive'"):
        StorageManager.from_config(
            config(tmp_path, previous_locations=[{"backend": "archive"}]), plugins=plugin_host
        )


# -- reading and deleting in a previous location ----------------------------------------------------------


@pytest.fixture
def old_root(tmp_path: Path) -> Path:
    return tmp_path / "old"


@pytest.fixture
def new_root(tmp_path: Path) -> Path:
    return tmp_path / "new"


def store(
    manager: StorageManager, content: bytes = b"old content", *, storage_key: str = "documents"
) -> StoredObjectRef:
    return manager.put_bytes(
        storage_key=storage_key,
        model_name="document",
        entity_id="42",
        field_name="file",
        content=content,
        original_filename="report.pdf",
    )


def moved_manager(old_root: Path, new_root: Path, host: PluginHost, **options: object) -> StorageManager:
    """``documents`` now on ``new`` with prefix ``docs``; it was on ``old`` with the same prefix."""
    return StorageManager(
        backends={"old": LocalStorageBackend(old_root), "new": LocalStorageBackend(new_root)},
        policies={
            "documents": StoragePolicy(
                "documents",
                backend_key="new",
                key_prefix="docs",
                previous_locations=[StorageLocation("old")],
                **options,  # type: ignore[arg-type]
            )
        },
        plugins=host,
    )


@pytest.fixture
def old_ref(old_root: Path, empty_host: PluginHost) -> StoredObjectRef:
    """A reference stored before the move, by the configuration of the time."""
    before = StorageManager(
        backends={"old": LocalStorageBackend(old_root)},
        policies={"documents": StoragePolicy("documents", backend_key="old", key_prefix="docs")},
        plugins=empty_host,
    )
    return store(before)


def test_a_reference_in_a_previous_location_reads_opens_and_stats(
    old_root: Path, new_root: Path, empty_host: PluginHost, old_ref: StoredObjectRef
) -> None:
    manager = moved_manager(old_root, new_root, empty_host)
    assert manager.get(old_ref) == b"old content"
    with manager.open(old_ref) as stream:
        assert stream.read() == b"old content"
    with manager.open(old_ref, start=4, end=7) as stream:
        assert stream.read() == b"con"
    assert manager.stat(old_ref).size == len(b"old content")
    assert manager.exists(old_ref)
    assert manager.verify(old_ref)
    assert manager.location_of(old_ref) == StorageLocation("old", "docs")


def test_a_reference_in_a_previous_location_is_deleted_there(
    old_root: Path, new_root: Path, empty_host: PluginHost, old_ref: StoredObjectRef
) -> None:
    manager = moved_manager(old_root, new_root, empty_host)
    manager.delete(old_ref)
    assert not (old_root / old_ref.location).exists()
    assert not manager.exists(old_ref)
    with pytest.raises(ObjectNotFoundError):
        manager.get(old_ref)


def test_a_previous_location_on_a_backend_without_urls_says_so(
    old_root: Path, new_root: Path, empty_host: PluginHost, old_ref: StoredObjectRef
) -> None:
    with pytest.raises(UnsupportedOperationError):
        moved_manager(old_root, new_root, empty_host).url(old_ref, expires_in=timedelta(minutes=5))


def test_new_objects_go_to_the_current_location_only(
    old_root: Path, new_root: Path, empty_host: PluginHost, old_ref: StoredObjectRef
) -> None:
    manager = moved_manager(old_root, new_root, empty_host)
    new_ref = store(manager, b"new content")
    assert new_ref.backend == "new"
    assert (new_root / new_ref.location).read_bytes() == b"new content"
    assert not (old_root / new_ref.location).exists()
    assert manager.location_of(new_ref) == manager.policy("documents").location
    assert manager.location_of(old_ref) != manager.policy("documents").location


def test_a_previous_location_with_a_prefix_of_its_own_reads_only_under_it(
    old_root: Path, new_root: Path, empty_host: PluginHost
) -> None:
    old = LocalStorageBackend(old_root)
    old.put("legacy/docs/a.txt", io.BytesIO(b"in the previous prefix"))
    old.put("elsewhere/b.txt", io.BytesIO(b"not the slot's"))
    manager = StorageManager(
        backends={"old": old, "new": LocalStorageBackend(new_root)},
        policies={
            "documents": StoragePolicy(
                "documents", backend_key="new", previous_locations=[StorageLocation("old", "legacy/docs")]
            )
        },
        plugins=empty_host,
    )
    inside = StoredObjectRef(storage_key="documents", backend="old", location="legacy/docs/a.txt", size=22)
    assert manager.get(inside) == b"in the previous prefix"
    assert manager.location_of(inside) == StorageLocation("old", "legacy/docs")
    outside = StoredObjectRef(storage_key="documents", backend="old", location="elsewhere/b.txt", size=14)
    for operation in (manager.get, manager.open, manager.stat, manager.exists, manager.delete):
        with pytest.raises(InvalidKeyError, match="'legacy/docs'"):
            operation(outside)
    assert old.get("elsewhere/b.txt") == b"not the slot's"


def test_a_key_of_the_current_prefix_naming_the_previous_backend_is_refused(
    old_root: Path, new_root: Path, empty_host: PluginHost
) -> None:
    manager = StorageManager(
        backends={"old": LocalStorageBackend(old_root), "new": LocalStorageBackend(new_root)},
        policies={
            "documents": StoragePolicy(
                "documents",
                backend_key="new",
                key_prefix="docs",
                previous_locations=[StorageLocation("old", "d")],
            )
        },
        plugins=empty_host,
    )
    forged = StoredObjectRef(storage_key="documents", backend="old", location="docs/x.txt", size=1)
    with pytest.raises(InvalidKeyError, match=r"outside the prefix 'd'.*backend 'old'"):
        manager.get(forged)


def test_a_reference_naming_a_backend_outside_its_slots_locations_is_refused(
    tmp_path: Path, old_root: Path, new_root: Path, empty_host: PluginHost
) -> None:
    manager = StorageManager(
        backends={
            "old": LocalStorageBackend(old_root),
            "new": LocalStorageBackend(new_root),
            "other": LocalStorageBackend(tmp_path / "other"),
        },
        policies={
            "documents": StoragePolicy(
                "documents", backend_key="new", key_prefix="docs", previous_locations=[StorageLocation("old")]
            )
        },
        plugins=empty_host,
    )
    forged = StoredObjectRef(storage_key="documents", backend="other", location="docs/x.txt", size=1)
    for operation in (
        manager.get,
        manager.open,
        manager.stat,
        manager.exists,
        manager.delete,
        manager.location_of,
    ):
        with pytest.raises(InvalidReferenceError, match=r"'other'.*'documents'.*'new'.*\['new', 'old'\]"):
            operation(forged)


# -- overlaps with other slots --------------------------------------------------------------------------


def two_backends(tmp_path: Path) -> dict[str, LocalStorageBackend]:
    return {"old": LocalStorageBackend(tmp_path / "old"), "new": LocalStorageBackend(tmp_path / "new")}


@pytest.mark.parametrize("prefix", ["avatars", "avatars/2024", "AVATARS", None])
def test_a_previous_location_overlapping_another_slots_current_one_is_refused(
    tmp_path: Path, empty_host: PluginHost, prefix: str | None
) -> None:
    with pytest.raises(
        ConfigurationError, match=r"previous location of storage key 'avatars_old'.*'avatars'"
    ):
        StorageManager(
            backends=two_backends(tmp_path),
            policies={
                "avatars": StoragePolicy("avatars", backend_key="old"),
                "avatars_old": StoragePolicy(
                    "avatars_old",
                    backend_key="new",
                    key_prefix="avatars",
                    previous_locations=[StorageLocation("old", prefix)],
                ),
            },
            plugins=empty_host,
        )


def test_a_previous_location_with_the_prefix_of_a_slot_on_another_backend_is_fine(
    tmp_path: Path, empty_host: PluginHost
) -> None:
    manager = StorageManager(
        backends=two_backends(tmp_path),
        policies={
            "avatars": StoragePolicy("avatars", backend_key="new"),
            "documents": StoragePolicy(
                "documents", backend_key="new", previous_locations=[StorageLocation("old", "avatars")]
            ),
        },
        plugins=empty_host,
    )
    assert manager.policy("documents").locations[1] == StorageLocation("old", "avatars")


def test_previous_locations_of_two_slots_may_overlap(tmp_path: Path, empty_host: PluginHost) -> None:
    manager = StorageManager(
        backends=two_backends(tmp_path),
        policies={
            "avatars": StoragePolicy(
                "avatars", backend_key="new", previous_locations=[StorageLocation("old", "all")]
            ),
            "documents": StoragePolicy(
                "documents", backend_key="new", previous_locations=[StorageLocation("old", "all")]
            ),
        },
        plugins=empty_host,
    )
    assert {policy.locations[1] for policy in manager.policies.values()} == {StorageLocation("old", "all")}


def test_a_plugin_policy_whose_previous_location_overlaps_a_static_slot_is_refused(
    tmp_path: Path,
) -> None:
    class Tenants:
        @hookimpl
        def granite_storage_resolve_policy(self, storage_key: str) -> StoragePolicy | None:
            return StoragePolicy(
                storage_key, backend_key="new", previous_locations=[StorageLocation("old", "docs")]
            )

    host = PluginHost(strict=False, disabled=())
    host.register(Tenants(), name="tenants")
    manager = StorageManager(
        backends=two_backends(tmp_path),
        policies={"documents": StoragePolicy("documents", backend_key="old", key_prefix="docs")},
        plugins=host,
    )
    with pytest.raises(ConfigurationError, match=r"previous location of storage key 'tenant-1'"):
        manager.policy("tenant-1")


def test_a_previous_location_cannot_reach_another_slots_objects(
    tmp_path: Path, empty_host: PluginHost
) -> None:
    manager = StorageManager(
        backends=two_backends(tmp_path),
        policies={
            "avatars": StoragePolicy("avatars", backend_key="old", key_prefix="avatars"),
            "documents": StoragePolicy(
                "documents", backend_key="new", previous_locations=[StorageLocation("old", "docs")]
            ),
        },
        plugins=empty_host,
    )
    avatar = store(manager, b"private avatar", storage_key="avatars")
    forged = StoredObjectRef(
        storage_key="documents", backend="old", location=avatar.location, size=avatar.size
    )
    for operation in (manager.get, manager.open, manager.stat, manager.exists, manager.delete):
        with pytest.raises(InvalidKeyError):
            operation(forged)
    assert manager.get(avatar) == b"private avatar"


# -- references that name a backend type, as 0.1.0 wrote them ----------------------------------------


def test_the_type_name_of_a_backend_is_found_without_importing_anything(
    tmp_path: Path, plugin_host: PluginHost
) -> None:
    class Derived(LocalStorageBackend):
        pass

    assert plugin_host.type_name_of(LocalStorageBackend(tmp_path / "a")) == "local"
    assert plugin_host.type_name_of(Derived(tmp_path / "b")) is None
    assert PluginHost(strict=False, disabled=()).type_name_of(LocalStorageBackend(tmp_path / "c")) is None


def test_a_reference_naming_its_backends_type_reads_from_the_one_backend_of_that_type(
    old_root: Path, new_root: Path, plugin_host: PluginHost, old_ref: StoredObjectRef
) -> None:
    manager = StorageManager(
        backends={"files": LocalStorageBackend(old_root)},
        policies={"documents": StoragePolicy("documents", backend_key="files", key_prefix="docs")},
        plugins=plugin_host,
    )
    typed = StoredObjectRef.from_dict({**old_ref.to_dict(), "backend": "local"})
    assert manager.get(typed) == b"old content"
    assert manager.location_of(typed) == StorageLocation("files", "docs")
    manager.delete(typed)
    assert not (old_root / old_ref.location).exists()


def test_a_backend_type_shared_by_two_of_the_slots_backends_is_refused_as_ambiguous(
    old_root: Path, new_root: Path, plugin_host: PluginHost, old_ref: StoredObjectRef
) -> None:
    manager = moved_manager(old_root, new_root, plugin_host)
    typed = StoredObjectRef.from_dict({**old_ref.to_dict(), "backend": "local"})
    with pytest.raises(InvalidReferenceError, match=r"type 'local'.*several.*\['new', 'old'\]"):
        manager.get(typed)


def test_a_configured_backend_name_wins_over_a_type_name(tmp_path: Path, plugin_host: PluginHost) -> None:
    manager = StorageManager(
        backends={
            "local": LocalStorageBackend(tmp_path / "named-local"),
            "files": LocalStorageBackend(tmp_path / "f"),
        },
        policies={
            "documents": StoragePolicy("documents", backend_key="files", key_prefix="docs"),
            "avatars": StoragePolicy("avatars", backend_key="local", key_prefix="avatars"),
        },
        plugins=plugin_host,
    )
    ref = StoredObjectRef(storage_key="documents", backend="local", location="docs/a.txt", size=1)
    with pytest.raises(InvalidReferenceError, match=r"'local'.*'documents'.*'files'"):
        manager.get(ref)


def test_a_type_name_no_location_of_the_slot_has_is_refused(
    old_root: Path, plugin_host: PluginHost, old_ref: StoredObjectRef
) -> None:
    manager = StorageManager(
        backends={"files": LocalStorageBackend(old_root)},
        policies={"documents": StoragePolicy("documents", backend_key="files", key_prefix="docs")},
        plugins=plugin_host,
    )
    typed = StoredObjectRef.from_dict({**old_ref.to_dict(), "backend": "s3"})
    with pytest.raises(InvalidReferenceError, match=r"'s3'.*'documents'.*'files'"):
        manager.get(typed)


def test_verify_works_in_a_previous_location_and_detects_a_changed_object(
    old_root: Path, new_root: Path, empty_host: PluginHost, old_ref: StoredObjectRef
) -> None:
    manager = moved_manager(old_root, new_root, empty_host)
    assert old_ref.sha256 == hashlib.sha256(b"old content").hexdigest()
    assert manager.verify(old_ref)
    (old_root / old_ref.location).write_bytes(b"new content")
    assert not manager.verify(old_ref)
