"""A TCP fault proxy for the fault-injection suite: real bytes, real sockets, faults on demand.

:class:`FaultProxy` listens on the loopback interface and forwards every connection to one upstream
server (PostgreSQL, MariaDB, an S3 server, a web application), byte for byte in both directions. A
test arms a :class:`Fault`; the first connection whose bytes reach the fault's trigger suffers it:

* :meth:`~FaultProxy.drop_after`: the connection is closed once the trigger has been forwarded
  (optionally after the server's answer has arrived and been swallowed, so that the server acted on
  the request and the client never learns it), or instead of forwarding it;
* :meth:`~FaultProxy.reset_after`: both sides are reset (TCP RST) once the trigger has been
  forwarded, e.g. in the middle of a body;
* :meth:`~FaultProxy.stall_after`: nothing more passes in that direction until the fault is
  released or its time is up; then forwarding resumes.

A trigger is a byte pattern (the fault fires after the end of its first occurrence, even across reads)
or a byte count (after that many bytes in that direction on one connection). Each fault fires once.

Everything is bounded in time: connecting upstream, waiting for an answer and stalling all have a
limit, and :meth:`~FaultProxy.close` ends every connection. The proxy runs its own asyncio loop in a
daemon thread, so blocking clients (psycopg, PyMySQL, boto3, httpx) use it as they would the server.

Example::

    with FaultProxy("127.0.0.1", 5432) as proxy:
        fault = proxy.drop_after(POSTGRES_COMMIT, await_reply=True)
        ...  # connect to proxy.host:proxy.port, commit
        assert fault.fired
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

__all__ = [
    "MARIADB_COMMIT",
    "POSTGRES_COMMIT",
    "Direction",
    "Fault",
    "FaultProxy",
]

Direction = Literal["upstream", "downstream"]
"""``"upstream"``: bytes the client sends to the server; ``"downstream"``: the server's answers."""

#: A ``COMMIT`` as PostgreSQL's simple-query protocol carries it ('Q', length 11, the text, NUL):
#: what psycopg sends when a transaction commits.
POSTGRES_COMMIT = b"Q" + struct.pack("!I", 4 + len(b"COMMIT\x00")) + b"COMMIT\x00"
#: A ``COMMIT`` as the MySQL protocol carries it (COM_QUERY, sequence 0): what PyMySQL sends.
MARIADB_COMMIT = struct.pack("<I", 1 + len(b"COMMIT"))[:3] + b"\x00\x03COMMIT"

_CHUNK = 64 * 1024
#: How much of what passed is kept to find a pattern split across reads: patterns are at most this long.
_TAIL = 4096


