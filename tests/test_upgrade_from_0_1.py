"""granite-storage 0.1.0's public names that its README did not show: each works, or says what replaces it.

The upgrade guide (docs_source/guide/upgrading.md) lists every one of them; the seed README's own
snippets are in tests/orm/test_seed_snippets.py.
"""

from __future__ import annotations

import importlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from granite_storage import (
    ConfigurationError,
    InvalidKeyError,
    PluginHost,
    SizeLimitedStream,
    StorageError,
    StorageGarbageCollector,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
)
from granite_storage_local import LocalStorageBackend


@pytest.fixture
def manager(tmp_path: Path, empty_host: PluginHost) -> StorageManager:
    return StorageManager(
        {"local": LocalStorageBackend(tmp_path / "storage")},
        {"avatars": StoragePolicy("avatars", "local", 1024, "avatars")},
        plugins=empty_host,
    )


def store(manager: StorageManager, content: bytes = b"avatar") -> StoredObjectRef:
    return manager.put_bytes(
        storage_key="avatars", model_name="user", entity_id="1", field_name="avatar", content=content
    )


# -- the manager -------------------------------------------------------------------------------------


def test_a_manager_takes_backends_and_policies_positionally_as_in_0_1(manager: StorageManager) -> None:
    assert list(manager.backends) == ["local"]
    assert list(manager.policies) == ["avatars"]


def test_get_policy_is_the_policy_of_a_storage_key(manager: StorageManager) -> None:
    assert manager.get_policy("avatars") is manager.policy("avatars")


def test_get_policy_of_an_unknown_key_is_a_storage_error_as_in_0_1(manager: StorageManager) -> None:
    with pytest.raises(StorageError, match="no storage policy for 'banners'") as raised:
        manager.get_policy("banners")
    assert isinstance(raised.value, ConfigurationError)


def test_get_backend_for_policy_is_the_backend_storing_the_slot(manager: StorageManager) -> None:
    policy = manager.get_policy("avatars")
    assert manager.get_backend_for_policy(policy) is manager.backend("local")
    with pytest.raises(ConfigurationError, match="no storage backend named 's3'"):
        manager.get_backend_for_policy(StoragePolicy("avatars", "s3"))


def test_handing_a_backend_a_reference_says_to_go_through_the_manager(manager: StorageManager) -> None:
    ref = store(manager)
    backend = manager.get_backend_for_policy(manager.get_policy("avatars"))
    with pytest.raises(InvalidKeyError, match=r"backends take keys, not references.*StorageManager"):
        backend.get(ref)  # type: ignore[arg-type]  # 0.1.0's call
    assert backend.get(ref.location) == manager.get(ref) == b"avatar"


def test_an_entity_id_may_still_be_a_uuid(manager: StorageManager) -> None:
    ref = manager.put_bytes(
        storage_key="avatars",
        model_name="user",
        entity_id=uuid.UUID(int=7),  # type: ignore[arg-type]  # 0.1.0 took any id; 0.2.0 types str
        field_name="avatar",
        content=b"x",
    )
    assert manager.get(ref) == b"x"


class BackendOf010:
    """A custom backend as 0.1.0's protocol had one written: methods taking references."""

    backend_name = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_bytes(self, *, key: str, content: bytes, **_: Any) -> StoredObjectRef:
        self.objects[key] = content
        return StoredObjectRef("", self.backend_name, key, len(content), None)

    def put_stream(self, *, key: str, stream: BinaryIO, **options: Any) -> StoredObjectRef:
        return self.put_bytes(key=key, content=stream.read(), **options)

    def get(self, ref: StoredObjectRef) -> bytes:
        return self.objects[ref.location]

    def open(self, ref: StoredObjectRef) -> BinaryIO:
        return io.BytesIO(self.get(ref))

    def delete(self, ref: StoredObjectRef) -> None:
        self.objects.pop(ref.location, None)

    def exists(self, ref: StoredObjectRef) -> bool:
        return ref.location in self.objects

    def iter_locations(self, prefix: str | None = None) -> Iterator[str]:
        yield from self.objects


def test_a_backend_of_the_0_1_protocol_is_refused_naming_what_replaces_it() -> None:
    with pytest.raises(ConfigurationError) as raised:
        StorageManager(
            backends={"memory": BackendOf010()},  # type: ignore[dict-item]
            policies={"avatars": StoragePolicy("avatars", "memory")},
        )
    message = str(raised.value)
    assert "backend 'memory' is BackendOf010" in message
    assert "granite-storage 0.1.0's backend protocol" in message
    assert "subclass granite_storage.StorageBackend and implement put, open, stat, delete and list" in message


def test_any_other_object_is_refused_as_not_a_backend() -> None:
    with pytest.raises(ConfigurationError, match=r"is dict, not a granite_storage.StorageBackend$"):
        StorageManager(backends={"x": {}}, policies={})  # type: ignore[dict-item]


def test_the_0_1_protocols_import_path_names_what_replaces_it() -> None:
    contracts = importlib.import_module("granite_storage.contracts")
    with pytest.raises(ImportError, match=r"subclass granite_storage\.StorageBackend and implement put"):
        contracts.StorageBackend  # noqa: B018


