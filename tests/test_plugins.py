"""Plugins: backend types registered by name, policies resolved by hook, entry points discovered."""

from __future__ import annotations

import importlib.metadata
import io
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import granite_storage
from granite_storage import (
    ConfigurationError,
    PluginError,
    PluginHost,
    StorageGarbageCollector,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
    hookimpl,
)
from granite_storage.hookspecs import RegisterBackend
from granite_storage.plugins import default_plugin_host
from granite_storage_local import LocalStorageBackend

from .conftest import files_under

# -- test plugins -----------------------------------------------------------------------------------


class AcmeBackend(LocalStorageBackend):
    """A third party's backend with options of its own: they arrive as keyword arguments."""

    def __init__(self, *, directory: str, shard: str = "a") -> None:
        super().__init__(Path(directory) / shard)
        self.shard = shard


class BackendsPlugin:
    """Registers the given backend types."""

    def __init__(self, *registrations: tuple[Any, Any]) -> None:
        self.registrations = registrations

    @hookimpl
    def granite_storage_register_backends(self, register: RegisterBackend) -> None:
        for name, target in self.registrations:
            register(name, target)


class PolicyPlugin:
    """Resolves the storage keys it knows, records every question, passes on the others."""

    def __init__(self, policies: dict[str, StoragePolicy] | None = None) -> None:
        self.policies = policies or {}
        self.asked: list[tuple[str, StorageManager]] = []

    @hookimpl
    def granite_storage_resolve_policy(
        self, storage_key: str, manager: StorageManager
    ) -> StoragePolicy | None:
        self.asked.append((storage_key, manager))
        return self.policies.get(storage_key)


class FirstPolicyPlugin(PolicyPlugin):
    @hookimpl(tryfirst=True)
    def granite_storage_resolve_policy(
        self, storage_key: str, manager: StorageManager
    ) -> StoragePolicy | None:
        return super().granite_storage_resolve_policy(storage_key, manager)


class LastPolicyPlugin(PolicyPlugin):
    @hookimpl(trylast=True)
    def granite_storage_resolve_policy(
        self, storage_key: str, manager: StorageManager
    ) -> StoragePolicy | None:
        return super().granite_storage_resolve_policy(storage_key, manager)


class TenantPlugin:
    """Resolves ``tenant-<id>`` slots; its hook takes only the argument it needs."""

    @hookimpl
    def granite_storage_resolve_policy(self, storage_key: str) -> StoragePolicy | None:
        if not storage_key.startswith("tenant-"):
            return None
        tenant = storage_key.removeprefix("tenant-")
        return StoragePolicy(storage_key, backend_key="local", max_size=100, key_prefix=f"tenants/{tenant}")


@contextmanager
def registered(host: PluginHost, plugin: object, name: str) -> Iterator[str]:
    """Register ``plugin`` on ``host`` for the duration of the block."""
    registered_name = host.register(plugin, name=name)
    try:
        yield registered_name
    finally:
        host.unregister(registered_name)


@pytest.fixture
def acme_plugin(plugin_host: PluginHost) -> Iterator[PluginHost]:
    """The installed plugins plus a test plugin registering ``acme``; unregistered afterwards."""
    name = plugin_host.register(BackendsPlugin(("acme", AcmeBackend)), name="acme-plugin")
    try:
        yield plugin_host
    finally:
        plugin_host.unregister(name)


def local_manager(root: Path, host: PluginHost, **policies: StoragePolicy) -> StorageManager:
    return StorageManager(backends={"local": LocalStorageBackend(root)}, policies=policies, plugins=host)


def store(manager: StorageManager, storage_key: str, content: bytes = b"content") -> StoredObjectRef:
    return manager.put_bytes(
        storage_key=storage_key, model_name="m", entity_id="1", field_name="f", content=content
    )


# -- registering backend types ----------------------------------------------------------------------


def test_a_registered_plugin_provides_its_backend_type_by_name(
    acme_plugin: PluginHost, tmp_path: Path
) -> None:
    manager = StorageManager.from_config(
        {
            "backends": {"vault": {"type": "acme", "directory": str(tmp_path), "shard": "b"}},
            "policies": {"documents": {"backend": "vault"}},
        },
        plugins=acme_plugin,
    )
    backend = manager.backend("vault")
    assert isinstance(backend, AcmeBackend)
    assert backend.shard == "b"
    ref = store(manager, "documents", b"acme bytes")
    assert manager.get(ref) == b"acme bytes"
    assert files_under(tmp_path / "b") == [ref.location]


