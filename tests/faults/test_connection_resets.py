"""A connection reset (TCP RST) in the middle of an upload and in the middle of a download: 20 trials each.

Over S3, a :class:`~tests.faults.proxy.FaultProxy` sits between the S3 client and SeaweedFS; over HTTP,
between an httpx client and the FastAPI test service (``tests/fastapi/service.py``, served by uvicorn,
storing on local disk). Each trial resets the connection after a random number of bytes of the body.
The invariant after every trial:

* no object is visible at a final key unless it is complete (every object listed has the bytes sent),
  and a download either returns every byte or fails: a cut body is never taken for the whole;
* no incomplete upload survives its cleanup: the library's own clean-up (the multipart upload
  aborted, the temporary file removed) leaves none, without waiting for ``remove_incomplete_uploads``.

Uploads over S3 alternate between one attempt (the reset fails the upload) and botocore's retries (the
part is sent again on a new connection and the upload completes).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from granite_storage import PluginHost, StorageError, StorageManager, StoragePolicy, StoredObjectRef
from granite_storage_local import LocalStorageBackend
from granite_storage_s3 import S3StorageBackend
from granite_storage_s3.backend import MIN_PART_SIZE
from granite_storage_s3.testing import S3Server

from ..fastapi.conftest import real_s3, serve
from ..fastapi.service import Service, build_service
from .invariant import assert_only_complete_objects, digest, local_temp_files, s3_incomplete_uploads
from .proxy import FaultProxy

__all__ = ["real_s3"]

TRIALS = 20
S3_CONTENT = random.Random(1603).randbytes(2 * MIN_PART_SIZE + 12345)  # three parts
HTTP_CONTENT = random.Random(1604).randbytes(2 * 1024 * 1024 + 17)
#: How long the server side has to finish (and clean up) a request whose client is gone.
SETTLE_SECONDS = 30


def s3_manager(server: S3Server, proxy: FaultProxy, prefix: str, attempts: int) -> StorageManager:
    """A manager whose S3 client goes through ``proxy``: new connections, so byte counts start at 0."""
    client = server.client(
        endpoint_url=f"http://{proxy.host}:{proxy.port}",
        connect_timeout=2,
        read_timeout=10,
        retries={"mode": "standard", "total_max_attempts": attempts},
    )
    # One part at a time: every part goes over one connection, whose byte count the fault follows.
    backend = S3StorageBackend(
        server.bucket, client=client, prefix=prefix, part_size=MIN_PART_SIZE, max_concurrency=1
    )
    return StorageManager(
        backends={"s3": backend},
        policies={"files": StoragePolicy("files", backend_key="s3")},
        plugins=PluginHost(strict=False, disabled=()),
    )


@pytest.fixture
def s3_proxy(real_s3: S3Server) -> Iterator[FaultProxy]:
    assert real_s3.endpoint_url is not None
    port = int(real_s3.endpoint_url.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        yield proxy


@pytest.mark.faults
def test_s3_upload_reset_mid_body_leaves_no_partial_object_and_no_upload(
    real_s3: S3Server, s3_proxy: FaultProxy
) -> None:
    prefix = "reset-upload"
    direct = real_s3.backend(prefix=prefix)
    chance = random.Random(1605)
    outcomes = {"failed": 0, "completed": 0}
    for trial in range(TRIALS):
        manager = s3_manager(real_s3, s3_proxy, prefix, attempts=1 if trial % 2 == 0 else 3)
        fault = s3_proxy.reset_after(chance.randrange(1024, len(S3_CONTENT)))
        try:
            ref = manager.put_bytes(
                storage_key="files",
                model_name="doc",
                entity_id=str(trial),
                field_name="file",
                content=S3_CONTENT,
            )
        except StorageError:
            outcomes["failed"] += 1
        else:
            outcomes["completed"] += 1
            assert manager.verify(ref)
        assert fault.fired.is_set()
        s3_proxy.disarm()
        assert_only_complete_objects(direct, {digest(S3_CONTENT)})
        assert s3_incomplete_uploads(direct.client, direct.bucket, prefix + "/") == []
    print(f"S3 upload reset: {TRIALS} trials, {outcomes}, 0 partial objects, 0 uploads left")
    assert outcomes["failed"] > 0
    assert outcomes["completed"] > 0


@pytest.mark.faults
def test_s3_download_reset_mid_body_fails_and_never_returns_a_cut_object(
    real_s3: S3Server, s3_proxy: FaultProxy
) -> None:
    prefix = "reset-download"
    stored = s3_manager(real_s3, s3_proxy, prefix, attempts=3).put_bytes(
        storage_key="files", model_name="doc", entity_id="1", field_name="file", content=S3_CONTENT
    )
    chance = random.Random(1606)
    failed = 0
    for _ in range(TRIALS):
        manager = s3_manager(real_s3, s3_proxy, prefix, attempts=3)
        fault = s3_proxy.reset_after(chance.randrange(1024, len(S3_CONTENT)), direction="downstream")
        try:
            with manager.open(stored) as stream:
                content = stream.read()
        except StorageError:
            failed += 1
        else:
            assert content == S3_CONTENT, "a download cut by a reset was returned as the object"
        assert fault.fired.is_set()
        s3_proxy.disarm()
        assert manager.verify(stored)
    print(f"S3 download reset: {TRIALS} trials, {failed} failed with a StorageError, 0 cut objects")
    assert failed == TRIALS


# -- over HTTP, through the FastAPI integration --------------------------------------------------------


@pytest.fixture
def local_manager(tmp_path: Path) -> StorageManager:
    policy = StoragePolicy("files", backend_key="local")
    return StorageManager(
        backends={"local": LocalStorageBackend(tmp_path / "storage")},
        policies={"files": policy},
        plugins=PluginHost(strict=False, disabled=()),
    )


@pytest.fixture
def service(local_manager: StorageManager) -> Service:
    return build_service(local_manager)


@pytest.fixture
def http_proxy(service: Service) -> Iterator[tuple[str, FaultProxy]]:
    with serve(service.app) as url:
        port = int(url.rsplit(":", 1)[1])
        with FaultProxy("127.0.0.1", port) as proxy:
            yield url, proxy


def settle(root: Path, service: Service | None = None, name: str | None = None) -> None:
    """Wait until the server has finished with a request whose connection was reset.

    With ``service`` and ``name``, first until the upload's handler has ended: under load the server
    may not even have opened its temporary file when the client sees the reset, and a check for
    temporary files made before then would pass by luck. Then until no temporary file is left.
    """
    waiting = threading.Event()
    for _ in range(SETTLE_SECONDS * 100):
        if service is None or name is None or name in service.bodies_done:
            break
        waiting.wait(0.01)
    for _ in range(SETTLE_SECONDS * 100):
        if not local_temp_files(root):
            return
        waiting.wait(0.01)


@pytest.mark.faults
def test_http_upload_reset_mid_body_leaves_no_partial_object_and_no_temp_file(
    tmp_path: Path, service: Service, local_manager: StorageManager, http_proxy: tuple[str, FaultProxy]
) -> None:
    _, proxy = http_proxy
    root = tmp_path / "storage"
    chance = random.Random(1607)
    failed = 0
    for trial in range(TRIALS):
        fault = proxy.reset_after(chance.randrange(256, len(HTTP_CONTENT)))
        with httpx.Client(base_url=f"http://{proxy.host}:{proxy.port}", timeout=30) as client:
            try:
                response = client.put(f"/bodies/trial{trial}", content=HTTP_CONTENT)
            except httpx.TransportError:
                failed += 1
            else:
                assert response.status_code == 201
        assert fault.fired.is_set()
        proxy.disarm()
        settle(root, service, f"trial{trial}")
        assert f"trial{trial}" in service.bodies_done, "the server never ended the reset upload's handler"
        assert local_temp_files(root) == [], "a reset upload's temporary file was left behind"
        assert_only_complete_objects(local_manager.backend("local"), {digest(HTTP_CONTENT)})
        assert all(local_manager.verify(ref) for ref in service.refs.values())
    print(f"HTTP upload reset: {TRIALS} trials, {failed} failed, 0 partial objects, 0 temporary files left")
    assert failed == TRIALS


@pytest.mark.faults
def test_http_download_reset_mid_body_fails_and_never_returns_a_cut_object(
    service: Service, local_manager: StorageManager, http_proxy: tuple[str, FaultProxy]
) -> None:
    url, proxy = http_proxy
    assert httpx.put(f"{url}/bodies/big", content=HTTP_CONTENT, timeout=30).status_code == 201
    stored: StoredObjectRef = service.refs["big"]
    chance = random.Random(1608)
    failed = 0
    for _ in range(TRIALS):
        fault = proxy.reset_after(chance.randrange(256, len(HTTP_CONTENT)), direction="downstream")
        try:
            response = httpx.get(f"http://{proxy.host}:{proxy.port}/objects/big", timeout=30)
        except httpx.TransportError:
            failed += 1
        else:
            assert response.status_code == 200
            assert response.content == HTTP_CONTENT, "a download cut by a reset was taken for the object"
        assert fault.fired.is_set()
        proxy.disarm()
        assert local_manager.verify(stored)
    assert httpx.get(f"{url}/objects/big", timeout=30).content == HTTP_CONTENT  # the service still serves
    print(f"HTTP download reset: {TRIALS} trials, {failed} failed, 0 cut objects")
    assert failed == TRIALS
