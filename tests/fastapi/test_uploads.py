"""Uploads through the FastAPI integration, over real HTTP: off the event loop, limits enforced mid-stream."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from granite_storage import PluginHost, StorageManager, StoragePolicy
from granite_storage.integrations.fastapi import store_upload
from granite_storage_local import LocalStorageBackend

from ..conftest import files_under
from .conftest import serve
from .service import GatedFile, GatedUpload, Service, build_service

LIMIT = 1024 * 1024


@pytest.fixture
def manager(local_backend: LocalStorageBackend, empty_host: PluginHost) -> StorageManager:
    policy = StoragePolicy("files", backend_key="local", max_size=LIMIT)
    return StorageManager(backends={"local": local_backend}, policies={"files": policy}, plugins=empty_host)


@pytest.fixture
def service(manager: StorageManager) -> Service:
    return build_service(manager)


@pytest.fixture
def base_url(service: Service) -> Iterator[str]:
    with serve(service.app) as url:
        yield url


def test_an_upload_file_is_stored_with_its_name_type_and_checksum(base_url: str, service: Service) -> None:
    content = b"%PDF-1.7 a small document"
    files = {"file": ("Bericht Ü.pdf", content, "application/pdf")}
    response = httpx.post(f"{base_url}/uploads/doc", files=files)
    assert response.status_code == 201, response.text
    ref = service.refs["doc"]
    assert (ref.original_filename, ref.content_type, ref.size) == (
        "Bericht Ü.pdf",
        "application/pdf",
        len(content),
    )
    assert ref.sha256 == hashlib.sha256(content).hexdigest()


def test_a_request_is_served_while_an_upload_is_being_stored(base_url: str, service: Service) -> None:
    """The upload's reader blocks until the test has seen another request answered: were the upload
    stored on the event loop's thread, that request could never be served and the upload would fail."""
    outcome: dict[str, httpx.Response] = {}

    def upload() -> None:
        files = {"file": ("gated.bin", b"x" * 300_000, "application/octet-stream")}
        outcome["upload"] = httpx.post(f"{base_url}/gated-uploads/gated", files=files, timeout=60)

    uploading = threading.Thread(target=upload)
    uploading.start()
    try:
        while not service.gates:  # the endpoint has received the body and started storing it
            assert uploading.is_alive(), "the upload ended before it was stored"
            uploading.join(0.01)
        gate = service.gates[0]
        assert gate.reading.wait(timeout=30), "storing never started reading the upload"
        ping = httpx.get(f"{base_url}/ping", timeout=30)
        assert ping.json() == {"pong": "yes"}
        assert "upload" not in outcome  # the upload is still in progress: its reader is blocked
        assert not gate.release.is_set()
    finally:
        for gated in service.gates:
            gated.release.set()
        uploading.join(60)
    assert outcome["upload"].status_code == 201
    assert service.refs["gated"].size == 300_000


def test_an_upload_over_the_limit_is_refused_with_413_and_leaves_nothing(
    base_url: str, service: Service, storage_root: Path
) -> None:
    files = {"file": ("big.bin", b"x" * (LIMIT + 1), "application/octet-stream")}
    response = httpx.post(f"{base_url}/uploads/big", files=files)
    assert response.status_code == 413
    assert response.json() == {"detail": f"content exceeds the maximum size of {LIMIT} bytes"}
    assert "big" not in service.refs
    assert files_under(storage_root) == []


def test_an_upload_of_exactly_the_limit_is_stored(base_url: str, service: Service) -> None:
    files = {"file": ("edge.bin", b"x" * LIMIT, "application/octet-stream")}
    assert httpx.post(f"{base_url}/uploads/edge", files=files).status_code == 201
    assert service.refs["edge"].size == LIMIT


def test_a_request_body_is_streamed_into_storage(base_url: str, service: Service) -> None:
    content = bytes(range(256)) * 1000

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for start in range(0, len(content), 7000):
            yield content[start : start + 7000]

    response = httpx.put(f"{base_url}/bodies/raw", content=chunks(), headers={"content-type": "image/png"})
    assert response.status_code == 201, response.text
    ref = service.refs["raw"]
    assert (ref.size, ref.content_type, ref.original_filename) == (len(content), "image/png", "raw.bin")
    assert ref.sha256 == hashlib.sha256(content).hexdigest()


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    base_url: str, service: Service, storage_root: Path
) -> None:
    """The client sends only the headers, announcing a gigabyte: the answer comes without a body byte."""
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(
            b"PUT /bodies/huge HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000000000\r\n\r\n"
        )
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert "huge" not in service.refs
    assert files_under(storage_root) == []


