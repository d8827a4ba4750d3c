"""The core's conformance suite, against moto and against a real S3 server (SeaweedFS)."""

import pytest

from granite_storage.testing import BackendConformanceSuite
from granite_storage_s3 import S3StorageBackend
from granite_storage_s3.backend import MIN_PART_SIZE
from granite_storage_s3.testing import S3Server


class TestS3ConformanceOnMoto(BackendConformanceSuite):
    # Large enough for a multipart upload of three parts.
    large_size = 2 * MIN_PART_SIZE + 17

    @pytest.fixture
    def backend(self, moto_s3: S3Server) -> S3StorageBackend:
        return moto_s3.backend(part_size=MIN_PART_SIZE)


class TestS3ConformanceOnSeaweedFS(BackendConformanceSuite):
    large_size = 2 * MIN_PART_SIZE + 17

    @pytest.fixture
    def backend(self, real_s3: S3Server) -> S3StorageBackend:
        return real_s3.backend(part_size=MIN_PART_SIZE)
