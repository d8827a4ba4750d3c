"""Fixtures shared by the local backend's tests: a storage root in ``tmp_path`` and a backend on it."""

from pathlib import Path

import pytest

from granite_storage_local import LocalStorageBackend


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Where the backend keeps its objects (created by the backend, not by the fixture)."""
    return tmp_path / "root"


@pytest.fixture
def backend(root: Path) -> LocalStorageBackend:
    """A backend with default options on an empty root."""
    return LocalStorageBackend(root)
