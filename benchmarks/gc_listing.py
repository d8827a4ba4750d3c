"""Scenario 5: a garbage collection against a bare listing of the same slot (``run.py`` runs it).

``measure.py`` dispatches the ``gc-`` measurements here, each in a fresh interpreter. The data, made
once per backend and size by ``gc-prepare`` (untimed):

* ``objects`` one-byte objects in the slot ``documents`` (key prefix ``bench``), in the layout the
  manager gives them (``bench/document/<n>/file/<token>.bin``, one directory per entity). Local files
  are written straight to disk under ``<root>/storage``, the tree ``put()`` would make without its
  cost; S3 objects are uploaded with 16 threads of ``PutObject`` under a backend prefix of their
  own in the run's bucket.
* a SQLite table (``<root>/refs.db``) whose rows reference all objects but every tenth: 10% are
  orphans. The collector streams it with ``iter_model_storage_refs``.

The candidates collect with a grace period of 0 (every object is old enough; checking an object's
age costs the same either way). The baselines list the same objects with nothing on top: a recursive
``os.scandir`` walk counting files, or a plain boto3 client's ``list_objects_v2`` paginator counting
keys. Every measurement does the same untimed setup first (imports, the manager, the database
connection), so both processes reach the clock in the same state; both sides report the number of
objects listed as their ``count``.

A deleting measurement puts its orphans back after its clock stops, so every measurement, of either
side, finds the slot as it was prepared. (``run.py``'s ``restore`` step runs before the candidate
only: the baseline after a deleting measurement would list 90% of the objects.)

``gc-dry-run-set-of-keys`` is the dry run with the referenced keys in a Python ``set`` of strings
instead of the collector's 64-bit digests: what the digests save in memory.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from measure import Clock, s3_client

if TYPE_CHECKING:
    from measure import Result

#: The slot collected, its backend's name and its key prefix.
STORAGE_KEY, BACKEND, PREFIX = "documents", "files", "bench"
#: One object in this many has no row: the orphans.
ORPHAN_EVERY = 10
#: Threads uploading S3 objects (untimed).
S3_THREADS = 16


def key_of(number: int) -> str:
    """The key of object ``number``: the manager's layout, a token that looks random but is fixed.

    Fixed, so that a deleting measurement can put back the orphans it deleted from their numbers.
    """
    token = hashlib.blake2b(number.to_bytes(8, "big"), digest_size=16).hexdigest()
    return f"{PREFIX}/document/{number}/file/{token}.bin"


def is_orphan(number: int) -> bool:
    return number % ORPHAN_EVERY == ORPHAN_EVERY - 1


def orphan_count(objects: int) -> int:
    return objects // ORPHAN_EVERY


def _storage(params: dict[str, Any]) -> Path:
    return Path(params["root"], "storage")


def _database(params: dict[str, Any]) -> Path:
    return Path(params["root"], "refs.db")


def _s3_list_prefix(params: dict[str, Any]) -> str:
    """The bucket prefix of the slot: the preparation's backend prefix, then the slot's."""
    return f"{params['s3_prefix']}/{PREFIX}/"


# -- preparing and restoring the data (untimed) --------------------------------------------------------


def prepare(params: dict[str, Any]) -> Result:
    """Store the slot's objects and the table of references (not a measurement)."""
    import secrets

    Path(params["root"]).mkdir(parents=True)
    objects = params["objects"]
    prepared: Result = {}
    if params["backend"] == "local":
        _write_local(params, range(objects))
    else:
        prepared["s3_prefix"] = f"gc-{secrets.token_hex(4)}"
        _write_s3({**params, **prepared}, range(objects))
    prepared["references"] = _write_references(_database(params), objects)
    return prepared


def restore_orphans(params: dict[str, Any]) -> None:
    """Store again the orphans a deleting collection removed (untimed)."""
    orphans = (number for number in range(params["objects"]) if is_orphan(number))
    if params["backend"] == "local":
        _write_local(params, orphans)
    else:
        _write_s3(params, orphans)


def _write_local(params: dict[str, Any], numbers: Iterator[int] | range) -> None:
    """One-byte files under ``<root>/storage`` in the manager's layout, with their directories.

    The directory ``bench/document/<n>`` is made for each file, as ``put()`` makes it; a deletion
    removes it again, with its ``file`` directory, once they are empty.
    """
    root = str(_storage(params))
    for number in numbers:
        key = key_of(number)
        entity = os.path.join(root, *key.split("/")[:3])
        os.makedirs(os.path.join(entity, "file"), exist_ok=True)
        with open(os.path.join(root, *key.split("/")), "wb") as file:
            file.write(b"x")


