"""The seed's (0.1.0) import paths keep working now that the backends live in plugin distributions."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
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


def test_the_sqlalchemy_integration_path_re_exports_the_orm_package() -> None:
    import granite_storage.orm
    from granite_storage.integrations import sqlalchemy
    from granite_storage.integrations.sqlalchemy import iter_model_storage_refs

    assert iter_model_storage_refs is granite_storage.orm.iter_model_storage_refs
    assert sorted(sqlalchemy.__all__) == sorted(granite_storage.orm.__all__)
    for name in sqlalchemy.__all__:
        assert getattr(sqlalchemy, name) is getattr(granite_storage.orm, name)


def test_the_sqlalchemy_integration_path_does_not_import_fastapi() -> None:
    code = "import sys, granite_storage.integrations.sqlalchemy; print('fastapi' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_storage_json_type_is_the_portable_reference_column_type() -> None:
    from sqlalchemy import create_mock_engine

    from granite_storage import StorageJSONType, portable_storage_ref_type

    compiled = {}
    for url in ("postgresql+psycopg://", "sqlite://"):
        dialect = create_mock_engine(url, executor=print).dialect
        compiled[dialect.name] = str(StorageJSONType.compile(dialect=dialect))
        assert compiled[dialect.name] == str(portable_storage_ref_type().compile(dialect=dialect))
    assert compiled == {"postgresql": "JSONB", "sqlite": "JSON"}
