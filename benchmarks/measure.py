"""One measurement in a fresh interpreter; ``benchmarks/run.py`` starts one process per measurement.

    python benchmarks/measure.py <measurement> <marshal.dumps(parameters).hex()>

prints one JSON object: the wall and CPU seconds the measured operation took, the bytes it moved, and
how much it grew the process's peak memory. Parameters come ``marshal``-encoded rather than as JSON,
and nothing beyond what the interpreter loads at startup is imported before a clock starts (``resource``
aside, a small built-in module), so the import scenarios time everything their import pulls in.

Peak memory growth is read two ways, in KiB:

* ``resident``: peak resident set size after the operation (``VmHWM``) minus the resident set size just
  before it (``VmRSS``), from ``/proc/self/status``. A peak reached earlier (while importing) cannot
  hide the operation's own growth. The targets are checked against this reading.
* ``maxrss``: the growth of ``getrusage(RUSAGE_SELF).ru_maxrss``. It only grows once the operation
  passes every earlier peak of the process, and on Linux that includes the *parent's* peak at fork
  time, so it can under-read; reported as a second opinion.

With a ``profile`` parameter (a path), the timed operation alone runs under cProfile and the report,
sorted by own time, is written there; the timings of such a run are not results.
"""

from __future__ import annotations

import marshal
import os
import resource
import sys
import time

# Not `typing.TYPE_CHECKING`: importing typing would load `re`, `functools` and more before the
# import scenarios start their clocks. Type checkers honour any name `TYPE_CHECKING`.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import cProfile
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any, TypeAlias

    Result: TypeAlias = dict[str, Any]

MIB = 1024 * 1024
#: Bytes per read on every path: the library's default chunk size (``granite_storage.streams``).
CHUNK = MIB
#: The benchmark's data is one MiB from this seed, repeated: every process produces the same bytes.
SEED = 20_251_125


def memory_kib() -> dict[str, int]:
    """Current and peak resident set size (``/proc/self/status``) and ``ru_maxrss``, in KiB."""
    fields: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss": fields["VmRSS"], "hwm": fields["VmHWM"], "maxrss": maxrss}


