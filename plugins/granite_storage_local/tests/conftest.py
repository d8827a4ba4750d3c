"""Fixtures shared by the local backend's tests: a storage root in ``tmp_path`` and a backend on it."""

from pathlib import Path

import pytest

from granite_storage_local import LocalStorageBackend, _paths


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Where the backend keeps its objects (created by the backend, not by the fixture)."""
    return tmp_path / "root"


@pytest.fixture
def backend(root: Path) -> LocalStorageBackend:
    """A backend with default options on an empty root."""
    return LocalStorageBackend(root)


@pytest.fixture(params=["openat2", "walk"])
def each_resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once per way the backend resolves paths: ``openat2`` (where the kernel has it) and
    the walk one directory at a time that every other system uses."""
    if request.param == "openat2" and _paths.openat2 is None:
        pytest.skip("this kernel or libc has no openat2")
    if request.param == "walk":
        monkeypatch.setattr(_paths, "openat2", None)
    return str(request.param)