def test_a_backend_type_records_the_plugin_that_registered_it(acme_plugin: PluginHost) -> None:
    backend_type = acme_plugin.backend_type("acme")
    assert (backend_type.name, backend_type.target, backend_type.plugin) == (
        "acme",
        AcmeBackend,
        "acme-plugin",
    )
    assert backend_type.distribution is None
    assert backend_type.load() is AcmeBackend


def test_installed_and_registered_types_are_listed_together(acme_plugin: PluginHost) -> None:
    assert {"local", "acme"} <= set(acme_plugin.backend_types())


def test_unregistering_a_plugin_removes_its_backend_types(plugin_host: PluginHost) -> None:
    with registered(plugin_host, BackendsPlugin(("acme", AcmeBackend)), "acme-plugin"):
        assert "acme" in plugin_host.backend_types()
    assert "acme" not in plugin_host.backend_types()
    with pytest.raises(ConfigurationError, match="'acme'"):
        plugin_host.backend_type("acme")


def test_register_returns_the_plugins_name(empty_host: PluginHost) -> None:
    with registered(empty_host, BackendsPlugin(), "named") as name:
        assert name == "named"


def test_two_plugins_claiming_one_name_raise_plugin_error_naming_both(empty_host: PluginHost) -> None:
    with (
        registered(empty_host, BackendsPlugin(("acme", AcmeBackend)), "first-acme"),
        registered(empty_host, BackendsPlugin(("acme", "elsewhere:AcmeBackend")), "second-acme"),
    ):
        assert "acme" not in empty_host.backend_types()
        with pytest.raises(PluginError, match="'acme'") as raised:
            empty_host.backend_type("acme")
        assert "'first-acme'" in str(raised.value)
        assert "'second-acme'" in str(raised.value)


class MisspeltHookPlugin:
    """Implements ``granite_storage_register_backend`` (singular): a hook that does not exist."""

    @hookimpl
    def granite_storage_register_backend(self, register: RegisterBackend) -> None:
        register("typo", AcmeBackend)


def test_a_plugin_implementing_a_misspelt_hook_is_refused(empty_host: PluginHost) -> None:
    with pytest.raises(PluginError, match="granite_storage_register_backend"):
        empty_host.register(MisspeltHookPlugin(), "misspelt")
    assert "typo" not in empty_host.backend_types()
    # It was unregistered: its name is free again.
    with registered(empty_host, BackendsPlugin(), "misspelt") as name:
        assert name == "misspelt"


def test_a_clash_raises_when_types_are_collected_in_strict_mode() -> None:
    host = PluginHost(strict=True, disabled=())
    with (
        registered(host, BackendsPlugin(("acme", AcmeBackend)), "first-acme"),
        registered(host, BackendsPlugin(("acme", AcmeBackend)), "second-acme"),
        pytest.raises(PluginError, match=r"'first-acme'.*'second-acme'"),
    ):
        host.backend_types()


def test_claiming_an_installed_plugins_name_names_its_distribution(plugin_host: PluginHost) -> None:
    with (
        registered(plugin_host, BackendsPlugin(("local", AcmeBackend)), "impostor"),
        pytest.raises(PluginError) as raised,
    ):
        plugin_host.backend_type("local")
    message = str(raised.value)
    assert "'impostor'" in message
    assert "'local'" in message
    assert "granite-storage-local" in message


def test_a_name_clash_is_a_configuration_error_when_building_from_config(
    empty_host: PluginHost, tmp_path: Path
) -> None:
    config = {"backends": {"vault": {"type": "acme", "directory": str(tmp_path)}}}
    with (
        registered(empty_host, BackendsPlugin(("acme", AcmeBackend)), "first-acme"),
        registered(empty_host, BackendsPlugin(("acme", AcmeBackend)), "second-acme"),
        pytest.raises(ConfigurationError, match="two plugins"),
    ):
        StorageManager.from_config(config, plugins=empty_host)


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("acme", "no_colon_here"),
        ("acme", 42),
        ("acme", object),
        ("acme", LocalStorageBackend.put),
        ("", AcmeBackend),
        (None, AcmeBackend),
    ],
    ids=["string-without-colon", "number", "not-a-backend-class", "function", "empty-name", "no-name"],
)
def test_an_invalid_registration_sets_the_plugin_aside_as_failed(
    empty_host: PluginHost, name: Any, target: Any
) -> None:
    with registered(empty_host, BackendsPlugin((name, target)), "sloppy"):
        assert empty_host.backend_types() == {}
        failure = empty_host.failures["sloppy"]
        assert isinstance(failure.error, PluginError)
        with pytest.raises(PluginError) as raised:
            empty_host.backend_type("acme")
        assert raised.value.__cause__ is failure.error


