"""The seed's (0.1.0) import paths keep working now that the backends live in plugin distributions."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest

import granite_storage_local
from granite_storage.backends.local import LocalStorageBackend


def test_the_local_backend_path_resolves_to_the_plugin_class() -> None:
    assert LocalStorageBackend is granite_storage_local.LocalStorageBackend
    assert LocalStorageBackend.__module__ == "granite_storage_local.backend"


def test_the_local_backend_path_exports_only_the_backend() -> None:
    module = importlib.import_module("granite_storage.backends.local")
    assert module.__all__ == ["LocalStorageBackend"]


@pytest.fixture
def without_s3_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if granite-storage-s3 were not installed: importing it raises ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "granite_storage_s3", None)
    monkeypatch.delitem(sys.modules, "granite_storage.backends.s3", raising=False)


@pytest.mark.usefixtures("without_s3_plugin")
def test_the_s3_backend_path_raises_import_error_naming_the_pip_command() -> None:
    with pytest.raises(ImportError, match=r'pip install "granite-storage\[s3\]"') as raised:
        importlib.import_module("granite_storage.backends.s3")
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)
    assert raised.value.__cause__.name == "granite_storage_s3"
    assert "not released" not in str(raised.value)


@pytest.mark.usefixtures("without_s3_plugin")
def test_the_s3_backend_path_fails_the_same_way_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ImportError, match="granite-storage-s3"):
            importlib.import_module("granite_storage.backends.s3")
    assert "granite_storage.backends.s3" not in sys.modules


def test_the_s3_backend_path_resolves_to_the_plugin_class() -> None:
    if importlib.util.find_spec("granite_storage_s3") is None:
        pytest.skip("granite-storage-s3 is not installed")
    import granite_storage_s3
    from granite_storage.backends.s3 import S3StorageBackend

    assert S3StorageBackend is granite_storage_s3.S3StorageBackend
    assert S3StorageBackend.__module__ == "granite_storage_s3.backend"
