"""Building backends and policies from configuration: a mapping, or a TOML file of the same shape.

.. code-block:: toml

    [backends.files]
    type = "local"            # a backend type registered by an installed plugin
    root = "./var/storage"    # every other option is a keyword argument of the backend class

    [policies.documents]
    backend = "files"
    max_size = "10MB"         # bytes as an integer, or a size with a binary unit
    key_prefix = "docs"
    delete_replaced = false   # delete replaced objects after commit (with session tracking)
    # where existing references may still point after a move; a prefix defaults to the slot's own
    previous_locations = [{ backend = "old-files" }, { backend = "old-files", prefix = "document" }]
    allowed_types = ["application/pdf"]  # the types its content may be, read from the bytes
    key_layout = "entity"     # keys that hold the row's id; the default "fanout" needs none

Relative paths in backend options are passed through unchanged, so they are relative to the process's
working directory, as with any path the application opens.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

from granite_storage.backend import StorageBackend
from granite_storage.errors import ConfigurationError
from granite_storage.plugins import PluginHost
from granite_storage.policy import StorageLocation, StoragePolicy, parse_size

__all__ = ["ConfigSource", "build_backends", "build_policies", "read_config"]

#: What :meth:`StorageManager.from_config` accepts, a mapping or the path of a TOML file.
ConfigSource: TypeAlias = Mapping[str, Any] | str | os.PathLike[str]

_TOP_LEVEL = {"backends", "policies"}
_POLICY_OPTIONS = {
    "backend",
    "max_size",
    "key_prefix",
    "delete_replaced",
    "previous_locations",
    "allowed_types",
    "key_layout",
}
_LOCATION_OPTIONS = {"backend", "prefix"}


def read_config(source: ConfigSource, *, section: str | None = None) -> Mapping[str, Any]:
    """Return the configuration mapping from ``source`` (a mapping, or a TOML file's path).

    ``section`` picks a table inside a larger configuration, by dotted path: with
    ``section="storage"``, a file's ``[storage.backends.files]`` table configures backend ``files``.

    Raises:
        ConfigurationError: the file cannot be read or parsed, the section is missing, or the shape
            is wrong.
    """
    if isinstance(source, Mapping):
        config = source
    else:
        path = Path(source)
        try:
            with path.open("rb") as file:
                config = tomllib.load(file)
        except OSError as exc:
            raise ConfigurationError(f"cannot read storage config {str(path)!r}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"storage config {str(path)!r} is not TOML: {exc}") from exc
    for name in section.split(".") if section else ():
        table = config.get(name)
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"storage config has no table {section!r}")
        config = table
    unknown = set(config) - _TOP_LEVEL
    if unknown:
        raise ConfigurationError(
            f"unknown storage config sections {sorted(unknown)}; expected {sorted(_TOP_LEVEL)} "
            "(for a storage table inside a larger config, pass section=...)"
        )
    return config


def build_backends(config: Mapping[str, Any], plugins: PluginHost) -> dict[str, StorageBackend]:
    """Build each entry of ``config["backends"]`` by its registered ``type``."""
    backends: dict[str, StorageBackend] = {}
    for name, options in _section(config, "backends").items():
        if not isinstance(options, Mapping) or not isinstance(options.get("type"), str):
            raise ConfigurationError(
                f"backend {name!r} needs a table with a 'type' (e.g. {{'type': 'local', ...}})"
            )
        backend_options = {key: value for key, value in options.items() if key != "type"}
        backends[name] = plugins.create_backend(options["type"], backend_options)
    return backends


def build_policies(config: Mapping[str, Any]) -> dict[str, StoragePolicy]:
    """Build each entry of ``config["policies"]`` into a :class:`StoragePolicy`."""
    policies: dict[str, StoragePolicy] = {}
    for storage_key, options in _section(config, "policies").items():
        if not isinstance(options, Mapping):
            raise ConfigurationError(f"policy {storage_key!r} must be a table of options")
        unknown = set(options) - _POLICY_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"policy {storage_key!r} has unknown options {sorted(unknown)}; "
                f"expected some of {sorted(_POLICY_OPTIONS)}"
            )
        backend = options.get("backend")
        if not isinstance(backend, str):
            raise ConfigurationError(f"policy {storage_key!r} needs 'backend', a backend's name")
        try:
            max_size = parse_size(options.get("max_size"))
        except ConfigurationError as exc:
            raise ConfigurationError(f"policy {storage_key!r}: max_size: {exc}") from None
        policies[storage_key] = StoragePolicy(
            storage_key,
            backend_key=backend,
            max_size=max_size,
            key_prefix=options.get("key_prefix"),
            delete_replaced=options.get("delete_replaced", False),
            previous_locations=_locations(storage_key, options.get("previous_locations", ())),
            allowed_types=options.get("allowed_types"),
            key_layout=options.get("key_layout", "fanout"),
        )
    return policies


def _locations(storage_key: str, entries: object) -> list[StorageLocation]:
    """The ``previous_locations`` of a policy: a list of tables with ``backend`` and perhaps ``prefix``."""
    if not isinstance(entries, list | tuple):
        raise ConfigurationError(
            f"policy {storage_key!r}: previous_locations must be a list of tables like "
            f'{{ backend = "files", prefix = "docs" }}, got {entries!r}'
        )
    locations = []
    for entry in entries:
        if isinstance(entry, StorageLocation):
            locations.append(entry)
            continue
        if not isinstance(entry, Mapping) or not isinstance(entry.get("backend"), str):
            raise ConfigurationError(
                f"policy {storage_key!r}: each previous location needs a table with 'backend', got {entry!r}"
            )
        unknown = set(entry) - _LOCATION_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"policy {storage_key!r}: a previous location has unknown options {sorted(unknown)}; "
                f"expected some of {sorted(_LOCATION_OPTIONS)}"
            )
        try:
            locations.append(StorageLocation(entry["backend"], entry.get("prefix")))
        except ConfigurationError as exc:
            raise ConfigurationError(f"policy {storage_key!r}: previous_locations: {exc}") from None
    return locations


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name, {})
    if not isinstance(section, Mapping):
        raise ConfigurationError(f"storage config {name!r} must be a table of named entries")
    return section
