from pathlib import Path

import pytest

from granite_storage.testing import BackendConformanceSuite
from granite_storage_local import LocalStorageBackend


class TestLocalBackendConformance(BackendConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> LocalStorageBackend:
        return LocalStorageBackend(tmp_path / "root")


class TestLocalBackendWithFsyncConformance(BackendConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> LocalStorageBackend:
        return LocalStorageBackend(tmp_path / "root", fsync=True)