def test_a_chunked_body_over_the_limit_is_refused_and_leaves_nothing(
    base_url: str, service: Service, storage_root: Path
) -> None:
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        while sent < 20 * LIMIT:  # far more than the server will take
            sent += 65536
            yield b"x" * 65536

    try:
        response = httpx.put(f"{base_url}/bodies/endless", content=endless(), timeout=30)
    except httpx.TransportError:
        pass  # the server answered 413 and closed while the client was still sending
    else:
        assert response.status_code == 413
    assert "endless" not in service.refs
    assert files_under(storage_root) == []


def test_slow_request_bodies_cannot_take_the_threads_other_requests_need(
    base_url: str, service: Service, storage_root: Path
) -> None:
    """A body is stored by a thread that waits on its client: clients that send slowly (or stall)
    must not take the worker threads downloads, sync endpoints and sync dependencies run on."""
    files = {"file": ("doc.txt", b"a document", "text/plain")}
    assert httpx.post(f"{base_url}/uploads/doc", files=files).status_code == 201
    assert httpx.put(f"{base_url}/default-threads/2").status_code == 204
    address = urlsplit(base_url)
    stalled = [socket.create_connection((address.hostname, address.port), timeout=30) for _ in range(2)]
    try:
        for number, connection in enumerate(stalled):
            connection.sendall(
                f"PUT /bodies/slow{number} HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n".encode()
                + b"first bytes"
            )
        ready = threading.Event()
        while not ready.is_set():  # each stalled upload's thread has created its temporary file
            if len(files_under(storage_root)) == 3:
                ready.set()
            ready.wait(0.01)
        response = httpx.get(f"{base_url}/objects/doc", timeout=30)  # needs a worker thread
        assert (response.status_code, response.content) == (200, b"a document")
    finally:
        for connection in stalled:
            connection.close()
    while len(files_under(storage_root)) > 1:  # the stalled uploads end, and leave nothing
        ready.wait(0.01)
    assert "slow0" not in service.refs


def test_a_client_that_goes_away_mid_body_leaves_nothing(
    base_url: str, service: Service, storage_root: Path
) -> None:
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(
            b"PUT /bodies/cut HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 300_000
        )
        waiting = threading.Event()
        for _ in range(3000):  # the upload's thread has created its temporary file
            if files_under(storage_root):
                break
            waiting.wait(0.01)
        assert files_under(storage_root), "the upload never started"
    # The connection is closed with most of the body unsent: the upload fails, and its temporary file
    # goes. Polled, since it happens on the server's own time.
    for _ in range(3000):
        if not files_under(storage_root):
            break
        waiting.wait(0.01)
    assert files_under(storage_root) == []
    assert "cut" not in service.refs


@pytest.mark.anyio
async def test_a_cancelled_store_upload_leaves_nothing_behind(
    manager: StorageManager, storage_root: Path
) -> None:
    gated = GatedFile(b"x" * 300_000)
    key: dict[str, Any] = {
        "storage_key": "files",
        "model_name": "test",
        "entity_id": "1",
        "field_name": "file",
    }
    with anyio.move_on_after(30) as scope:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(store_upload, manager, GatedUpload(cast(BinaryIO, gated)), **key))
            await anyio.to_thread.run_sync(gated.reading.wait)
            tasks.cancel_scope.cancel()  # the request goes away while its upload is being read
            gated.release.set()  # the worker thread stores it to the end, then deletes it
    assert not scope.cancelled_caught
    assert files_under(storage_root) == []


class DeletionRecordingBackend(LocalStorageBackend):
    """The local backend, recording the thread each deletion runs in."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deleting_threads: list[int] = []

    def delete(self, key: str) -> None:
        self.deleting_threads.append(threading.get_ident())
        super().delete(key)


@pytest.mark.anyio
async def test_the_object_of_a_cancelled_upload_is_deleted_off_the_event_loop(
    storage_root: Path, empty_host: PluginHost
) -> None:
    backend = DeletionRecordingBackend(storage_root)
    policy = StoragePolicy("files", backend_key="local")
    manager = StorageManager(backends={"local": backend}, policies={"files": policy}, plugins=empty_host)
    gated = GatedFile(b"x" * 300_000)
    key: dict[str, Any] = {"storage_key": "files", "model_name": "test", "entity_id": "1", "field_name": "f"}
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(partial(store_upload, manager, GatedUpload(cast(BinaryIO, gated)), **key))
        await anyio.to_thread.run_sync(gated.reading.wait)
        tasks.cancel_scope.cancel()
        gated.release.set()  # stored to the end, then deleted: by a thread, not the event loop's
    assert files_under(storage_root) == []
    assert len(backend.deleting_threads) == 1
    assert threading.get_ident() not in backend.deleting_threads
