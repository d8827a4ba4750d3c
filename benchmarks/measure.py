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
        #: The process's peak resident set size (``VmHWM``) after the operation, imports included.
        self.peak_kib = 0

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
        self.peak_kib = after["hwm"]
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
            "peak_rss_kib": self.peak_kib,
            **extra,
        }


def data_block() -> bytes:
    import random

    return random.Random(SEED).randbytes(MIB)


class RepeatingStream:
    """A non-seekable upload of unknown length: ``size`` bytes of one MiB block, repeated.

    Has nothing but ``read``: no ``seek``, ``tell``, ``fileno`` or length for a library to lean on.
    ``read(n)`` returns exactly ``n`` bytes until the end, as a file does (boto3's transfer manager
    takes a short read for the end of the stream), and ``read()`` the rest (boto3 reads a stream below
    its multipart threshold whole, as the smoke size's are). A read of one whole aligned MiB returns the block
    itself, and longer reads join whole blocks, so producing the data costs (almost) nothing and both
    sides of a comparison get it at the same price.
    """

    def __init__(self, block: bytes, size: int) -> None:
        self._block = block
        self._remaining = size
        self._offset = 0

    def read(self, size: int = -1, /) -> bytes:
        size = self._remaining if size is None or size < 0 else min(size, self._remaining)
        pieces = []
        while size > 0:
            piece = min(size, len(self._block) - self._offset)
            whole = piece == len(self._block)
            pieces.append(self._block if whole else self._block[self._offset : self._offset + piece])
            self._offset = (self._offset + piece) % len(self._block)
            self._remaining -= piece
            size -= piece
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


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
    """Delete what the previous measurement stored, just before the clock starts.

    A local file's page cache then hands its freshly freed pages straight to this put. Deleted any
    earlier, the pages would sit free long enough for a VM's balloon driver to return them to the
    host, and the put would pay for faulting them back in: on the machine these benchmarks were
    written on that costs 0.2 s or 1-2 s of kernel time per GiB at random, whatever the code writing.
    An S3 object (``s3://bucket/key``) is deleted so that the server's disk does not fill up.
    """
    for output in params.get("remove_before", ()):
        if output.startswith("s3://"):
            bucket, _, key = output.removeprefix("s3://").partition("/")
            s3_client(params).delete_object(Bucket=bucket, Key=key)
        else:
            os.unlink(output)


def remove_outputs(params: dict[str, Any]) -> Result:
    """Delete what the last measurement of a row stored (not a measurement)."""
    remove_previous_output(params)
    return {}


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


# -- scenarios 2 and 3: S3 put and get ---------------------------------------------------------------


def s3_client(params: dict[str, Any]) -> Any:
    """A boto3 client for the run's S3 server: Signature Version 4, botocore's standard retries."""
    import boto3
    from botocore.config import Config

    s3 = params["s3"]
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name=s3["region"],
        config=Config(signature_version="s3v4", retries={"mode": "standard"}),
    )


def _s3_manager(params: dict[str, Any]) -> Any:
    """A manager built as an application builds one: from configuration, credentials from the environment."""
    from granite_storage import StorageManager

    s3 = params["s3"]
    os.environ["AWS_ACCESS_KEY_ID"] = s3["access_key"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = s3["secret_key"]
    return StorageManager.from_config(
        {
            "backends": {
                "s3": {
                    "type": "s3",
                    "bucket": s3["bucket"],
                    "endpoint_url": s3["endpoint_url"],
                    "region_name": s3["region"],
                }
            },
            "policies": {"bench": {"backend": "s3", "key_prefix": "bench"}},
        }
    )


def _s3_size(params: dict[str, Any], key: str) -> int:
    """The stored object's size from the server (untimed: it shows that both sides did the work)."""
    size: int = s3_client(params).head_object(Bucket=params["s3"]["bucket"], Key=key)["ContentLength"]
    return size


def s3_put_granite(params: dict[str, Any]) -> Result:
    """``StorageManager.put_stream`` of the stream into an S3 backend with its default settings."""
    manager = _s3_manager(params)
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
    output = f"s3://{params['s3']['bucket']}/{ref.location}"
    return clock.result(_s3_size(params, ref.location), output=output)


def s3_put_boto3(params: dict[str, Any]) -> Result:
    """boto3's ``upload_fileobj`` (the transfer manager, default ``TransferConfig``) of the same stream."""
    _s3_manager(params)  # the candidate's untimed setup, so that both processes start alike
    client = s3_client(params)
    stream = RepeatingStream(data_block(), params["size"])
    key = f"baseline/{os.getpid()}.bin"
    remove_previous_output(params)
    with Clock(params) as clock:
        client.upload_fileobj(stream, params["s3"]["bucket"], key)
    return clock.result(_s3_size(params, key), output=f"s3://{params['s3']['bucket']}/{key}")


def s3_prepare_object(params: dict[str, Any]) -> Result:
    """Store the object the S3 get scenario reads (not a measurement): return its reference."""
    manager = _s3_manager(params)
    ref = manager.put_stream(
        storage_key="bench",
        model_name="bench",
        entity_id="get",
        field_name="blob",
        stream=RepeatingStream(data_block(), params["size"]),
    )
    return {"ref": ref.to_dict()}


def s3_get_granite(params: dict[str, Any]) -> Result:
    """``StorageManager.open(ref)`` of the S3 object, read to the end in chunks."""
    from granite_storage import StoredObjectRef

    manager = _s3_manager(params)
    ref = StoredObjectRef.from_dict(params["ref"])
    size = 0
    with Clock(params) as clock, manager.open(ref) as stream:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
    return clock.result(size)


class _Sink:
    """A write-only file that counts what it is given: a download's destination, costing nothing."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def s3_get_boto3(params: dict[str, Any]) -> Result:
    """boto3's ``download_fileobj`` of the same object into a write-only sink."""
    _s3_manager(params)
    client = s3_client(params)
    sink = _Sink()
    with Clock(params) as clock:
        client.download_fileobj(params["s3"]["bucket"], params["ref"]["location"], sink)
    return clock.result(sink.size)


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
    "s3-put-granite": s3_put_granite,
    "s3-put-boto3": s3_put_boto3,
    "s3-prepare-object": s3_prepare_object,
    "s3-get-granite": s3_get_granite,
    "s3-get-boto3": s3_get_boto3,
    "remove-outputs": remove_outputs,
}


#: Measurements that live in modules of their own, by name prefix: each module has a ``MEASUREMENTS``
#: mapping of its own and imports its helpers from this one (as ``measure``).
MODULES = {"orm-": "orm_objects", "gc-": "gc_listing", "migrate-": "migrate_copy", "fill-": "fill_field"}


def find(name: str) -> Callable[[dict[str, Any]], Result]:
    """The measurement called ``name``, from this module or from the module its prefix names."""
    if name in MEASUREMENTS:
        return MEASUREMENTS[name]
    module = next((module for prefix, module in MODULES.items() if name.startswith(prefix)), None)
    if module is None:
        raise SystemExit(f"no measurement named {name!r}")
    # Run as a script, this module is __main__; the scenario modules import it as `measure`, and must
    # get this copy rather than a second one.
    sys.modules.setdefault("measure", sys.modules[__name__])
    found: dict[str, Callable[[dict[str, Any]], Result]] = __import__(module).MEASUREMENTS
    return found[name]


def main() -> None:
    measure = find(sys.argv[1])
    measured = measure(marshal.loads(bytes.fromhex(sys.argv[2])))
    import json

    print(json.dumps(measured))


if __name__ == "__main__":
    main()
