"""StoragePolicy, parse_size, and StorageManager.from_config with a mapping or a TOML file."""

from __future__ import annotations

import dataclasses
import io
import tomllib
from pathlib import Path
from typing import Any

import pytest

import granite_storage_local.hooks
from granite_storage import (
    ConfigurationError,
    PluginError,
    PluginHost,
    StorageError,
    StorageManager,
    StoragePolicy,
    parse_size,
)
from granite_storage_local import LocalStorageBackend

from .conftest import files_under

MiB = 1024 * 1024

# -- StoragePolicy ----------------------------------------------------------------------------------


def test_the_fields_after_storage_key_may_be_given_by_keyword() -> None:
    policy = StoragePolicy("documents", backend_key="local", max_size=10 * MiB, key_prefix="docs")
    assert (policy.storage_key, policy.backend_key, policy.max_size, policy.key_prefix) == (
        "documents",
        "local",
        10 * MiB,
        "docs",
    )


def test_storage_key_may_be_given_by_keyword() -> None:
    assert StoragePolicy(storage_key="avatars", backend_key="local").storage_key == "avatars"


def test_max_size_defaults_to_unlimited() -> None:
    assert StoragePolicy("documents", backend_key="local").max_size is None


def test_prefix_defaults_to_the_storage_key() -> None:
    policy = StoragePolicy("documents", backend_key="local")
    assert policy.key_prefix is None
    assert policy.prefix == "documents"


def test_default_prefix_is_the_sanitised_storage_key() -> None:
    assert StoragePolicy("../My Docs!", backend_key="local").prefix == "_My_Docs_"


def test_key_prefix_wins_over_the_storage_key() -> None:
    assert StoragePolicy("documents", backend_key="local", key_prefix="docs").prefix == "docs"


def test_key_prefix_may_have_several_segments_and_loses_outer_slashes() -> None:
    policy = StoragePolicy("documents", backend_key="local", key_prefix="/tenant-1/docs/")
    assert policy.key_prefix == "tenant-1/docs"
    assert policy.prefix == "tenant-1/docs"


def test_policy_is_frozen() -> None:
    policy = StoragePolicy("documents", backend_key="local")
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "arguments",
    [
        {"storage_key": "", "backend_key": "local"},
        {"storage_key": "documents", "backend_key": ""},
        {"storage_key": None, "backend_key": "local"},
        {"storage_key": "documents", "backend_key": 3},
        {"storage_key": "documents", "backend_key": "local", "max_size": -1},
        {"storage_key": "documents", "backend_key": "local", "max_size": True},
        {"storage_key": "documents", "backend_key": "local", "max_size": 1.5},
        {"storage_key": "documents", "backend_key": "local", "max_size": "10MB"},
        {"storage_key": "documents", "backend_key": "local", "key_prefix": ""},
        {"storage_key": "documents", "backend_key": "local", "key_prefix": "/"},
        {"storage_key": "documents", "backend_key": "local", "key_prefix": "../outside"},
        {"storage_key": "documents", "backend_key": "local", "key_prefix": "docs/../.."},
        {"storage_key": "documents", "backend_key": "local", "key_prefix": "docs//sub"},
        {"storage_key": "documents", "backend_key": "local", "key_prefix": "docs\\sub"},
        {"storage_key": "documents", "backend_key": "local", "key_prefix": "C:/docs"},
        {"storage_key": "documents", "backend_key": "local", "key_prefix": "docs\x00"},
        {"storage_key": "documents", "backend_key": "local", "key_prefix": "d" * 513},
    ],
    ids=lambda arguments: ",".join(f"{k}={v!r}"[:40] for k, v in arguments.items()),
)
def test_invalid_policy_values_raise_configuration_error(arguments: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        StoragePolicy(**arguments)


def test_non_string_key_prefix_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        StoragePolicy("documents", backend_key="local", key_prefix=5)  # type: ignore[arg-type]


def test_zero_max_size_is_allowed() -> None:
    assert StoragePolicy("empty-only", backend_key="local", max_size=0).max_size == 0


# -- parse_size -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10MB", 10 * 1024 * 1024),
        ("10 MiB", 10 * 1024 * 1024),
        ("10mb", 10 * 1024 * 1024),
        ("10M", 10 * 1024 * 1024),
        ("512KB", 512 * 1024),
        ("512k", 512 * 1024),
        ("1GiB", 1024**3),
        ("1GB", 1024**3),
        ("2TB", 2 * 1024**4),
        ("100B", 100),
        ("100", 100),
        ("0", 0),
        ("  7 KiB  ", 7 * 1024),
    ],
)
def test_parse_size_reads_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("value", [0, 1, 1048576])
def test_parse_size_passes_integers_through(value: int) -> None:
    assert parse_size(value) == value


