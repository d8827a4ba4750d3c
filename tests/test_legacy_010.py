"""Objects granite-storage 0.1.0 stored, read with the 0.1.0 configuration unchanged (hand-built here).

0.1.0 stored a slot without ``key_prefix`` at ``<model>/<entity id>-<8 hex><suffix>`` from the backend's
root, and recorded the backend's type name (``"local"``) in the reference. With ``key_prefix`` its keys
lie inside the prefix. The real release's data and its acceptance tests live in ``tests/legacy``.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

import pytest

from granite_storage import (
    InvalidKeyError,
    ObjectNotFoundError,
    PluginHost,
    StorageLocation,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
    UnverifiableReferenceError,
)
from granite_storage_local import LocalStorageBackend

ENTITY = "5f0c6ffc-7fe8-4c3a-8468-29e03b6bb76f"
CONTENT = b"%PDF-1.4 written by 0.1.0"


def legacy_row(
    location: str, *, content: bytes = CONTENT, storage_key: str = "documents", **changes: object
) -> dict[str, object]:
    """A reference exactly as 0.1.0 wrote it into the JSON column."""
    return {
        "storage_key": storage_key,
        "backend": "local",
        "location": location,
        "size": len(content),
        "checksum": "sha256:" + hashlib.sha256(content).hexdigest(),
        "content_type": "application/pdf",
        "original_filename": "Annual Report.PDF",
        "created_at": "2025-06-01T12:30:00.123456+00:00",
        "extra": None,
        **changes,
    }


def manager_010(root: Path, host: PluginHost, key_prefix: str | None = None) -> StorageManager:
    """The seed's configuration: one local backend, slots without key_prefix."""
    return StorageManager(
        backends={"local": LocalStorageBackend(root)},
        policies={
            "documents": StoragePolicy(
                "documents", backend_key="local", max_size=10 * 1024 * 1024, key_prefix=key_prefix
            ),
            "avatars": StoragePolicy("avatars", backend_key="local", max_size=2 * 1024 * 1024),
        },
        plugins=host,
    )


def write(root: Path, key: str, content: bytes = CONTENT) -> None:
    LocalStorageBackend(root).put(key, io.BytesIO(content))


@pytest.mark.parametrize(
    "name",
    [
        f"{ENTITY}-1a2b3c4d.pdf",
        f"{ENTITY}-1a2b3c4d.PDF",
        "42-0badcafe.JPEG",
        "3-86c19427",
        "7-00000000.g z",
        "é-12345678.メモ",
    ],
)
def test_a_0_1_0_object_of_a_slot_without_key_prefix_reads_opens_stats_and_deletes(
    tmp_path: Path, empty_host: PluginHost, name: str
) -> None:
    key = f"document/{name}"
    write(tmp_path, key)
    manager = manager_010(tmp_path, empty_host)
    ref = StoredObjectRef.from_dict(legacy_row(key, backend="local"))
    assert manager.get(ref) == CONTENT
    with manager.open(ref, start=5) as stream:
        assert stream.read() == CONTENT[5:]
    assert manager.stat(ref).size == len(CONTENT)
    assert manager.exists(ref)
    assert manager.verify(ref)
    assert manager.location_of(ref) == StorageLocation("local", "document")
    assert manager.location_of(ref) != manager.policy("documents").location
    manager.delete(ref)
    assert not (tmp_path / key).exists()
    with pytest.raises(ObjectNotFoundError):
        manager.get(ref)


def test_new_objects_of_such_a_slot_go_to_its_own_prefix(tmp_path: Path, empty_host: PluginHost) -> None:
    manager = manager_010(tmp_path, empty_host)
    ref = manager.put_bytes(
        storage_key="documents", model_name="document", entity_id=ENTITY, field_name="file", content=b"new"
    )
    assert ref.location.startswith("documents/document/")
    assert manager.location_of(ref) == StorageLocation("local", "documents")


@pytest.mark.parametrize(
    "key",
    [
        f"document/{ENTITY}-1A2B3C4D.pdf",  # upper-case hex: 0.1.0 wrote uuid4().hex
        f"document/{ENTITY}-1a2b3c4.pdf",  # seven digits
        f"document/{ENTITY}-1a2b3c4d0.pdf",  # nine
        f"document/{ENTITY}_1a2b3c4d.pdf",  # no dash
        "document/-1a2b3c4d.pdf",  # no entity
        f"document/{ENTITY}-1a2b3c4d.tar.gz",  # 0.1.0 kept only the last suffix
        f"document/{ENTITY}-1a2b3c4d.",  # an empty suffix
        f"document/sub/{ENTITY}-1a2b3c4d.pdf",  # three segments
        f"{ENTITY}-1a2b3c4d.pdf",  # one
        f"document/{ENTITY}",  # no token
    ],
)
def test_only_exactly_the_0_1_0_shape_is_read_outside_the_slots_prefix(
    tmp_path: Path, empty_host: PluginHost, key: str
) -> None:
    manager = manager_010(tmp_path, empty_host)
    ref = StoredObjectRef.from_dict(legacy_row(key))
    for operation in (
        manager.get,
        manager.open,
        manager.stat,
        manager.exists,
        manager.delete,
        manager.location_of,
    ):
        with pytest.raises(InvalidKeyError, match="outside the prefix 'documents'"):
            operation(ref)


