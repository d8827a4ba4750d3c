"""Fixtures shared by the core test suite: real directories, the real local backend, plugin hosts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from granite_storage import PluginHost, StorageManager, StoragePolicy
from granite_storage_local import LocalStorageBackend


def files_under(root: Path) -> list[str]:
    """Every file below ``root`` (hidden temporary files included), as sorted relative POSIX paths."""
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            found.append((Path(directory) / name).relative_to(root).as_posix())
    return sorted(found)


def entries_under(root: Path) -> list[str]:
    """Every file and directory below ``root``, as sorted relative POSIX paths."""
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    """The root directory of the local backend under test (not created: the backend creates it)."""
    return tmp_path / "storage"


@pytest.fixture
def local_backend(storage_root: Path) -> LocalStorageBackend:
    """The real local backend over a fresh directory."""
    return LocalStorageBackend(storage_root)


@pytest.fixture
def plugin_host() -> PluginHost:
    """A host of its own with the installed entry points loaded, untouched by operator variables."""
    host = PluginHost(strict=False, disabled=())
    host.load_entry_points()
    return host


@pytest.fixture
def empty_host() -> PluginHost:
    """A host with no plugins at all: the manager resolves nothing beyond its static policies."""
    return PluginHost(strict=False, disabled=())


@pytest.fixture
def manager(local_backend: LocalStorageBackend, empty_host: PluginHost) -> StorageManager:
    """Two slots on one local backend: ``avatars`` (2 MiB) and ``documents`` (10 MiB, prefix ``docs``)."""
    return StorageManager(
        backends={"local": local_backend},
        policies={
            "avatars": StoragePolicy(
                "avatars", backend_key="local", max_size=2 * 1024 * 1024, key_prefix="avatars"
            ),
            "documents": StoragePolicy(
                "documents", backend_key="local", max_size=10 * 1024 * 1024, key_prefix="docs"
            ),
        },
        plugins=empty_host,
    )


@pytest.fixture
def clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No operator variables (strict mode, disabled plugins) leak in from the environment."""
    monkeypatch.delenv("GRANITE_STORAGE_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("GRANITE_STORAGE_DISABLE_PLUGINS", raising=False)


#: Set by CI, where a missing libmagic must fail the content-rule tests instead of skipping them.
REQUIRE_LIBMAGIC_ENV = "GRANITE_TEST_REQUIRE_LIBMAGIC"


def skip_without_libmagic() -> None:
    """Skip the calling test where content cannot be sniffed (python-magic or libmagic missing).

    Content rules (``allowed_types``) read types with the system's libmagic, which pip cannot install.
    With ``GRANITE_TEST_REQUIRE_LIBMAGIC=1`` (CI) a missing libmagic fails instead.
    """
    from granite_storage._sniffing import require_sniffer
    from granite_storage.errors import ConfigurationError

    try:
        require_sniffer()
    except ConfigurationError as exc:
        if os.environ.get(REQUIRE_LIBMAGIC_ENV) == "1":
            pytest.fail(f"{REQUIRE_LIBMAGIC_ENV}=1, but {exc}")
        pytest.skip(
            f"libmagic is not usable here ({exc}); "
            "Debian: apt install libmagic1, macOS: brew install libmagic"
        )


@pytest.fixture
def libmagic() -> None:
    """Skip a test that needs libmagic where it is missing (see :func:`skip_without_libmagic`)."""
    skip_without_libmagic()
