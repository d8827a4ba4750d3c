"""Key layouts: the default fan-out layout, the opt-in entity layout, and key naming as a plugin hook."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from granite_storage import (
    ConfigurationError,
    PluginError,
    PluginHost,
    StorageManager,
    StoragePolicy,
    UnsavedEntityError,
    hookimpl,
)
from granite_storage.keys import (
    FANOUT_DIGITS,
    ObjectKeyRequest,
    entity_object_key,
    fanout_object_key,
    new_token,
    sanitize_segment,
)
from granite_storage_local import LocalStorageBackend

from .conftest import files_under

DOCS = StoragePolicy("documents", backend_key="local", key_prefix="docs")
ENTITY_DOCS = StoragePolicy("documents", backend_key="local", key_prefix="docs", key_layout="entity")


def make_manager(root: Path, host: PluginHost, policy: StoragePolicy = DOCS) -> StorageManager:
    return StorageManager(
        backends={"local": LocalStorageBackend(root)}, policies={policy.storage_key: policy}, plugins=host
    )


def put(manager: StorageManager, **arguments: Any) -> str:
    return manager.put_bytes(
        storage_key="documents", model_name="document", field_name="file", content=b"x", **arguments
    ).location


# -- the default layout -------------------------------------------------------------------------------


def test_the_default_layout_needs_no_entity_id_and_fans_out_on_the_tokens_first_digits(
    storage_root: Path, empty_host: PluginHost
) -> None:
    manager = make_manager(storage_root, empty_host)
    key = put(manager, original_filename="Report.PDF")
    match = re.fullmatch(r"docs/document/file/([0-9a-f]{2})/(\1[0-9a-f]{30})\.pdf", key)
    assert match is not None
    assert FANOUT_DIGITS == 2
    assert files_under(storage_root) == [key]


def test_the_default_layout_ignores_an_entity_id_given_by_a_seed_style_call(
    storage_root: Path, empty_host: PluginHost
) -> None:
    manager = make_manager(storage_root, empty_host)
    key = put(manager, entity_id="row-42")
    assert "row-42" not in key
    assert key.startswith("docs/document/file/")


def test_the_default_layout_sanitises_model_and_field(empty_host: PluginHost) -> None:
    key = fanout_object_key(ObjectKeyRequest(DOCS, "../model", "field/../../x", None, "../../a.PDF"))
    prefix, model, field, fanout, name = key.split("/")
    assert (prefix, model, field) == ("docs", sanitize_segment("../model"), sanitize_segment("field/../../x"))
    assert name.startswith(fanout)
    assert name.endswith(".pdf")


def test_the_fanout_level_spreads_objects_over_256_directories() -> None:
    directories = {fanout_object_key(ObjectKeyRequest(DOCS, "m", "f")).split("/")[3] for _ in range(20_000)}
    assert directories == {f"{number:02x}" for number in range(256)}


def test_every_token_is_new() -> None:
    tokens = {new_token() for _ in range(10_000)}
    assert len(tokens) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", token) for token in tokens)


# -- the entity layout, opt-in --------------------------------------------------------------------------


def test_the_entity_layout_keeps_the_rows_directory(storage_root: Path, empty_host: PluginHost) -> None:
    manager = make_manager(storage_root, empty_host, ENTITY_DOCS)
    key = put(manager, entity_id="42", original_filename="a.txt")
    assert re.fullmatch(r"docs/document/42/file/[0-9a-f]{32}\.txt", key)


def test_the_entity_layout_without_an_entity_id_stores_nothing(
    storage_root: Path, empty_host: PluginHost
) -> None:
    manager = make_manager(storage_root, empty_host, ENTITY_DOCS)
    with pytest.raises(UnsavedEntityError, match=r"'entity' key layout.*flush\(\)"):
        put(manager)
    assert files_under(storage_root) == []


def test_entity_object_key_sanitises_the_entity_id() -> None:
    key = entity_object_key(ObjectKeyRequest(ENTITY_DOCS, "document", "file", "../../etc"))
    assert key.split("/")[:4] == ["docs", "document", "_.._etc", "file"]


def test_the_layout_is_chosen_in_configuration(storage_root: Path, plugin_host: PluginHost) -> None:
    config = {
        "backends": {"local": {"type": "local", "root": str(storage_root)}},
        "policies": {
            "documents": {"backend": "local", "key_prefix": "docs", "key_layout": "entity"},
            "avatars": {"backend": "local"},
        },
    }
    manager = StorageManager.from_config(config, plugins=plugin_host)
    assert manager.policy("documents").key_layout == "entity"
    assert manager.policy("avatars").key_layout == "fanout"
    assert put(manager, entity_id="7").startswith("docs/document/7/file/")


def test_an_unknown_layout_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"key_layout must be one of \['fanout', 'entity'\]"):
        StoragePolicy("documents", backend_key="local", key_layout="flat")


# -- key naming as a hook -----------------------------------------------------------------------------


class ByEntity:
    """Names the keys of slot ``documents`` after the entity; passes for every other slot."""

    def __init__(self) -> None:
        self.requests: list[ObjectKeyRequest] = []

    @hookimpl
    def granite_storage_object_key(self, request: ObjectKeyRequest) -> str | None:
        self.requests.append(request)
        if request.storage_key != "documents":
            return None
        return f"{request.prefix}/by-entity/{sanitize_segment(request.entity_id)}/{new_token()}"


class Returns:
    def __init__(self, key: object) -> None:
        self.key = key

    @hookimpl
    def granite_storage_object_key(self) -> object:
        return self.key


def test_a_plugin_names_keys_and_receives_one_value_describing_the_object(
    storage_root: Path, empty_host: PluginHost
) -> None:
    plugin = ByEntity()
    empty_host.register(plugin, name="by-entity")
    manager = make_manager(storage_root, empty_host)
    key = put(manager, entity_id="42", original_filename="a.txt")
    assert re.fullmatch(r"docs/by-entity/42/[0-9a-f]{32}", key)
    assert plugin.requests == [ObjectKeyRequest(DOCS, "document", "file", "42", "a.txt")]


def test_a_plugin_that_passes_leaves_the_slots_layout(storage_root: Path, empty_host: PluginHost) -> None:
    plugin = ByEntity()
    empty_host.register(plugin, name="by-entity")
    avatars = StoragePolicy("avatars", backend_key="local")
    manager = StorageManager(
        backends={"local": LocalStorageBackend(storage_root)},
        policies={"avatars": avatars},
        plugins=empty_host,
    )
    ref = manager.put_bytes(storage_key="avatars", model_name="user", field_name="avatar", content=b"x")
    assert re.fullmatch(r"avatars/user/avatar/[0-9a-f]{2}/[0-9a-f]{32}", ref.location)
    assert len(plugin.requests) == 1


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("elsewhere/x", "outside the slot's prefix 'docs'"),
        ("docs", "outside the slot's prefix 'docs'"),
        ("docs2/x", "outside the slot's prefix 'docs'"),
        ("docs/../other/x", "start with '.'"),
        ("/docs/x", "relative"),
        (42, "keys are strings"),
    ],
)
def test_a_key_a_plugin_names_outside_its_slot_is_refused_naming_the_plugin(
    storage_root: Path, empty_host: PluginHost, key: object, reason: str
) -> None:
    empty_host.register(Returns(key), name="rogue")
    manager = make_manager(storage_root, empty_host)
    with pytest.raises(PluginError, match=rf"plugin 'rogue' named an invalid key .*{re.escape(reason)}"):
        put(manager)
    assert files_under(storage_root) == []


def test_a_plugin_that_raises_is_a_plugin_error_naming_it(storage_root: Path, empty_host: PluginHost) -> None:
    class Broken:
        @hookimpl
        def granite_storage_object_key(self) -> str:
            raise RuntimeError("boom")

    empty_host.register(Broken(), name="broken")
    manager = make_manager(storage_root, empty_host)
    expected = r"plugin 'broken' failed to name a key.*RuntimeError: boom"
    with pytest.raises(PluginError, match=expected) as raised:
        put(manager)
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert files_under(storage_root) == []


def test_a_storage_error_a_plugin_raises_reaches_the_caller_as_it_is(
    storage_root: Path, empty_host: PluginHost
) -> None:
    class NeedsEntity:
        @hookimpl
        def granite_storage_object_key(self, request: ObjectKeyRequest) -> str:
            raise UnsavedEntityError(f"{request.model_name} needs its id")

    empty_host.register(NeedsEntity(), name="needs-entity")
    with pytest.raises(UnsavedEntityError, match="document needs its id"):
        put(make_manager(storage_root, empty_host))


def test_the_built_in_layout_runs_after_a_plugin_registered_without_order(
    storage_root: Path, empty_host: PluginHost
) -> None:
    class Plain:
        @hookimpl
        def granite_storage_object_key(self, request: ObjectKeyRequest) -> str:
            return f"{request.prefix}/plain/{new_token()}"

    empty_host.register(Plain(), name="plain")
    assert put(make_manager(storage_root, empty_host, ENTITY_DOCS)).startswith("docs/plain/")