@pytest.mark.parametrize("model", ["avatars", "AVATARS", "docs2"])
def test_a_0_1_0_key_in_another_slots_namespace_is_refused(
    tmp_path: Path, empty_host: PluginHost, model: str
) -> None:
    manager = StorageManager(
        backends={
            "local": LocalStorageBackend(tmp_path / "root"),
            "old": LocalStorageBackend(tmp_path / "old"),
        },
        policies={
            "documents": StoragePolicy("documents", backend_key="local"),
            "avatars": StoragePolicy("avatars", backend_key="local"),
            "moved": StoragePolicy(
                "moved", backend_key="old", previous_locations=[StorageLocation("local", "docs2")]
            ),
        },
        plugins=empty_host,
    )
    key = f"{model}/1-1a2b3c4d.jpg"
    write(tmp_path / "root", key, b"another slot's")
    ref = StoredObjectRef.from_dict(legacy_row(key, content=b"another slot's"))
    for operation in (
        manager.get,
        manager.open,
        manager.stat,
        manager.exists,
        manager.delete,
        manager.location_of,
    ):
        with pytest.raises(
            InvalidKeyError, match=r"in the namespace '(avatars|docs2)' of storage key '(avatars|moved)'"
        ):
            operation(ref)
    assert (tmp_path / "root" / key).read_bytes() == b"another slot's"


def test_a_0_1_0_key_whose_model_contains_another_slots_prefix_is_refused(
    tmp_path: Path, empty_host: PluginHost
) -> None:
    manager = StorageManager(
        backends={"local": LocalStorageBackend(tmp_path)},
        policies={
            "documents": StoragePolicy("documents", backend_key="local"),
            "private": StoragePolicy("private", backend_key="local", key_prefix="tenant/private"),
        },
        plugins=empty_host,
    )
    ref = StoredObjectRef.from_dict(legacy_row("tenant/1-1a2b3c4d.pdf"))
    with pytest.raises(InvalidKeyError, match="'tenant/private'"):
        manager.get(ref)


def test_every_slot_without_key_prefix_reads_the_shared_0_1_0_root(
    tmp_path: Path, empty_host: PluginHost
) -> None:
    # 0.1.0 put every slot without key_prefix of a backend in one root, so their areas are one.
    write(tmp_path, "user/42-1a2b3c4d.jpg", b"avatar")
    manager = manager_010(tmp_path, empty_host)
    for storage_key in ("avatars", "documents"):
        ref = StoredObjectRef.from_dict(
            legacy_row("user/42-1a2b3c4d.jpg", content=b"avatar", storage_key=storage_key)
        )
        assert manager.get(ref) == b"avatar"


def test_a_slot_with_key_prefix_reads_no_0_1_0_area_outside_its_prefix(
    tmp_path: Path, empty_host: PluginHost
) -> None:
    write(tmp_path, "document/42-1a2b3c4d.pdf")
    manager = manager_010(tmp_path, empty_host, key_prefix="docs")
    with pytest.raises(InvalidKeyError, match="outside the prefix 'docs'"):
        manager.get(StoredObjectRef.from_dict(legacy_row("document/42-1a2b3c4d.pdf")))


def test_with_key_prefix_0_1_0_keys_lie_inside_the_prefix_and_read(
    tmp_path: Path, empty_host: PluginHost
) -> None:
    key = f"docs/document/{ENTITY}-1a2b3c4d.pdf"
    write(tmp_path, key)
    manager = manager_010(tmp_path, empty_host, key_prefix="docs")
    ref = StoredObjectRef.from_dict(legacy_row(key, checksum=""))
    assert manager.get(ref) == CONTENT
    assert (
        manager.location_of(ref) == manager.policy("documents").location == StorageLocation("local", "docs")
    )
    with pytest.raises(UnverifiableReferenceError, match="cannot verify"):
        manager.verify(ref)
    manager.delete(ref)
    assert not (tmp_path / key).exists()


def test_the_0_1_0_area_is_read_in_the_current_backend_only(tmp_path: Path, empty_host: PluginHost) -> None:
    write(tmp_path / "old", "document/42-1a2b3c4d.pdf")
    manager = StorageManager(
        backends={"old": LocalStorageBackend(tmp_path / "old"), "new": LocalStorageBackend(tmp_path / "new")},
        policies={
            "documents": StoragePolicy(
                "documents", backend_key="new", previous_locations=[StorageLocation("old")]
            )
        },
        plugins=empty_host,
    )
    ref = StoredObjectRef.from_dict(legacy_row("document/42-1a2b3c4d.pdf", backend="old"))
    with pytest.raises(InvalidKeyError, match=r"outside the prefix 'documents' .*backend 'old'"):
        manager.get(ref)
    # Listing the model's directory as a previous location reads it there.
    listed = StorageManager(
        backends=dict(manager.backends),
        policies={
            "documents": StoragePolicy(
                "documents", backend_key="new", previous_locations=[StorageLocation("old", "document")]
            )
        },
        plugins=empty_host,
    )
    assert listed.get(ref) == CONTENT


def test_a_0_1_0_reference_naming_the_backend_type_reads_from_a_backend_configured_under_another_name(
    tmp_path: Path, plugin_host: PluginHost
) -> None:
    key = f"document/{ENTITY}-1a2b3c4d.pdf"
    write(tmp_path, key)
    manager = StorageManager(
        backends={"files": LocalStorageBackend(tmp_path)},
        policies={"documents": StoragePolicy("documents", backend_key="files")},
        plugins=plugin_host,
    )
    ref = StoredObjectRef.from_dict(legacy_row(key))
    assert ref.backend == "local"
    assert manager.get(ref) == CONTENT
    assert manager.location_of(ref) == StorageLocation("files", "document")


def test_a_uuid_entity_id_key_built_as_0_1_0_built_it_reads(tmp_path: Path, empty_host: PluginHost) -> None:
    entity = uuid.uuid4()
    key = f"document/{entity}-{uuid.uuid4().hex[:8]}.pdf"  # 0.1.0's build_storage_object_key
    write(tmp_path, key)
    assert manager_010(tmp_path, empty_host).get(StoredObjectRef.from_dict(legacy_row(key))) == CONTENT
