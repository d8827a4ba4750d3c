import pytest

from granite_storage.testing import BackendConformanceSuite
from granite_storage_memory import MemoryStorageBackend


class TestMemoryBackendConformance(BackendConformanceSuite):
    @pytest.fixture
    def backend(self) -> MemoryStorageBackend:
        return MemoryStorageBackend()
