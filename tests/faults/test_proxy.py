"""The fault proxy itself: it forwards faithfully, and each fault happens where it is asked to.

The upstream is a small TCP server in a thread that records what it receives and answers each
request it is given by the test; the client is a plain blocking socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from .proxy import MARIADB_COMMIT, POSTGRES_COMMIT, FaultProxy

TIMEOUT = 10.0


class Upstream:
    """A one-connection-at-a-time server: echoes, or answers a fixed reply to every read."""

    def __init__(self, reply: bytes | None = None) -> None:
        self.reply = reply
        self.received = bytearray()
        self.closed_by_peer = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(TIMEOUT)
                try:
                    while data := connection.recv(65536):
                        self.received += data
                        connection.sendall(data if self.reply is None else self.reply)
                except OSError:
                    pass
                self.closed_by_peer.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() waiting in the thread
        self.listener.close()
        self.thread.join(TIMEOUT)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", upstream.port, timeout=TIMEOUT) as proxy:
        yield proxy


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT)


def receive(client: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = client.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_to_the_end(client: socket.socket, into: bytearray) -> None:
    while chunk := client.recv(65536):
        into += chunk


def test_bytes_pass_unchanged_both_ways(proxy: FaultProxy, upstream: Upstream) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, many reads in each direction
    with connect(proxy) as client:
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        echoed = receive(client, len(payload))
        sender.join(TIMEOUT)
    assert echoed == payload
    assert bytes(upstream.received) == payload
    assert proxy.connections == 1


def test_a_drop_forwards_the_request_then_closes_without_the_answer(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    fault = proxy.drop_after(b"COMMIT", await_reply=True)
    with connect(proxy) as client:
        client.sendall(b"BEGIN;")
        assert receive(client, 6) == b"BEGIN;"
        client.sendall(b"COMMIT")
        assert client.recv(100) == b""  # the server answered; the client hears only the close
    assert fault.wait(TIMEOUT)
    assert bytes(upstream.received) == b"BEGIN;COMMIT"


def test_a_pattern_split_across_reads_is_found(proxy: FaultProxy, upstream: Upstream) -> None:
    fault = proxy.drop_after(POSTGRES_COMMIT)
    with connect(proxy) as client:
        client.sendall(POSTGRES_COMMIT[:4])
        assert receive(client, 4) == POSTGRES_COMMIT[:4]  # forwarded and echoed: a read of its own
        client.sendall(POSTGRES_COMMIT[4:] + b"never forwarded")
        assert fault.wait(TIMEOUT)
    upstream.closed_by_peer.wait(TIMEOUT)
    assert bytes(upstream.received) == POSTGRES_COMMIT


def test_a_withheld_request_never_reaches_the_server(proxy: FaultProxy, upstream: Upstream) -> None:
    fault = proxy.drop_after(MARIADB_COMMIT, forward=False)
    with connect(proxy) as client:
        client.sendall(b"before")
        assert receive(client, 6) == b"before"
        client.sendall(MARIADB_COMMIT)
        assert receive(client, 100) == b""
    assert fault.wait(TIMEOUT)
    upstream.closed_by_peer.wait(TIMEOUT)
    assert bytes(upstream.received) == b"before"


def test_a_reset_in_the_middle_of_a_body_resets_the_client(proxy: FaultProxy) -> None:
    fault = proxy.reset_after(1000, direction="downstream")
    with connect(proxy) as client:
        client.sendall(b"x" * 5000)
        received = bytearray()
        with pytest.raises(ConnectionResetError):
            read_to_the_end(client, received)
    assert fault.wait(TIMEOUT)
    assert len(received) <= 1000  # never a byte past the reset point


def test_a_stall_holds_the_bytes_until_released(proxy: FaultProxy, upstream: Upstream) -> None:
    fault = proxy.stall_after(b"|", direction="downstream", seconds=TIMEOUT * 3)
    with connect(proxy) as client:
        client.sendall(b"head|tail")
        assert receive(client, 5) == b"head|"
        assert fault.wait(TIMEOUT)
        client.settimeout(0.2)
        with pytest.raises(TimeoutError):
            client.recv(100)  # held: the stall lasts until released, far beyond this wait
        client.settimeout(TIMEOUT)
        fault.release()
        assert receive(client, 4) == b"tail"


def test_each_fault_fires_once_on_the_first_connection_that_reaches_it(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    fault = proxy.drop_after(b"!")
    with connect(proxy) as first:
        first.sendall(b"a!")
        assert receive(first, 10) == b""  # dropped before the echo came back
    with connect(proxy) as second:
        second.sendall(b"b!")
        assert receive(second, 2) == b"b!"
    assert fault.fired.is_set()
    assert proxy.connections == 2


def test_the_proxy_refuses_upstreams_off_the_loopback_interface() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("192.0.2.1", 5432)


def test_closing_ends_the_open_connections(upstream: Upstream) -> None:
    proxy = FaultProxy("127.0.0.1", upstream.port, timeout=TIMEOUT).start()
    fault = proxy.stall_after(b"|", direction="downstream", seconds=TIMEOUT * 3)
    with connect(proxy) as client:
        client.sendall(b"passed|held")
        assert receive(client, 7) == b"passed|"
        assert fault.wait(TIMEOUT)
        proxy.close()
        assert receive(client, 10) == b""
