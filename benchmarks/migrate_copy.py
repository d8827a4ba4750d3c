"""Scenario 7: a slot migrated from local disk to S3 against a bare boto3 copy loop (``run.py`` runs it).

``measure.py`` dispatches the ``migrate-`` measurements here, each in a fresh interpreter. The data,
made once per size by ``migrate-prepare`` (untimed): ``objects`` files of ``object_bytes`` each on
local disk, in the layout the manager gives the slot ``documents`` (key prefix ``bench``), and a
SQLite table whose rows reference them (``<root>/refs.db``).

* ``migrate-granite``: :class:`granite_storage.migrate.StorageMigrator` moves the slot from the local
  backend (its previous location) to an S3 backend (its current one, the backend's defaults) with
  ``workers`` workers: each object read, streamed up, its size and sha256 checked, every row
  rewritten in batches. It works on a copy of the database made before the clock starts.
* ``migrate-boto3``: the same files, read from disk and sent with a plain boto3 client by a pool of
  as many threads: ``put_object`` for objects under 8 MiB, ``upload_fileobj`` (its transfer manager,
  8 MiB parts, one at a time) for the others. No database, no check. As many requests in flight as
  the candidate: ``workers`` objects at once, each a part at a time, where the migrator copies one
  large object at a time with ``workers`` (the S3 backend's ``max_concurrency``) parts at once. The
  default ``TransferConfig`` (10 threads an upload) would run 40 part uploads at once here, in
  400 MiB.

Each measurement writes under an S3 prefix of its own and deletes what it wrote after its clock
stops. Both sides report the objects and bytes they moved.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from measure import MIB, Clock, data_block, s3_client

if TYPE_CHECKING:
    from measure import Result

STORAGE_KEY, PREFIX = "documents", "bench"
#: The transfer manager's threshold: boto3 uploads smaller objects with one PutObject.
MULTIPART_THRESHOLD = 8 * MIB
#: Part uploads each ``upload_fileobj`` runs at once: with ``workers`` of them, as many as the candidate's.
TRANSFER_CONCURRENCY = 1


def key_of(number: int) -> str:
    token = hashlib.blake2b(number.to_bytes(8, "big"), digest_size=16).hexdigest()
    return f"{PREFIX}/document/{number}/file_ref/{token}.bin"


def content_of(number: int, size: int, block: bytes) -> bytes:
    """``size`` bytes unique to object ``number``: its number, then the seeded block, repeated."""
    head = number.to_bytes(8, "big")
    body = (block * (size // len(block) + 1))[: max(size - len(head), 0)]
    return (head + body)[:size]


def _model() -> Any:
    from sqlalchemy import Integer
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    from granite_storage import StoredObjectRefType

    class Base(DeclarativeBase):
        pass

    class Row(Base):  # without annotations: they would be evaluated in the module, not here
        __tablename__ = "objects"

        id = mapped_column(Integer, primary_key=True)
        ref = mapped_column(StoredObjectRefType(), nullable=True)

    return Row


def migrate_prepare(params: dict[str, Any]) -> Result:
    """Write the files and the table referencing them (not a measurement)."""
    from sqlalchemy import create_engine, insert

    from granite_storage import StoredObjectRef

    root = Path(params["root"])
    storage = root / "storage"
    block = data_block()
    rows = []
    for number in range(params["objects"]):
        content = content_of(number, params["object_bytes"], block)
        path = storage / key_of(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        ref = StoredObjectRef(
            storage_key=STORAGE_KEY,
            backend="disk",
            location=key_of(number),
            size=len(content),
            checksum=f"sha256:{hashlib.sha256(content).hexdigest()}",
        )
        rows.append({"id": number, "ref": ref})
    row = _model()
    engine = create_engine(f"sqlite:///{root / 'refs.db'}")
    row.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(row), rows)
    engine.dispose()
    return {"storage": str(storage)}


def _fresh_database(params: dict[str, Any]) -> str:
    """A copy of the prepared database for this measurement (the migration rewrites its rows)."""
    copy = Path(params["root"]) / f"refs-{os.getpid()}.db"
    shutil.copyfile(Path(params["root"]) / "refs.db", copy)
    return str(copy)


def _delete_prefix(params: dict[str, Any], prefix: str) -> None:
    client = s3_client(params)
    bucket = params["s3"]["bucket"]
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def migrate_granite(params: dict[str, Any]) -> Result:
    """``StorageMigrator.migrate`` of the slot from local disk to S3, ``workers`` at once."""
    from sqlalchemy import create_engine

    from granite_storage import PluginHost, StorageLocation, StorageManager, StoragePolicy
    from granite_storage.migrate import StorageMigrator
    from granite_storage_local import LocalStorageBackend
    from granite_storage_s3 import S3StorageBackend

    s3 = params["s3"]
    prefix = f"granite-{os.getpid()}"
    bucket = S3StorageBackend(
        s3["bucket"],
        prefix=prefix,
        client=s3_client(params),
    )
    manager = StorageManager(
        backends={"disk": LocalStorageBackend(params["storage"]), "s3": bucket},
        policies={
            STORAGE_KEY: StoragePolicy(
                STORAGE_KEY, backend_key="s3", key_prefix=PREFIX, previous_locations=[StorageLocation("disk")]
            )
        },
        plugins=PluginHost(strict=False, disabled=()),
    )
    database = _fresh_database(params)
    engine = create_engine(f"sqlite:///{database}")
    migrator = StorageMigrator(
        manager=manager, engine=engine, columns=[(_model(), "ref")], workers=params["workers"]
    )
    with Clock(params) as clock:
        report = migrator.migrate(STORAGE_KEY, dry_run=False)
    engine.dispose()
    os.unlink(database)
    _delete_prefix(params, prefix)
    if report.moved != params["objects"] or not report.ok:
        raise RuntimeError(f"the migration did not move every object: {report}")
    return clock.result(report.bytes_copied, count=report.copied)


def migrate_boto3(params: dict[str, Any]) -> Result:
    """The same files read from disk and sent with a plain boto3 client by a pool of ``workers`` threads."""
    from sqlalchemy import create_engine

    _model()  # the candidate's untimed setup, so that both processes start alike
    database = _fresh_database(params)
    create_engine(f"sqlite:///{database}").dispose()
    from boto3.s3.transfer import TransferConfig

    client = s3_client(params)
    bucket = params["s3"]["bucket"]
    prefix = f"boto3-{os.getpid()}"
    config = TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=MULTIPART_THRESHOLD,
        max_concurrency=TRANSFER_CONCURRENCY,
    )
    storage = Path(params["storage"])

    def copy(number: int) -> int:
        path = storage / key_of(number)
        key = f"{prefix}/{key_of(number)}"
        size = path.stat().st_size
        if size < MULTIPART_THRESHOLD:
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        else:
            with path.open("rb") as file:
                client.upload_fileobj(file, bucket, key, Config=config)
        return size

    with Clock(params) as clock, ThreadPoolExecutor(params["workers"]) as pool:
        sizes = list(pool.map(copy, range(params["objects"])))
    os.unlink(database)
    _delete_prefix(params, prefix)
    return clock.result(sum(sizes), count=len(sizes))


MEASUREMENTS = {
    "migrate-prepare": migrate_prepare,
    "migrate-granite": migrate_granite,
    "migrate-boto3": migrate_boto3,
}