def test_parse_size_of_none_is_unlimited() -> None:
    assert parse_size(None) is None


@pytest.mark.parametrize(
    "value",
    ["", "MB", "ten MB", "1.5MB", "-1", "-1MB", "10 PB", "10 mibs", "10MB extra", "0x10", -1, True, 1.5],
)
def test_parse_size_refuses_what_is_not_a_size(value: Any) -> None:
    with pytest.raises(ConfigurationError):
        parse_size(value)


# -- from_config: a working manager -----------------------------------------------------------------


def documents_config(root: Path) -> dict[str, Any]:
    return {
        "backends": {"files": {"type": "local", "root": str(root)}},
        "policies": {"documents": {"backend": "files", "max_size": "10MB", "key_prefix": "docs"}},
    }


def store_and_read_back(manager: StorageManager) -> None:
    ref = manager.put_bytes(
        storage_key="documents",
        model_name="document",
        entity_id="1",
        field_name="file",
        content=b"%PDF-1.7 ...",
        original_filename="report.pdf",
    )
    assert manager.get(ref) == b"%PDF-1.7 ..."
    assert ref.backend == "files"
    assert ref.location.startswith("docs/document/file/")


def test_from_config_mapping_builds_backends_by_registered_type_name(
    storage_root: Path, plugin_host: PluginHost
) -> None:
    manager = StorageManager.from_config(documents_config(storage_root), plugins=plugin_host)
    assert isinstance(manager.backend("files"), LocalStorageBackend)
    assert manager.policy("documents") == StoragePolicy(
        "documents", backend_key="files", max_size=10 * MiB, key_prefix="docs"
    )
    store_and_read_back(manager)


def test_from_config_stores_through_the_local_backend_onto_disk(
    storage_root: Path, plugin_host: PluginHost
) -> None:
    manager = StorageManager.from_config(documents_config(storage_root), plugins=plugin_host)
    ref = manager.put_stream(
        storage_key="documents",
        model_name="document",
        entity_id="1",
        field_name="file",
        stream=io.BytesIO(b"on disk"),
    )
    assert files_under(storage_root) == [ref.location]
    assert (storage_root / ref.location).read_bytes() == b"on disk"


def test_from_config_uses_the_default_plugin_host_when_none_is_given(storage_root: Path) -> None:
    store_and_read_back(StorageManager.from_config(documents_config(storage_root)))


def test_the_issue_example_config_with_a_relative_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin_host: PluginHost
) -> None:
    monkeypatch.chdir(tmp_path)
    manager = StorageManager.from_config(
        {
            "backends": {"files": {"type": "local", "root": "./var/storage"}},
            "policies": {"documents": {"backend": "files", "max_size": "10MB", "key_prefix": "docs"}},
        },
        plugins=plugin_host,
    )
    store_and_read_back(manager)
    assert [path.split("/")[0] for path in files_under(tmp_path / "var" / "storage")] == ["docs"]


TOML_CONFIG = """
[backends.files]
type = "local"
root = "{root}"

[policies.documents]
backend = "files"
max_size = "10MB"
key_prefix = "docs"

[policies.avatars]
backend = "files"
max_size = 2097152
"""


@pytest.mark.parametrize("as_type", [str, Path], ids=["str", "Path"])
def test_from_config_reads_a_toml_file(
    tmp_path: Path, storage_root: Path, plugin_host: PluginHost, as_type: type[str] | type[Path]
) -> None:
    config_file = tmp_path / "storage.toml"
    config_file.write_text(TOML_CONFIG.format(root=storage_root.as_posix()), encoding="utf-8")
    manager = StorageManager.from_config(as_type(config_file), plugins=plugin_host)
    assert manager.policy("documents").max_size == 10 * MiB
    assert manager.policy("avatars").max_size == 2 * MiB
    assert manager.policy("avatars").prefix == "avatars"
    store_and_read_back(manager)