@dataclass(eq=False)
class Fault:
    """A fault armed on a :class:`FaultProxy`; fires once, on the first connection that reaches it.

    Attributes:
        action: ``"drop"``, ``"reset"`` or ``"stall"``.
        direction: Which bytes are watched for the trigger.
        trigger: A byte pattern, or a byte count.
        fired: Set once the fault has happened: the bytes up to the trigger were forwarded (or the
            pattern withheld, where asked) and the connection dropped or reset, or the stall began.
    """

    action: Literal["drop", "reset", "stall"]
    direction: Direction
    trigger: bytes | int
    forward: bool = True
    await_reply: bool = False
    seconds: float = 0.0
    fired: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until the fault has fired (at most ``timeout`` seconds); returns whether it has."""
        return self.fired.wait(timeout)

    def release(self) -> None:
        """End a stall before its time is up (no effect on other faults)."""
        self._released.set()

    def _cut(self, tail: bytes, data: bytes, seen: int) -> int | None:
        """How many bytes of ``data`` pass before the trigger point, or ``None`` if not reached.

        ``tail`` is the end of what passed before ``data`` (for patterns split across reads),
        ``seen`` how many bytes passed before it on this connection.
        """
        if isinstance(self.trigger, int):
            if seen + len(data) < self.trigger:
                return None
            return max(0, self.trigger - seen)
        # Only an occurrence that ends inside ``data``: one wholly in ``tail`` has been forwarded.
        index = (tail + data).find(self.trigger, max(0, len(tail) - len(self.trigger) + 1))
        if index < 0:
            return None
        end = index + len(self.trigger) - len(tail)
        return end if self.forward else max(0, end - len(self.trigger))


class FaultProxy:
    """A loopback TCP proxy to ``upstream_host:upstream_port`` that injects faults (see the module).

    Args:
        upstream_host: The server's address; must be a loopback address or resolve to one.
        upstream_port: The server's port.
        timeout: The limit, in seconds, on connecting upstream, on waiting for an answer that a
            ``drop_after(..., await_reply=True)`` swallows, and on starting and closing the proxy.

    Use it as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, timeout: float = 10.0) -> None:
        address = ipaddress.ip_address(socket.gethostbyname(upstream_host))
        if not address.is_loopback:
            raise ValueError(f"the fault proxy only forwards to loopback addresses, not {upstream_host!r}")
        self.upstream = (str(address), upstream_port)
        self.timeout = timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._links: set[_Link] = set()
        self._closing = False

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start listening on ``self.host:self.port`` (a free port, chosen now)."""
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, self.host, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        """Stop listening and end every connection; returns within about ``timeout`` seconds."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(TimeoutError):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- faults ----------------------------------------------------------------------------------

    def drop_after(
        self,
        trigger: bytes | int,
        *,
        direction: Direction = "upstream",
        await_reply: bool = False,
        forward: bool = True,
    ) -> Fault:
        """Close the connection once ``trigger`` has been forwarded; returns the armed fault.

        With ``await_reply``, the proxy first waits for the other side's next bytes (the server's
        answer to an upstream request) and swallows them: the server acted, the client never hears.
        With ``forward=False``, the bytes of the pattern itself are withheld: the server never sees
        the request, the client still loses the connection while waiting for its answer.
        """
        if not forward and isinstance(trigger, int):
            raise ValueError("forward=False needs a byte pattern to withhold")
        return self._arm(
            Fault("drop", direction, trigger, forward=forward, await_reply=await_reply and forward)
        )

    def reset_after(self, trigger: bytes | int, *, direction: Direction = "upstream") -> Fault:
        """Reset both sides (TCP RST) once ``trigger`` has been forwarded; returns the armed fault."""
        return self._arm(Fault("reset", direction, trigger))

    def stall_after(
        self, trigger: bytes | int, *, direction: Direction = "upstream", seconds: float
    ) -> Fault:
        """Forward nothing more in ``direction`` once ``trigger`` has passed, for at most ``seconds``.

        The stall ends early when :meth:`Fault.release` is called or the proxy closes; forwarding
        then resumes where it stopped.
        """
        if seconds <= 0:
            raise ValueError("a stall needs a positive number of seconds")
        return self._arm(Fault("stall", direction, trigger, seconds=seconds))

    def disarm(self) -> None:
        """Forget every fault that has not fired yet."""
        with self._lock:
            self._faults.clear()

    def _arm(self, fault: Fault) -> Fault:
        if isinstance(fault.trigger, int) and fault.trigger < 0:
            raise ValueError("a byte count cannot be negative")
        if isinstance(fault.trigger, bytes) and not 0 < len(fault.trigger) <= _TAIL:
            raise ValueError(f"a byte pattern must be 1 to {_TAIL} bytes long")
        with self._lock:
            self._faults.append(fault)
        return fault

    def _claim(self, direction: Direction, tail: bytes, data: bytes, seen: int) -> tuple[Fault, int] | None:
        """The first armed fault ``data`` reaches, removed from the armed ones, and where it cuts."""
        with self._lock:
            for fault in self._faults:
                if fault.direction != direction:
                    continue
                cut = fault._cut(tail, data, seen)
                if cut is not None:
                    self._faults.remove(fault)
                    return fault, cut
        return None

    # -- forwarding ------------------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self.timeout)

    async def _shutdown(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        await asyncio.sleep(0.05)  # connections accepted a moment ago reach _accept, which ends them
        for link in list(self._links):
            link.close()  # every pump, stalled ones too, sees it and ends
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self.timeout)
            for task in late:  # still connecting upstream
                task.cancel()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            try:
                upstream_reader, upstream_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), self.timeout
                )
            except (OSError, TimeoutError):
                _abort(client_writer)
                return
            link = _Link(client_reader, client_writer, upstream_reader, upstream_writer)
            if self._closing:
                link.close()
                return
            self._links.add(link)
            try:
                await asyncio.gather(self._pump(link, "upstream"), self._pump(link, "downstream"))
            finally:
                link.close()
                self._links.discard(link)
        finally:
            self._tasks.discard(task)

    async def _pump(self, link: _Link, direction: Direction) -> None:
        """Forward what arrives in ``direction`` until either side ends or a fault ends the link."""
        reader, writer = link.ends(direction)
        seen = 0
        tail = b""
        try:
            while not link.closed:
                data = await reader.read(_CHUNK)
                if not data or link.closed:
                    break
                if link.swallowing == direction:  # the answer a drop waited for: never delivered
                    link.answered.set()
                    return
                claimed = self._claim(direction, tail, data, seen)
                cut = len(data) if claimed is None else claimed[1]
                if claimed is not None and claimed[0].action == "drop" and claimed[0].await_reply:
                    # Before the request leaves: its answer must not slip through in the meantime.
                    link.swallowing = "downstream" if direction == "upstream" else "upstream"
                writer.write(data[:cut])
                await writer.drain()
                seen += cut
                tail = (tail + data[:cut])[-_TAIL:]
                if claimed is None:
                    continue
                if not await self._inflict(claimed[0], link, direction):
                    return
                writer.write(data[cut:])  # a stall is over: the rest of this read, then on as before
                await writer.drain()
                seen += len(data) - cut
                tail = (tail + data[cut:])[-_TAIL:]
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if link.swallowing == direction:
                link.answered.set()  # the answer came, or never will: the drop goes ahead
            elif link.swallowing is None:
                link.close()

    async def _inflict(self, fault: Fault, link: _Link, direction: Direction) -> bool:
        """Do what ``fault`` says; returns whether forwarding goes on (only after a stall)."""
        if fault.action == "stall":
            fault.fired.set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + fault.seconds
            while not fault._released.is_set() and not link.closed and loop.time() < deadline:
                await asyncio.sleep(0.01)
            return not link.closed
        if fault.action == "drop" and fault.await_reply:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.answered.wait(), self.timeout)
            link.swallowing = None
        if fault.action == "reset":
            link.reset()
        else:
            link.close()
        fault.fired.set()
        return False


class _Link:
    """One client connection and the upstream connection made for it."""

    def __init__(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        self.client = (client_reader, client_writer)
        self.upstream = (upstream_reader, upstream_writer)
        self.closed = False
        #: The direction whose next bytes are swallowed (a drop waiting for the answer), if any.
        self.swallowing: Direction | None = None
        self.answered = asyncio.Event()

    def ends(self, direction: Direction) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Where bytes going in ``direction`` are read from, and where they are written to."""
        if direction == "upstream":
            return self.client[0], self.upstream[1]
        return self.upstream[0], self.client[1]

    def close(self) -> None:
        """Close both sides (FIN): each peer sees the connection end."""
        if not self.closed:
            self.closed = True
            self.client[1].close()
            self.upstream[1].close()

    def reset(self) -> None:
        """Reset both sides (RST): each peer sees the connection reset."""
        if not self.closed:
            self.closed = True
            _abort(self.client[1])
            _abort(self.upstream[1])


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN: linger on, for zero seconds."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
