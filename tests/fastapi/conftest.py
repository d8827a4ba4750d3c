"""Real HTTP for the FastAPI integration: applications served by uvicorn on a free loopback port.

The real S3 server is the S3 plugin's own fixture (SeaweedFS, or ``GRANITE_TEST_S3_ENDPOINT``),
loaded from that plugin's conftest: its tests are no package that could be imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import uvicorn
from starlette.types import ASGIApp

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 20


def load_module(name: str, path: Path) -> ModuleType:
    """Import the file at ``path`` as module ``name`` (once per process)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


s3_servers = load_module("granite_s3_test_servers", ROOT / "plugins/granite_storage_s3/tests/conftest.py")
real_s3 = s3_servers.real_s3
moto_s3 = s3_servers.moto_s3


@contextlib.contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1 and a free port; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http="h11", ws="none", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_SECONDS)
        sock.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