def test_a_missing_config_file_raises_configuration_error_from_the_os_error(
    tmp_path: Path, plugin_host: PluginHost
) -> None:
    with pytest.raises(ConfigurationError, match=r"nowhere\.toml") as raised:
        StorageManager.from_config(tmp_path / "nowhere.toml", plugins=plugin_host)
    assert isinstance(raised.value.__cause__, FileNotFoundError)


def test_a_config_file_that_is_not_toml_raises_configuration_error(
    tmp_path: Path, plugin_host: PluginHost
) -> None:
    config_file = tmp_path / "storage.toml"
    config_file.write_text("[backends.files\ntype = local", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not TOML") as raised:
        StorageManager.from_config(config_file, plugins=plugin_host)
    assert isinstance(raised.value.__cause__, tomllib.TOMLDecodeError)


def test_an_empty_config_gives_an_empty_manager(plugin_host: PluginHost) -> None:
    manager = StorageManager.from_config({}, plugins=plugin_host)
    assert dict(manager.backends) == {}
    assert dict(manager.policies) == {}


# -- from_config: unknown backend types -------------------------------------------------------------


def config_of_type(type_name: str, **options: Any) -> dict[str, Any]:
    return {"backends": {"files": {"type": type_name, **options}}}


def test_unknown_backend_type_names_the_installed_types(plugin_host: PluginHost) -> None:
    with pytest.raises(ConfigurationError) as raised:
        StorageManager.from_config(config_of_type("ftp"), plugins=plugin_host)
    message = str(raised.value)
    assert "'ftp'" in message
    assert "local (granite-storage-local)" in message


def test_unknown_s3_type_names_the_s3_extra(empty_host: PluginHost) -> None:
    empty_host.register(granite_storage_local.hooks, name="local")  # the S3 plugin is not installed
    with pytest.raises(ConfigurationError, match=r'pip install "granite-storage\[s3\]"') as raised:
        StorageManager.from_config(config_of_type("s3", bucket="b"), plugins=empty_host)
    assert "not released" not in str(raised.value)


def test_unknown_third_party_type_suggests_a_package_name(plugin_host: PluginHost) -> None:
    with pytest.raises(ConfigurationError, match="granite-storage-acme"):
        StorageManager.from_config(config_of_type("acme"), plugins=plugin_host)


def test_unknown_local_type_names_its_package_when_the_plugin_is_absent(empty_host: PluginHost) -> None:
    with pytest.raises(ConfigurationError, match="pip install granite-storage-local") as raised:
        StorageManager.from_config(config_of_type("local", root="x"), plugins=empty_host)
    assert not isinstance(raised.value, PluginError)


def test_a_type_whose_plugin_is_disabled_says_so() -> None:
    host = PluginHost(strict=False, disabled={"local"})
    host.load_entry_points()
    with pytest.raises(ConfigurationError, match="plugin 'local' is disabled"):
        StorageManager.from_config(config_of_type("local", root="x"), plugins=host)


def test_unknown_type_with_no_plugins_says_none_are_installed(empty_host: PluginHost) -> None:
    with pytest.raises(ConfigurationError, match="installed types: none"):
        StorageManager.from_config(config_of_type("local", root="x"), plugins=empty_host)


# -- from_config: malformed configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"backend": {}},
        {"backends": {}, "policy": {}},
        {"backends": {}, "storage": {"root": "x"}},
    ],
    ids=["misspelt-backends", "misspelt-policies", "extra-section"],
)
def test_unknown_config_sections_raise_configuration_error(
    config: dict[str, Any], plugin_host: PluginHost
) -> None:
    with pytest.raises(ConfigurationError, match="unknown storage config sections"):
        StorageManager.from_config(config, plugins=plugin_host)


def test_unknown_policy_options_are_named(storage_root: Path, plugin_host: PluginHost) -> None:
    config = documents_config(storage_root)
    config["policies"]["documents"]["max_bytes"] = 10
    with pytest.raises(ConfigurationError, match="max_bytes"):
        StorageManager.from_config(config, plugins=plugin_host)