def test_an_invalid_registration_raises_at_once_in_strict_mode() -> None:
    host = PluginHost(strict=True, disabled=())
    with registered(host, BackendsPlugin(("acme", 42)), "sloppy"), pytest.raises(PluginError, match="sloppy"):
        host.backend_types()


class ExplodingPlugin:
    """A plugin whose registration hook raises."""

    @hookimpl
    def granite_storage_register_backends(self, register: RegisterBackend) -> None:
        register("boom", AcmeBackend)
        raise RuntimeError("the plugin's own bug")


def test_a_plugin_whose_hook_raises_registers_nothing_and_breaks_nothing_else(
    plugin_host: PluginHost, tmp_path: Path
) -> None:
    with registered(plugin_host, ExplodingPlugin(), "exploding"):
        assert "boom" not in plugin_host.backend_types()
        manager = StorageManager.from_config(
            {
                "backends": {"files": {"type": "local", "root": str(tmp_path)}},
                "policies": {"documents": {"backend": "files"}},
            },
            plugins=plugin_host,
        )
        assert manager.backend("files")
        with pytest.raises(PluginError, match="the plugin's own bug") as raised:
            plugin_host.backend_type("boom")
        assert isinstance(raised.value.__cause__, RuntimeError)


# -- lazy "module:Class" targets --------------------------------------------------------------------