class Clock:
    """Measures the body of a ``with`` block: wall and CPU seconds, peak memory growth, a profile."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._profile_path: str | None = params.get("profile")
        self._profiler: cProfile.Profile | None = None
        self.seconds = 0.0
        self.cpu: dict[str, float] = {}
        self.memory_growth: dict[str, int] = {}

    def __enter__(self) -> Clock:
        if self._profile_path:
            import cProfile

            self._profiler = cProfile.Profile()
        self._before = memory_kib()
        if self._profiler:
            self._profiler.enable()
        self._usage = resource.getrusage(resource.RUSAGE_SELF)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.seconds = time.perf_counter() - self._start
        usage = resource.getrusage(resource.RUSAGE_SELF)
        if self._profiler:
            self._profiler.disable()
        after = memory_kib()
        self.cpu = {
            "user": usage.ru_utime - self._usage.ru_utime,
            "system": usage.ru_stime - self._usage.ru_stime,
        }
        self.memory_growth = {
            "resident": after["hwm"] - self._before["rss"],
            "maxrss": after["maxrss"] - self._before["maxrss"],
        }
        if self._profiler and self._profile_path and kind is None:
            import pstats

            with open(self._profile_path, "w", encoding="utf-8") as report:
                pstats.Stats(self._profiler, stream=report).sort_stats("tottime").print_stats(30)

    def result(self, size: int, **extra: Any) -> Result:
        return {
            "seconds": self.seconds,
            "cpu_seconds": self.cpu,
            "bytes": size,
            "memory_growth_kib": self.memory_growth,
            **extra,
        }


def data_block() -> bytes:
    import random

    return random.Random(SEED).randbytes(MIB)


class RepeatingStream:
    """A non-seekable upload of unknown length: ``size`` bytes of one MiB block, repeated.

    Has nothing but ``read``: no ``seek``, ``tell``, ``fileno`` or length for a library to lean on.
    A read of a whole aligned MiB returns the block itself, so producing the data costs (almost)
    nothing and both sides of a comparison get it at the same price.
    """

    def __init__(self, block: bytes, size: int) -> None:
        self._block = block
        self._remaining = size
        self._offset = 0

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            raise ValueError("this benchmark's uploads are never read whole")
        size = min(size, self._remaining, len(self._block) - self._offset)
        whole = size == len(self._block)
        chunk = self._block if whole else self._block[self._offset : self._offset + size]
        self._offset = (self._offset + size) % len(self._block)
        self._remaining -= size
        return chunk


def _manager(root: str) -> Any:
    from granite_storage import StorageManager

    return StorageManager.from_config(
        {
            "backends": {"disk": {"type": "local", "root": root}},
            "policies": {"bench": {"backend": "disk", "key_prefix": "bench"}},
        }
    )


# Every transfer measurement does the same untimed setup, importing granite_storage and building a
# manager, the baselines included: both processes then start the clock in the same state (heap,
# allocator thresholds), so only the timed operation differs.

# -- scenario 1: streaming put ---------------------------------------------------------------------


def remove_previous_output(params: dict[str, Any]) -> None:
    """Delete the file the previous put left, just before the clock starts.

    The page cache then hands its freshly freed pages straight to this put. Deleted any earlier, the
    pages would sit free long enough for a VM's balloon driver to return them to the host, and the
    put would pay for faulting them back in: on the machine these benchmarks were written on that
    costs 0.2 s or 1-2 s of kernel time per GiB at random, whatever the code writing.
    """
    for path in params.get("remove_before", ()):
        os.unlink(path)


def put_granite(params: dict[str, Any]) -> Result:
    """``StorageManager.put_stream`` of the stream into a local backend (size check, sha256, atomic)."""
    manager = _manager(params["root"])
    stream = RepeatingStream(data_block(), params["size"])
    remove_previous_output(params)
    with Clock(params) as clock:
        ref = manager.put_stream(
            storage_key="bench",
            model_name="bench",
            entity_id=str(os.getpid()),
            field_name="blob",
            stream=stream,
        )
    path = str(manager.backend("disk").root / ref.location)
    return clock.result(ref.size, checksum=ref.checksum, output=path)


class _HashingReader:
    def __init__(self, stream: RepeatingStream) -> None:
        import hashlib

        self._stream = stream
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._stream.read(size)
        self.sha256.update(chunk)
        return chunk


def put_baseline(params: dict[str, Any]) -> Result:
    """``shutil.copyfileobj`` of the same stream, hashed with sha256 on the way, into a plain file."""
    import shutil

    _manager(params["root"])
    stream = _HashingReader(RepeatingStream(data_block(), params["size"]))
    path = os.path.join(params["root"], f"baseline-{os.getpid()}.bin")
    remove_previous_output(params)
    with Clock(params) as clock:
        with open(path, "wb") as file:
            shutil.copyfileobj(stream, file, CHUNK)
        checksum = "sha256:" + stream.sha256.hexdigest()
    return clock.result(os.path.getsize(path), checksum=checksum, output=path)


# -- scenario 3: streaming get ---------------------------------------------------------------------


def prepare_object(params: dict[str, Any]) -> Result:
    """Store the object the get scenario reads (not a measurement): return its reference and path."""
    manager = _manager(params["root"])
    ref = manager.put_stream(
        storage_key="bench",
        model_name="bench",
        entity_id="get",
        field_name="blob",
        stream=RepeatingStream(data_block(), params["size"]),
    )
    return {"ref": ref.to_dict(), "path": str(manager.backend("disk").root / ref.location)}


def get_granite(params: dict[str, Any]) -> Result:
    """``StorageManager.open(ref)``, read to the end in chunks."""
    from granite_storage import StoredObjectRef

    manager = _manager(params["root"])
    ref = StoredObjectRef.from_dict(params["ref"])
    size = 0
    with Clock(params) as clock, manager.open(ref) as stream:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
    return clock.result(size)


def get_baseline(params: dict[str, Any]) -> Result:
    """``open(path, "rb")`` on the same file, read to the end in chunks of the same size."""
    _manager(params["root"])
    size = 0
    with Clock(params) as clock, open(params["path"], "rb") as stream:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
    return clock.result(size)


# -- scenario 6: import and configuration ------------------------------------------------------------


def import_granite(params: dict[str, Any]) -> Result:
    """``import granite_storage`` and ``StorageManager.from_config``, discovering plugins by entry point."""
    with Clock(params) as clock:
        from granite_storage import StorageManager

        manager = StorageManager.from_config(
            {
                "backends": {"files": {"type": "local", "root": params["root"]}},
                "policies": {"documents": {"backend": "files", "max_size": "10MB", "key_prefix": "docs"}},
            }
        )
    backend = type(manager.backend("files"))
    return clock.result(0, backend=f"{backend.__module__}.{backend.__qualname__}")


def import_sqlalchemy(params: dict[str, Any]) -> Result:
    """``import sqlalchemy``: what any user of a SQLAlchemy storage layer already pays."""
    with Clock(params) as clock:
        import sqlalchemy
    return clock.result(0, version=sqlalchemy.__version__)


# -- scenario 9: the event loop during an upload ------------------------------------------------------

#: The ticker coroutine's interval; a stall is how much later than this it wakes.
TICK = 0.001
#: How long the idle baseline watches its event loop.
IDLE_SECONDS = 1.0


class _Upload:
    """What FastAPI's ``UploadFile`` offers the integration: a file (not seekable), a name, a type."""

    def __init__(self, stream: RepeatingStream) -> None:
        self.file = stream
        self.filename = "bench.bin"
        self.content_type = "application/octet-stream"