def _write_s3(params: dict[str, Any], numbers: Iterator[int] | range) -> None:
    """One-byte objects under the preparation's prefix, :data:`S3_THREADS` ``PutObject`` at once."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    s3 = params["s3"]
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name=s3["region"],
        config=Config(
            signature_version="s3v4", retries={"mode": "standard"}, max_pool_connections=S3_THREADS
        ),
    )
    prefix = params["s3_prefix"]

    def put(number: int) -> None:
        client.put_object(Bucket=s3["bucket"], Key=f"{prefix}/{key_of(number)}", Body=b"x")

    with ThreadPoolExecutor(S3_THREADS) as pool:
        for _ in pool.map(put, numbers):
            pass


def _write_references(database: Path, objects: int) -> int:
    """A row referencing each object but the orphans; return how many rows."""
    import json
    import sqlite3

    from granite_storage import StoredObjectRef

    template = StoredObjectRef(STORAGE_KEY, BACKEND, key_of(0), 1).to_dict()
    connection = sqlite3.connect(database)
    try:
        connection.execute("CREATE TABLE document (id INTEGER PRIMARY KEY, file_ref JSON)")
        rows = 0
        batch: list[tuple[str]] = []
        for number in range(objects):
            if is_orphan(number):
                continue
            batch.append((json.dumps({**template, "location": key_of(number)}),))
            rows += 1
            if len(batch) == 10_000:
                connection.executemany("INSERT INTO document (file_ref) VALUES (?)", batch)
                batch.clear()
        connection.executemany("INSERT INTO document (file_ref) VALUES (?)", batch)
        connection.commit()
    finally:
        connection.close()
    return rows


# -- the measurements ------------------------------------------------------------------------------------


def _setup(params: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The manager, the engine (connected once) and the model: the untimed setup of every side."""
    from sqlalchemy import Column, Integer, Table, create_engine, select
    from sqlalchemy.orm import DeclarativeBase

    from granite_storage import StorageManager, StoredObjectRefType

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
        backend: dict[str, Any] = {"type": "local", "root": str(_storage(params))}
    else:
        s3 = params["s3"]
        os.environ["AWS_ACCESS_KEY_ID"] = s3["access_key"]
        os.environ["AWS_SECRET_ACCESS_KEY"] = s3["secret_key"]
        backend = {
            "type": "s3",
            "bucket": s3["bucket"],
            "prefix": params["s3_prefix"],
            "endpoint_url": s3["endpoint_url"],
            "region_name": s3["region"],
        }
    manager = StorageManager.from_config(
        {
            "backends": {BACKEND: backend},
            "policies": {STORAGE_KEY: {"backend": BACKEND, "key_prefix": PREFIX}},
        }
    )
    engine = create_engine(f"sqlite:///{_database(params)}")
    with engine.connect() as connection:  # open the pool's connection before any clock starts
        connection.execute(select(Document.__table__).limit(1)).all()
    return manager, engine, Document


def _collect(params: dict[str, Any], *, dry_run: bool) -> Result:
    from datetime import timedelta

    from sqlalchemy.orm import Session

    from granite_storage import StorageGarbageCollector
    from granite_storage.orm import iter_model_storage_refs

    manager, engine, document = _setup(params)
    with Session(engine) as session:
        collector = StorageGarbageCollector(
            manager=manager,
            iter_references=lambda: iter_model_storage_refs(session, document, "file_ref"),
            min_age=timedelta(0),
        )
        with Clock(params) as clock:
            report = collector.collect(STORAGE_KEY, dry_run=dry_run)
    engine.dispose()
    orphans = orphan_count(params["objects"])
    expected = {
        "references": params["references"],
        "orphaned": orphans,
        "deleted": 0 if dry_run else orphans,
        "failed": 0,
    }
    found = {name: getattr(report, name) for name in expected}
    if found != expected:
        raise RuntimeError(f"the collection found {found}, not {expected}")
    if not dry_run:
        restore_orphans(params)
    return clock.result(0, count=report.scanned, **found)


def dry_run(params: dict[str, Any]) -> Result:
    """``StorageGarbageCollector.collect(dry_run=True)``, references streamed from SQLite."""
    return _collect(params, dry_run=True)


def deleting(params: dict[str, Any]) -> Result:
    """``collect(dry_run=False)``: the same, deleting the orphans (put back after the clock stops)."""
    return _collect(params, dry_run=False)


class _SetOfKeys:
    """The obvious alternative to the collector's digests: a ``set`` of the keys, folded as it folds."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def add(self, key: str) -> None:
        self._keys.add(_folded(key))

    def freeze(self) -> None:
        pass

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _folded(key) in self._keys


def _folded(key: str) -> str:
    return unicodedata.normalize("NFC", key).casefold()


def dry_run_set_of_keys(params: dict[str, Any]) -> Result:
    """The dry run with the referenced keys in a Python ``set`` instead of the collector's digests."""
    import granite_storage.gc

    granite_storage.gc._KeyDigests = _SetOfKeys  # type: ignore[assignment,misc]
    return _collect(params, dry_run=True)


def scandir_walk(params: dict[str, Any]) -> Result:
    """A bare recursive ``os.scandir`` walk of the slot's directory, counting its files."""
    _setup(params)
    with Clock(params) as clock:
        count = _count_files(str(_storage(params) / PREFIX))
    return clock.result(0, count=count)


def _count_files(directory: str) -> int:
    """Depth first, one open directory per level, as the local backend walks (no stat: ``d_type``)."""
    count = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                count += _count_files(entry.path)
            elif entry.is_file(follow_symlinks=False):
                count += 1
    return count


def list_objects_v2(params: dict[str, Any]) -> Result:
    """A plain boto3 client's ``list_objects_v2`` paginator over the slot's prefix, counting keys."""
    _setup(params)
    client = s3_client(params)
    with Clock(params) as clock:
        count = 0
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=params["s3"]["bucket"], Prefix=_s3_list_prefix(params)):
            count += len(page.get("Contents", ()))
    return clock.result(0, count=count)


MEASUREMENTS: dict[str, Callable[[dict[str, Any]], Result]] = {
    "gc-prepare": prepare,
    "gc-dry-run": dry_run,
    "gc-deleting": deleting,
    "gc-dry-run-set-of-keys": dry_run_set_of_keys,
    "gc-scandir-walk": scandir_walk,
    "gc-list-objects-v2": list_objects_v2,
}
