"""SeaweedFS killed (SIGKILL of ``weed``) in the middle of a multipart upload: 50 trials.

The scenario runs a SeaweedFS of its own (:class:`granite_storage_s3.testing.SeaweedFS`). In each trial a
thread stores a 24 MiB object through the manager (five 5 MiB parts: a multipart upload); once the
first part has been read from the caller's stream, the server is killed at a random moment within
the time the rest of an upload takes (measured first), and the upload fails (or had just completed).
The server is then started again on the same data directory and ports, and the invariant is checked:

* no object is visible at a final key unless it is complete: every object listed has the 24 MiB,
  and an upload that returned a reference reads back and verifies;
* no incomplete multipart upload survives its cleanup: the killed upload could not be aborted (the
  server was gone), ``remove_incomplete_uploads`` aborts it, and none is left.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from granite_storage import PluginHost, StorageError, StorageManager, StoragePolicy, StoredObjectRef
from granite_storage_s3 import S3StorageBackend
from granite_storage_s3.backend import MIN_PART_SIZE
from granite_storage_s3.testing import SeaweedFS, SeaweedFSUnavailableError

from ..fastapi.conftest import s3_servers  # the S3 plugin's conftest, loaded as a module
from .invariant import assert_only_complete_objects, digest, s3_incomplete_uploads

TRIALS = 50
CONTENT = random.Random(1601).randbytes(5 * MIN_PART_SIZE - 1024)
PREFIX = "killed"


class SignallingStream(io.RawIOBase):
    """``content`` as a stream that sets ``multipart`` once the first part has been read from it."""

    def __init__(self, content: bytes) -> None:
        self._content = io.BytesIO(content)
        self.multipart = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = self._content.readinto(buffer)
        if self._content.tell() > MIN_PART_SIZE:
            self.multipart.set()
        return count


@pytest.fixture
def seaweedfs(tmp_path: Path) -> Iterator[SeaweedFS]:
    try:
        server = SeaweedFS(tmp_path)
        server.start()
    except SeaweedFSUnavailableError as exc:
        s3_servers.skip_or_fail(str(exc))
        raise
    try:
        server.server.client().create_bucket(Bucket=server.server.bucket)
        yield server
    finally:
        server.stop()


def make_manager(server: SeaweedFS) -> StorageManager:
    # Short timeouts and two attempts: a dead server fails the upload in seconds, not minutes.
    client = server.server.client(
        connect_timeout=1, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 2}
    )
    backend = S3StorageBackend(
        server.server.bucket, client=client, prefix=PREFIX, part_size=MIN_PART_SIZE, max_concurrency=2
    )
    return StorageManager(
        backends={"s3": backend},
        policies={"files": StoragePolicy("files", backend_key="s3")},
        plugins=PluginHost(strict=False, disabled=()),
    )


def store(manager: StorageManager, stream: SignallingStream, outcome: list[object]) -> None:
    try:
        outcome.append(
            manager.put_stream(
                storage_key="files", model_name="doc", entity_id="1", field_name="file", stream=stream
            )
        )
    except StorageError as exc:
        outcome.append(exc)


@pytest.mark.faults
def test_seaweedfs_killed_mid_multipart_upload_leaves_no_partial_object_and_no_upload_after_cleanup(
    seaweedfs: SeaweedFS, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(seaweedfs)
    backend = manager.backend("s3")
    assert isinstance(backend, S3StorageBackend)
    clean = manager.put_bytes(
        storage_key="files", model_name="doc", entity_id="0", field_name="file", content=CONTENT
    )
    # How long an upload runs once its first part is read (the server warmed up by the first): the
    # window the kill is drawn from.
    timed, timed_outcome = SignallingStream(CONTENT), list[object]()
    worker = threading.Thread(target=store, args=(manager, timed, timed_outcome))
    worker.start()
    assert timed.multipart.wait(30)
    started = time.monotonic()
    worker.join(120)
    upload_seconds = time.monotonic() - started
    assert isinstance(timed_outcome[0], StoredObjectRef)
    chance = random.Random(1602)
    failed = completed = cleaned_up = 0
    for _ in range(TRIALS):
        stream = SignallingStream(CONTENT)
        outcome: list[object] = []
        worker = threading.Thread(target=store, args=(manager, stream, outcome))
        with caplog.at_level(logging.CRITICAL, logger="granite_storage_s3"):  # the failed aborts
            worker.start()
            assert stream.multipart.wait(30)
            time.sleep(chance.uniform(0, upload_seconds))
            seaweedfs.kill()
            worker.join(120)
        assert not worker.is_alive()
        seaweedfs.start()

        (result,) = outcome
        if isinstance(result, StoredObjectRef):
            completed += 1
            assert manager.verify(result)
        else:
            failed += 1
        assert_only_complete_objects(backend, {digest(CONTENT)})
        assert manager.verify(clean), "an object completed before the trial did not survive the kill"
        left = s3_incomplete_uploads(backend.client, backend.bucket, PREFIX + "/")
        cleaned_up += len(left)
        assert backend.remove_incomplete_uploads(older_than=timedelta(0)) == len(left)
        assert s3_incomplete_uploads(backend.client, backend.bucket, PREFIX + "/") == []
    print(
        f"SeaweedFS killed: {TRIALS} trials, {failed} uploads failed, {completed} completed, "
        f"{cleaned_up} incomplete uploads aborted by the cleanup, 0 partial objects"
    )
    assert failed >= TRIALS // 3, f"only {failed} of {TRIALS} kills hit an upload in progress"