async def _worst_stall(stop: Any) -> float:
    """Tick every :data:`TICK` until ``stop`` is set; return the longest wake-up delay, in seconds."""
    import asyncio

    worst, last = 0.0, time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(TICK)
        now = time.perf_counter()
        worst, last = max(worst, now - last - TICK), now
    return worst


def upload_stall_granite(params: dict[str, Any]) -> Result:
    """The worst event-loop stall while ``store_upload`` streams an upload into a local backend."""
    import asyncio

    from granite_storage.integrations.fastapi import store_upload

    manager = _manager(params["root"])
    stream = RepeatingStream(data_block(), params["size"])
    stream.seekable = lambda: False  # type: ignore[attr-defined]
    remove_previous_output(params)

    async def upload_while_ticking() -> tuple[Any, float]:
        stop = asyncio.Event()
        ticker = asyncio.create_task(_worst_stall(stop))
        key = {"model_name": "bench", "entity_id": str(os.getpid()), "field_name": "blob"}
        ref = await store_upload(manager, _Upload(stream), storage_key="bench", **key)  # type: ignore[arg-type]
        stop.set()
        return ref, await ticker

    with Clock(params) as clock:
        ref, worst = asyncio.run(upload_while_ticking())
    path = str(manager.backend("disk").root / ref.location)
    return {**clock.result(0, upload_seconds=clock.seconds, output=path), "seconds": worst}


def idle_stall_baseline(params: dict[str, Any]) -> Result:
    """The worst stall of the same ticker on an idle event loop, for :data:`IDLE_SECONDS`."""
    import asyncio

    from granite_storage.integrations.fastapi import store_upload  # the same imports as the candidate

    del store_upload
    _manager(params["root"])

    async def idle_while_ticking() -> float:
        stop = asyncio.Event()
        ticker = asyncio.create_task(_worst_stall(stop))
        await asyncio.sleep(IDLE_SECONDS)
        stop.set()
        return await ticker

    with Clock(params) as clock:
        worst = asyncio.run(idle_while_ticking())
    return {**clock.result(0), "seconds": worst}


MEASUREMENTS: dict[str, Callable[[dict[str, Any]], Result]] = {
    "put-granite": put_granite,
    "put-baseline": put_baseline,
    "prepare-object": prepare_object,
    "get-granite": get_granite,
    "get-baseline": get_baseline,
    "import-granite": import_granite,
    "import-sqlalchemy": import_sqlalchemy,
    "upload-stall-granite": upload_stall_granite,
    "idle-stall-baseline": idle_stall_baseline,
}


def main() -> None:
    measure = MEASUREMENTS[sys.argv[1]]
    measured = measure(marshal.loads(bytes.fromhex(sys.argv[2])))
    import json

    print(json.dumps(measured))


if __name__ == "__main__":
    main()