@pytest.mark.parametrize(
    "config",
    [
        {"backends": []},
        {"backends": {"files": "local"}},
        {"backends": {"files": {"root": "x"}}},
        {"backends": {"files": {"type": 3}}},
        {"policies": []},
        {"policies": {"documents": "files"}},
        {"policies": {"documents": {"max_size": "1MB"}}},
        {"policies": {"documents": {"backend": 1}}},
    ],
    ids=[
        "backends-not-a-table",
        "backend-not-a-table",
        "backend-without-type",
        "backend-type-not-a-string",
        "policies-not-a-table",
        "policy-not-a-table",
        "policy-without-backend",
        "policy-backend-not-a-string",
    ],
)
def test_malformed_entries_raise_configuration_error(config: dict[str, Any], plugin_host: PluginHost) -> None:
    with pytest.raises(ConfigurationError):
        StorageManager.from_config(config, plugins=plugin_host)


def test_a_bad_max_size_raises_configuration_error(storage_root: Path, plugin_host: PluginHost) -> None:
    config = documents_config(storage_root)
    config["policies"]["documents"]["max_size"] = "ten megabytes"
    with pytest.raises(ConfigurationError, match="ten megabytes"):
        StorageManager.from_config(config, plugins=plugin_host)


def test_a_policy_naming_an_unconfigured_backend_names_the_configured_ones(
    storage_root: Path, plugin_host: PluginHost
) -> None:
    config = documents_config(storage_root)
    config["policies"]["documents"]["backend"] = "archive"
    with pytest.raises(ConfigurationError, match=r"'archive'.*\['files'\]"):
        StorageManager.from_config(config, plugins=plugin_host)


def test_backend_rejecting_an_unknown_option_raises_configuration_error(
    storage_root: Path, plugin_host: PluginHost
) -> None:
    config = config_of_type("local", root=str(storage_root), bucket="b")
    with pytest.raises(ConfigurationError, match="bucket") as raised:
        StorageManager.from_config(config, plugins=plugin_host)
    assert isinstance(raised.value.__cause__, TypeError)


def test_backend_missing_a_required_option_raises_configuration_error(plugin_host: PluginHost) -> None:
    with pytest.raises(ConfigurationError, match="'local'"):
        StorageManager.from_config(config_of_type("local"), plugins=plugin_host)


def test_backend_rejecting_an_option_value_raises_configuration_error(
    storage_root: Path, plugin_host: PluginHost
) -> None:
    config = config_of_type("local", root=str(storage_root), chunk_size=0)
    with pytest.raises(ConfigurationError):
        StorageManager.from_config(config, plugins=plugin_host)


def test_configuration_errors_are_storage_errors() -> None:
    with pytest.raises(StorageError):
        parse_size("lots")


@pytest.mark.parametrize("prefix", ["\u00e9" * 257, "x" * 256, "a/" + "b" * 256])
def test_a_key_prefix_too_long_in_bytes_or_per_segment_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="longer than"):
        StoragePolicy("documents", backend_key="local", key_prefix=prefix)


def test_a_storage_table_inside_a_larger_toml_file_is_picked_by_section(
    tmp_path: Path, storage_root: Path, plugin_host: PluginHost
) -> None:
    nested = TOML_CONFIG.format(root=storage_root.as_posix()).replace("[backends.", "[app.storage.backends.")
    nested = nested.replace("[policies.", "[app.storage.policies.")
    config_file = tmp_path / "app.toml"
    config_file.write_text('[app]\nname = "demo"\n' + nested, encoding="utf-8")
    manager = StorageManager.from_config(config_file, section="app.storage", plugins=plugin_host)
    assert manager.policy("documents").max_size == 10 * MiB
    store_and_read_back(manager)


def test_a_missing_section_is_a_configuration_error(plugin_host: PluginHost) -> None:
    with pytest.raises(ConfigurationError, match="no table 'storage'"):
        StorageManager.from_config({"app": {}}, section="storage", plugins=plugin_host)


def test_a_larger_config_without_section_suggests_it(plugin_host: PluginHost) -> None:
    with pytest.raises(ConfigurationError, match="section="):
        StorageManager.from_config({"storage": {}}, plugins=plugin_host)


def test_a_bad_size_names_its_policy(plugin_host: PluginHost, storage_root: Path) -> None:
    config = config_of_type("local", root=str(storage_root))
    config["policies"] = {"documents": {"backend": "files", "max_size": "10 megabytes"}}
    with pytest.raises(ConfigurationError, match=r"policy 'documents': max_size: not a size"):
        StorageManager.from_config(config, plugins=plugin_host)


def test_a_misspelt_backend_type_gets_a_suggestion(plugin_host: PluginHost) -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'local'"):
        StorageManager.from_config(config_of_type("lcoal", root="x"), plugins=plugin_host)