@pytest.fixture
def module_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` for modules written by a test; they are forgotten afterwards."""
    directory = tmp_path / "modules"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    try:
        yield directory
    finally:
        forget_modules_from(directory)


def forget_modules_from(directory: Path) -> None:
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if origin is not None and Path(origin).is_relative_to(directory):
            del sys.modules[name]


LAZY_BACKEND = '''
from granite_storage_local import LocalStorageBackend


class LazyBackend(LocalStorageBackend):
    """Imported only when a config uses it."""
'''


def test_a_lazy_target_is_imported_only_when_its_type_is_used(
    module_path: Path, empty_host: PluginHost, tmp_path: Path
) -> None:
    (module_path / "lazy_backend_module.py").write_text(LAZY_BACKEND, encoding="utf-8")
    target = "lazy_backend_module:LazyBackend"
    with registered(empty_host, BackendsPlugin(("lazy", target)), "lazy-plugin"):
        assert empty_host.backend_type("lazy").target == target
        assert "lazy_backend_module" not in sys.modules

        backend = empty_host.create_backend("lazy", {"root": str(tmp_path / "lazy")})
        assert "lazy_backend_module" in sys.modules
        assert type(backend).__name__ == "LazyBackend"
        assert type(backend) is sys.modules["lazy_backend_module"].LazyBackend


def test_a_lazy_target_in_a_missing_module_raises_plugin_error_chained_to_the_import_error(
    empty_host: PluginHost,
) -> None:
    target = "granite_storage_nonexistent_module:Backend"
    with (
        registered(empty_host, BackendsPlugin(("ghost", target)), "ghost-plugin"),
        pytest.raises(PluginError, match="ghost") as raised,
    ):
        empty_host.create_backend("ghost", {})
    assert isinstance(raised.value.__cause__, ImportError)
    assert raised.value.__cause__.name == "granite_storage_nonexistent_module"
    assert "'ghost-plugin'" in str(raised.value)


def test_a_lazy_target_naming_a_missing_class_raises_plugin_error_chained_to_the_attribute_error(
    empty_host: PluginHost,
) -> None:
    with (
        registered(empty_host, BackendsPlugin(("ghost", "granite_storage_local:NoSuchBackend")), "ghost"),
        pytest.raises(PluginError) as raised,
    ):
        empty_host.create_backend("ghost", {})
    assert isinstance(raised.value.__cause__, AttributeError)


def test_a_lazy_target_that_is_not_a_backend_class_raises_plugin_error(empty_host: PluginHost) -> None:
    with (
        registered(empty_host, BackendsPlugin(("json", "json:JSONDecoder")), "json-plugin"),
        pytest.raises(PluginError, match="not a StorageBackend subclass"),
    ):
        empty_host.create_backend("json", {})


def test_a_broken_lazy_target_surfaces_through_from_config(empty_host: PluginHost) -> None:
    config = {"backends": {"files": {"type": "ghost"}}}
    with (
        registered(empty_host, BackendsPlugin(("ghost", "granite_storage_nonexistent_module:B")), "ghost"),
        pytest.raises(PluginError) as raised,
    ):
        StorageManager.from_config(config, plugins=empty_host)
    assert isinstance(raised.value.__cause__, ImportError)


# -- resolving policies -----------------------------------------------------------------------------


def test_a_plugin_supplies_the_policy_of_a_storage_key_not_configured(
    storage_root: Path, empty_host: PluginHost
) -> None:
    manager = local_manager(storage_root, empty_host)
    with registered(empty_host, TenantPlugin(), "tenants"):
        ref = store(manager, "tenant-7", b"tenant data")
        assert manager.policy("tenant-7").key_prefix == "tenants/7"
        assert manager.get(ref) == b"tenant data"
    assert ref.storage_key == "tenant-7"
    assert ref.location.startswith("tenants/7/")
    # Reading checks a reference against its slot's policy: with the plugin gone, the slot is unknown.
    with pytest.raises(granite_storage.ConfigurationError, match="tenant-7"):
        manager.get(ref)


def test_a_resolved_policy_is_enforced(storage_root: Path, empty_host: PluginHost) -> None:
    manager = local_manager(storage_root, empty_host)
    with (
        registered(empty_host, TenantPlugin(), "tenants"),
        pytest.raises(granite_storage.ContentTooLargeError),
    ):
        store(manager, "tenant-7", b"x" * 101)


def test_static_policies_win_and_the_hook_is_not_asked_for_them(
    storage_root: Path, empty_host: PluginHost
) -> None:
    static = StoragePolicy("documents", backend_key="local", max_size=10)
    plugin = PolicyPlugin({"documents": StoragePolicy("documents", backend_key="local", max_size=999)})
    manager = local_manager(storage_root, empty_host, documents=static)
    with registered(empty_host, plugin, "override-attempt"):
        assert manager.policy("documents") is static
        store(manager, "documents", b"x" * 10)
    assert plugin.asked == []


def test_the_first_non_none_answer_wins(storage_root: Path, empty_host: PluginHost) -> None:
    manager = local_manager(storage_root, empty_host)
    passes = FirstPolicyPlugin()
    answers = PolicyPlugin({"reports": StoragePolicy("reports", backend_key="local", key_prefix="first")})
    never_asked = LastPolicyPlugin(
        {"reports": StoragePolicy("reports", backend_key="local", key_prefix="last")}
    )
    with (
        registered(empty_host, passes, "passes"),
        registered(empty_host, answers, "answers"),
        registered(empty_host, never_asked, "never-asked"),
    ):
        assert manager.policy("reports").key_prefix == "first"
    assert [key for key, _ in passes.asked] == ["reports"]
    assert [key for key, _ in answers.asked] == ["reports"]
    assert never_asked.asked == []


def test_the_hook_receives_the_manager_and_is_asked_every_time(
    storage_root: Path, empty_host: PluginHost
) -> None:
    manager = local_manager(storage_root, empty_host)
    plugin = PolicyPlugin({"reports": StoragePolicy("reports", backend_key="local")})
    with registered(empty_host, plugin, "reports"):
        manager.policy("reports")
        manager.policy("reports")
    assert plugin.asked == [("reports", manager), ("reports", manager)]


def test_no_answer_is_an_unknown_storage_key(storage_root: Path, empty_host: PluginHost) -> None:
    manager = local_manager(
        storage_root, empty_host, documents=StoragePolicy("documents", backend_key="local")
    )
    with (
        registered(empty_host, PolicyPlugin(), "silent"),
        pytest.raises(ConfigurationError, match=r"'reports'.*\['documents'\]"),
    ):
        manager.policy("reports")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (StoragePolicy("other", backend_key="local"), "'other'"),
        (StoragePolicy("reports", backend_key="s3"), r"'s3'.*\['local'\]"),
        (StoragePolicy("reports", backend_key="local", key_prefix="docs/reports"), "overlapping"),
    ],
    ids=["another-storage-key", "unconfigured-backend", "overlapping-prefix"],
)
def test_an_unusable_resolved_policy_raises_configuration_error(
    storage_root: Path, empty_host: PluginHost, answer: StoragePolicy, message: str
) -> None:
    manager = local_manager(
        storage_root, empty_host, documents=StoragePolicy("documents", backend_key="local", key_prefix="docs")
    )
    with (
        registered(empty_host, PolicyPlugin({"reports": answer}), "wrong"),
        pytest.raises(ConfigurationError, match=message),
    ):
        manager.policy("reports")


# -- a third-party distribution installed on sys.path ------------------------------------------------


class SitePackages:
    """Installs small distributions (modules plus ``.dist-info``) into directories on ``sys.path``."""

    def __init__(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.base = base
        self.monkeypatch = monkeypatch
        self.directories: list[Path] = []

    def install(
        self, distribution: str, version: str, *, entry_points: dict[str, str], files: dict[str, str]
    ) -> Path:
        # Each distribution gets a directory of its own, so no finder cache ever sees a half-written one.
        site = self.base / f"site-{len(self.directories)}"
        for relative, text in files.items():
            path = site / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        dist_info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n", encoding="utf-8"
        )
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (dist_info / "entry_points.txt").write_text(f"[granite_storage]\n{lines}", encoding="utf-8")
        self.monkeypatch.syspath_prepend(str(site))
        self.directories.append(site)
        return site


@pytest.fixture
def site_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_plugin_env: None
) -> Iterator[SitePackages]:
    site = SitePackages(tmp_path / "site-packages", monkeypatch)
    try:
        yield site
    finally:
        for directory in site.directories:
            forget_modules_from(directory)


ACME_DISTRIBUTION: dict[str, str] = {
    "acme_storage/__init__.py": '"""Acme storage: a third-party granite-storage plugin."""\n',
    "acme_storage/hooks.py": """
        from granite_storage import hookimpl


        @hookimpl
        def granite_storage_register_backends(register):
            register("acme", "acme_storage.backend:AcmeBackend")
        """,
    "acme_storage/backend.py": """
        from pathlib import Path

        from granite_storage_local import LocalStorageBackend


        class AcmeBackend(LocalStorageBackend):
            def __init__(self, *, directory, shard="a"):
                super().__init__(Path(directory) / shard)
        """,
}

BROKEN_DISTRIBUTION: dict[str, str] = {
    "shaky_plugin/__init__.py": "",
    "shaky_plugin/hooks.py": """
        import acme_dependency_that_is_not_installed  # noqa: F401
        """,
}


def install_acme(site_packages: SitePackages) -> None:
    site_packages.install(
        "acme-storage", "1.0", entry_points={"acme": "acme_storage.hooks"}, files=ACME_DISTRIBUTION
    )


def install_shaky(site_packages: SitePackages) -> None:
    site_packages.install(
        "shaky-storage", "0.3", entry_points={"shaky": "shaky_plugin.hooks"}, files=BROKEN_DISTRIBUTION
    )


def loaded_host(**options: Any) -> PluginHost:
    host = PluginHost(**options)
    host.load_entry_points()
    return host


def test_an_installed_distribution_is_discovered_through_its_entry_point(site_packages: SitePackages) -> None:
    install_acme(site_packages)
    host = loaded_host()
    acme = host.backend_types()["acme"]
    assert (acme.plugin, acme.distribution, acme.version) == ("acme", "acme-storage", "1.0")
    assert acme.target == "acme_storage.backend:AcmeBackend"
    assert "local" in host.backend_types()


def test_an_installed_distributions_backend_works_by_name_end_to_end(
    site_packages: SitePackages, tmp_path: Path
) -> None:
    install_acme(site_packages)
    host = loaded_host()
    assert "acme_storage.backend" not in sys.modules
    manager = StorageManager.from_config(
        {
            "backends": {"vault": {"type": "acme", "directory": str(tmp_path / "vault"), "shard": "s1"}},
            "policies": {"contracts": {"backend": "vault", "max_size": "1KB", "key_prefix": "contracts"}},
        },
        plugins=host,
    )
    assert type(manager.backend("vault")).__module__ == "acme_storage.backend"
    ref = manager.put_stream(
        storage_key="contracts",
        model_name="contract",
        entity_id="9",
        field_name="pdf",
        stream=io.BytesIO(b"%PDF signed"),
        original_filename="contract.pdf",
    )
    assert manager.get(ref) == b"%PDF signed"
    assert files_under(tmp_path / "vault" / "s1") == [ref.location]
    with pytest.raises(granite_storage.ContentTooLargeError):
        store(manager, "contracts", b"x" * 1025)
    manager.delete(ref)
    assert not manager.exists(ref)


def test_a_plugin_that_fails_to_import_does_not_break_other_backends(
    site_packages: SitePackages, storage_root: Path
) -> None:
    install_shaky(site_packages)
    host = loaded_host()
    manager = StorageManager.from_config(
        {
            "backends": {"files": {"type": "local", "root": str(storage_root)}},
            "policies": {"documents": {"backend": "files"}},
        },
        plugins=host,
    )
    assert manager.get(store(manager, "documents", b"still fine")) == b"still fine"


def test_a_plugin_that_fails_to_import_is_recorded(
    site_packages: SitePackages, caplog: pytest.LogCaptureFixture
) -> None:
    install_shaky(site_packages)
    with caplog.at_level(logging.WARNING, logger="granite_storage.plugins"):
        host = loaded_host()
    failure = host.failures["shaky"]
    assert (failure.name, failure.value, failure.distribution) == (
        "shaky",
        "shaky_plugin.hooks",
        "shaky-storage",
    )
    assert isinstance(failure.error, ModuleNotFoundError)
    assert any("shaky" in record.getMessage() for record in caplog.records)


def test_asking_for_a_failed_plugins_type_raises_plugin_error_chained_to_the_import_error(
    site_packages: SitePackages,
) -> None:
    install_shaky(site_packages)
    host = loaded_host()
    with pytest.raises(PluginError) as raised:
        StorageManager.from_config({"backends": {"wobbly": {"type": "shaky"}}}, plugins=host)
    cause = raised.value.__cause__
    assert isinstance(cause, ModuleNotFoundError)
    assert cause.name == "acme_dependency_that_is_not_installed"
    assert "shaky-storage" in str(raised.value)


def test_strict_mode_raises_at_load_chained_to_the_import_error(site_packages: SitePackages) -> None:
    install_shaky(site_packages)
    with pytest.raises(PluginError, match="shaky") as raised:
        loaded_host(strict=True)
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "TRUE"])
def test_strict_mode_can_be_switched_on_by_environment(
    site_packages: SitePackages, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    install_shaky(site_packages)
    monkeypatch.setenv("GRANITE_STORAGE_STRICT_PLUGINS", value)
    host = PluginHost()
    assert host.strict
    with pytest.raises(PluginError):
        host.load_entry_points()


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_strict_mode_is_off_unless_the_environment_says_so(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GRANITE_STORAGE_STRICT_PLUGINS", value)
    assert not PluginHost().strict


def test_an_explicit_strict_argument_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRANITE_STORAGE_STRICT_PLUGINS", "1")
    assert not PluginHost(strict=False).strict


@pytest.mark.parametrize("value", ["shaky", "other, shaky", " shaky ,acme-legacy"])
def test_plugins_named_in_the_environment_are_never_loaded(
    site_packages: SitePackages, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    install_shaky(site_packages)
    monkeypatch.setenv("GRANITE_STORAGE_DISABLE_PLUGINS", value)
    monkeypatch.setenv("GRANITE_STORAGE_STRICT_PLUGINS", "1")
    host = loaded_host()
    assert "shaky" in host.disabled
    assert dict(host.failures) == {}
    assert "shaky_plugin" not in sys.modules
    assert "local" in host.backend_types()


def test_a_disabled_plugin_is_not_imported_and_its_type_is_unknown(site_packages: SitePackages) -> None:
    install_acme(site_packages)
    host = loaded_host(disabled=["acme"])
    assert "acme_storage" not in sys.modules
    with pytest.raises(ConfigurationError, match="'acme'") as raised:
        host.backend_type("acme")
    assert not isinstance(raised.value, PluginError)


def test_loading_entry_points_twice_loads_each_plugin_once(site_packages: SitePackages) -> None:
    install_acme(site_packages)
    host = loaded_host()
    host.load_entry_points()
    assert host.backend_type("acme").distribution == "acme-storage"
    assert dict(host.failures) == {}


# -- discovery happens when a manager is built, never at import ---------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GRANITE_STORAGE_")}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_importing_granite_storage_loads_no_entry_points() -> None:
    run_python(
        """
        import importlib.metadata
        import sys

        asked = []
        original = importlib.metadata.entry_points

        def spy(*args, **kwargs):
            asked.append((args, kwargs))
            return original(*args, **kwargs)

        importlib.metadata.entry_points = spy
        import granite_storage
        import granite_storage.backends.local

        assert asked == [], asked
        for name in ("granite_storage_local.hooks", "granite_storage_memory"):
            assert name not in sys.modules, name
        """
    )


def test_importing_granite_storage_imports_neither_boto3_nor_fastapi() -> None:
    run_python(
        """
        import sys
        import granite_storage

        for name in ("boto3", "botocore", "fastapi", "starlette"):
            assert name not in sys.modules, name
        """
    )


def test_building_a_manager_discovers_the_installed_plugins() -> None:
    run_python(
        """
        import sys
        from granite_storage import StorageManager

        assert "granite_storage_local.hooks" not in sys.modules
        StorageManager(backends={}, policies={})
        assert "granite_storage_local.hooks" in sys.modules
        """
    )


def test_managers_without_a_host_share_the_default_one() -> None:
    first = StorageManager(backends={}, policies={})
    second = StorageManager(backends={}, policies={})
    assert first.plugins is second.plugins is default_plugin_host()


def test_the_default_host_discovers_the_local_type_from_its_distribution() -> None:
    local = default_plugin_host().backend_types()["local"]
    assert (local.distribution, local.version) == ("granite-storage-local", "0.2.0")
    assert local.plugin == "local"
    assert local.load() is LocalStorageBackend


def test_the_local_plugin_is_registered_only_through_its_entry_point() -> None:
    entry_points = importlib.metadata.distribution("granite-storage-local").entry_points
    assert [(ep.group, ep.name, ep.value) for ep in entry_points] == [
        ("granite_storage", "local", "granite_storage_local.hooks")
    ]
    assert "local" not in PluginHost(disabled=()).backend_types()


def test_hookimpl_is_the_marker_of_the_granite_storage_project() -> None:
    assert granite_storage.hookimpl.project_name == "granite_storage"
    assert not hasattr(granite_storage, "hookspec")


# -- plugins that misbehave: a name clash, a SystemExit, a policy hook that raises -------------------

IMPOSTOR_DISTRIBUTION: dict[str, str] = {
    "impostor_storage/__init__.py": "",
    "impostor_storage/hooks.py": """
        from granite_storage import hookimpl
        from granite_storage_local import LocalStorageBackend


        class ImpostorBackend(LocalStorageBackend):
            pass


        @hookimpl
        def granite_storage_register_backends(register):
            register("local", ImpostorBackend)
        """,
}


def install_impostor(site_packages: SitePackages) -> None:
    site_packages.install(
        "impostor-storage",
        "6.6",
        entry_points={"local": "impostor_storage.hooks"},
        files=IMPOSTOR_DISTRIBUTION,
    )


def test_an_entry_point_named_like_an_installed_plugin_replaces_neither(
    site_packages: SitePackages, tmp_path: Path
) -> None:
    install_impostor(site_packages)
    host = loaded_host(strict=False)
    failure = host.failures["local"]
    assert "granite-storage-local" in str(failure.error)
    assert "impostor-storage" in str(failure.error)
    assert "impostor_storage.hooks" not in sys.modules
    with pytest.raises(PluginError, match="impostor-storage"):
        StorageManager.from_config(
            {"backends": {"files": {"type": "local", "root": str(tmp_path)}}}, plugins=host
        )


def test_an_entry_point_name_clash_raises_at_load_in_strict_mode(site_packages: SitePackages) -> None:
    install_impostor(site_packages)
    with pytest.raises(
        PluginError, match=r"granite-storage-local.*impostor-storage|impostor-storage.*granite"
    ):
        loaded_host(strict=True)


def test_the_plugins_command_reports_an_entry_point_name_clash_and_fails(site_packages: SitePackages) -> None:
    from click.testing import CliRunner

    from granite_storage.cli import EXIT_FAILURES
    from granite_storage.cli._commands import cli

    install_impostor(site_packages)
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == EXIT_FAILURES
    assert "plugin 'local'" in result.stderr
    assert "impostor-storage" in result.stderr


@pytest.mark.parametrize(
    "statement", ["raise SystemExit(3)", "raise GeneratorExit", "raise BaseException('not an Exception')"]
)
def test_a_plugin_that_raises_a_base_exception_at_import_is_set_aside(
    site_packages: SitePackages, storage_root: Path, statement: str
) -> None:
    site_packages.install(
        "exiting-storage",
        "0.1",
        entry_points={"exiting": "exiting_plugin.hooks"},
        files={"exiting_plugin/__init__.py": "", "exiting_plugin/hooks.py": statement + "\n"},
    )
    host = loaded_host(strict=False)
    assert "exiting" in host.failures
    manager = StorageManager.from_config(
        {
            "backends": {"files": {"type": "local", "root": str(storage_root)}},
            "policies": {"documents": {"backend": "files"}},
        },
        plugins=host,
    )
    assert manager.get(store(manager, "documents", b"still here")) == b"still here"


class ExitingRegistration:
    @hookimpl
    def granite_storage_register_backends(self, register: Callable[..., None]) -> None:
        raise SystemExit("a plugin that thinks it owns the process")


def test_a_registration_hook_that_raises_system_exit_is_set_aside(empty_host: PluginHost) -> None:
    with registered(empty_host, ExitingRegistration(), "exiting"):
        assert "exiting" in empty_host.failures
        assert isinstance(empty_host.failures["exiting"].error, SystemExit)


def test_a_lazy_target_whose_import_raises_system_exit_raises_plugin_error(
    site_packages: SitePackages, empty_host: PluginHost
) -> None:
    site_packages.install(
        "exit-target",
        "0.1",
        entry_points={},
        files={"exit_target/__init__.py": "", "exit_target/backend.py": "raise SystemExit(1)\n"},
    )
    with registered(empty_host, BackendsPlugin(("exiting", "exit_target.backend:Backend")), "exit-target"):
        with pytest.raises(PluginError, match="'exiting'") as raised:
            empty_host.backend_type("exiting").load()
        assert isinstance(raised.value.__cause__, SystemExit)


class RaisingPolicyPlugin:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    @hookimpl
    def granite_storage_resolve_policy(
        self, storage_key: str, manager: StorageManager
    ) -> StoragePolicy | None:
        raise self.error


class WrongTypePolicyPlugin:
    @hookimpl
    def granite_storage_resolve_policy(self, storage_key: str, manager: StorageManager) -> object:
        return {"backend": "local"}


@pytest.mark.parametrize("error", [RuntimeError("tenant database down"), KeyError("tenant"), SystemExit(2)])
def test_a_resolve_policy_hook_that_raises_is_a_plugin_error_naming_the_plugin(
    storage_root: Path, empty_host: PluginHost, error: BaseException
) -> None:
    manager = local_manager(storage_root, empty_host)
    with (
        registered(empty_host, RaisingPolicyPlugin(error), "tenants"),
        pytest.raises(PluginError, match=r"plugin 'tenants'.*'reports'") as raised,
    ):
        manager.policy("reports")
    assert raised.value.__cause__ is error


def test_a_resolve_policy_hook_returning_the_wrong_type_is_a_plugin_error_naming_the_plugin(
    storage_root: Path, empty_host: PluginHost
) -> None:
    manager = local_manager(storage_root, empty_host)
    with (
        registered(empty_host, WrongTypePolicyPlugin(), "sloppy"),
        pytest.raises(PluginError, match=r"plugin 'sloppy'.*not a StoragePolicy"),
    ):
        manager.policy("reports")


def test_garbage_collection_survives_a_resolve_policy_hook_that_raises(
    storage_root: Path, empty_host: PluginHost
) -> None:
    manager = local_manager(
        storage_root, empty_host, documents=StoragePolicy("documents", backend_key="local")
    )
    kept = store(manager, "documents", b"kept")
    stranger = StoredObjectRef(
        storage_key="tenant-9", backend="local", location=kept.location, size=4, checksum=kept.checksum
    )
    with registered(empty_host, RaisingPolicyPlugin(RuntimeError("down")), "tenants"):
        report = StorageGarbageCollector(
            manager=manager, iter_references=lambda: [stranger], min_age=timedelta(0)
        ).collect("documents", dry_run=False)
    assert report.deleted == 0
    assert manager.get(kept) == b"kept"