def test_the_0_1_protocols_import_fails_as_an_import_statement_too() -> None:
    with pytest.raises(
        ImportError, match=r"granite_storage\.contracts\.StorageBackend \(granite-storage 0\.1\.0\)"
    ):
        exec("from granite_storage.contracts import StorageBackend")  # the statement, as 0.1.0 code has it


def test_other_missing_names_of_a_0_1_module_are_attribute_errors() -> None:
    contracts = importlib.import_module("granite_storage.contracts")
    assert not hasattr(contracts, "Backend")


# -- policies, streams, the collector, the local backend ------------------------------------------------


def test_a_policy_takes_0_1s_four_fields_positionally_and_validates_them() -> None:
    policy = StoragePolicy("avatars", "s3", 2 * 1024 * 1024, "avatars/")
    assert (policy.backend_key, policy.max_size, policy.key_prefix) == ("s3", 2 * 1024 * 1024, "avatars")
    with pytest.raises(ConfigurationError, match="max_size"):
        StoragePolicy("avatars", "s3", -1)
    with pytest.raises(TypeError):
        StoragePolicy("avatars", "s3", None, None, True)  # type: ignore[call-arg]  # delete_replaced is keyword-only


def test_a_size_limited_stream_takes_stream_and_max_size_as_in_0_1() -> None:
    assert SizeLimitedStream(io.BytesIO(b"abc"), 3).read() == b"abc"
    assert SizeLimitedStream(io.BytesIO(b"abc"), max_size=None).bytes_read == 0


def test_a_size_limited_stream_refuses_0_1s_chunk_size_by_name() -> None:
    with pytest.raises(TypeError, match="chunk_size"):
        SizeLimitedStream(io.BytesIO(b"abc"), 3, chunk_size=1)  # type: ignore[call-arg]


def test_size_limited_stream_is_still_importable_from_the_manager_module() -> None:
    assert importlib.import_module("granite_storage.manager").SizeLimitedStream is SizeLimitedStream


def test_the_collector_takes_manager_and_references_positionally(manager: StorageManager) -> None:
    ref = store(manager)
    report = StorageGarbageCollector(manager, lambda: [ref]).collect(storage_key="avatars", dry_run=True)
    assert (report.scanned, report.orphaned) == (1, 0)


def test_the_local_backend_takes_its_root_positionally(tmp_path: Path) -> None:
    from granite_storage.backends.local import LocalStorageBackend as Local

    assert Local(str(tmp_path / "root")).root == (tmp_path / "root").resolve()


def test_the_local_backends_0_1_keyword_root_dir_is_a_type_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="root_dir"):
        LocalStorageBackend(root_dir=tmp_path)  # type: ignore[call-arg]


def test_a_reference_takes_0_1s_fields_positionally() -> None:
    ref = StoredObjectRef("avatars", "local", "avatars/a.png", 3, "sha256:" + "0" * 64, "image/png", "a.png")
    assert (ref.location, ref.original_filename) == ("avatars/a.png", "a.png")


# -- 0.1.0's module paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name", "home"),
    [
        ("granite_storage.exceptions", "ContentTooLargeError", "granite_storage"),
        ("granite_storage.exceptions", "StorageError", "granite_storage"),
        ("granite_storage.models", "StoredObjectRef", "granite_storage"),
        ("granite_storage.policies", "StoragePolicy", "granite_storage"),
        ("granite_storage.types", "StorageJSONType", "granite_storage"),
        ("granite_storage.types", "StoredObjectRefType", "granite_storage"),
        ("granite_storage.mixin", "ReplaceContentResult", "granite_storage"),
        ("granite_storage.mixin", "StoredContentMixin", "granite_storage"),
        ("granite_storage.alembic_helpers", "portable_storage_ref_type", "granite_storage"),
        ("granite_storage.backends", "LocalStorageBackend", "granite_storage_local"),
        ("granite_storage.backends", "S3StorageBackend", "granite_storage_s3"),
    ],
)
def test_a_0_1_module_path_gives_the_object_from_its_new_home(module: str, name: str, home: str) -> None:
    expected = getattr(pytest.importorskip(home), name)
    assert getattr(importlib.import_module(module), name) is expected


@pytest.mark.parametrize(
    ("module", "name", "replacement"),
    [
        ("granite_storage.utils", "build_storage_object_key", "granite_storage.keys.build_object_key"),
        ("granite_storage.utils", "sha256_bytes", "hashlib.sha256"),
        ("granite_storage.utils", "guess_content_type", "mimetypes.guess_type"),
        ("granite_storage.utils", "safe_suffix", "granite_storage.keys.safe_extension"),
        ("granite_storage.utils", "utcnow_iso", "datetime.now(UTC)"),
        ("granite_storage.utils", "DEFAULT_STREAM_CHUNK_SIZE", "granite_storage.streams.DEFAULT_CHUNK_SIZE"),
        ("granite_storage.alembic_helpers", "EXAMPLE_POSTGRESQL_TEXT_TO_STORAGE_REF", "'Migrations' page"),
    ],
)
def test_a_removed_0_1_helper_names_its_replacement(module: str, name: str, replacement: str) -> None:
    with pytest.raises(ImportError) as raised:
        exec(f"from {module} import {name}")
    assert replacement in str(raised.value)
    assert "removed in 0.2.0" in str(raised.value)
    assert name not in dir(importlib.import_module(module))
