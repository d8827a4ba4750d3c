"""Data written by granite-storage 0.1.0 (``v010/``) and by 0.2.0's first key layout (``v020/``), loaded
where a test can read and change it.

``legacy`` puts one configuration's objects where the current release will find them at the keys
0.1.0 wrote: a copy of its local backend's root, or a fresh bucket (SeaweedFS, and moto) loaded from
its manifest. ``database`` puts its rows in SQLite (a copy of the file 0.1.0 wrote) or PostgreSQL
(the same JSON, copied into the ``JSONB`` column the seed's model has there).

The real servers are the other suites' own fixtures: SeaweedFS from the S3 plugin's conftest
(skipped with a reason where it cannot start, unless ``GRANITE_TEST_REQUIRE_S3=1``), PostgreSQL
from the SQLAlchemy suite's (skipped unless ``GRANITE_TEST_REQUIRE_DATABASES=1``).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import Engine, create_engine, text

from granite_storage import StorageBackend, StorageManager, StoragePolicy
from granite_storage.backends.local import LocalStorageBackend  # the seed's import paths
from granite_storage.backends.s3 import S3StorageBackend

from ..fastapi.conftest import s3_servers  # the S3 plugin's conftest, loaded as a module
from ..orm.conftest import _drop_scratch_databases, server_engine  # the fixture drops the scratch database
from .models import Base

FIXTURES = Path(__file__).resolve().parent

real_s3 = s3_servers.real_s3
moto_s3 = s3_servers.moto_s3

__all__ = ["_drop_scratch_databases", "moto_s3", "real_s3"]

# (configuration, where its objects are served from)
# ``v010/``: stored by the 0.1.0 release; ``v020/``: stored by 0.2.0 under its first key layout,
# ``<prefix>/<model>/<entity id>/<field>/<token>`` (``generate_v020.py``).
STORES = [
    ("v010/local_key_prefix", "disk"),
    ("v010/local_no_key_prefix", "disk"),
    *(
        (f"v010/{name}", server)
        for name in ("s3_prefix_production", "s3_key_prefix", "s3_no_prefix")
        for server in ("seaweedfs", "moto")
    ),
    ("v020/local_key_prefix", "disk"),
    ("v020/local_no_key_prefix", "disk"),
]


@dataclass(frozen=True)
class LegacyData:
    """One configuration of ``v010/`` or ``v020/`` (``name`` is ``"v010/local_key_prefix"``): its
    configuration when the data was written, and what a reader must find."""

    name: str

    @property
    def directory(self) -> Path:
        return FIXTURES / self.name

    @property
    def release(self) -> str:
        """The release that wrote the data, ``"0.1.0"`` or ``"0.2.0"``."""
        return {"v010": "0.1.0", "v020": "0.2.0"}[self.name.split("/")[0]]

    @property
    def config(self) -> dict[str, Any]:
        """``config.json``: backends and policies as 0.1.0 was configured."""
        config: dict[str, Any] = json.loads((self.directory / "config.json").read_text("utf-8"))
        return config

    @property
    def expected(self) -> dict[str, Any]:
        """``expected.json``: ``rows`` (per table), ``orphans`` and ``deleted`` objects."""
        expected: dict[str, Any] = json.loads((self.directory / "expected.json").read_text("utf-8"))
        return expected

    @property
    def backend_name(self) -> str:
        (name,) = self.config["backends"]
        return str(name)

    @property
    def backend_options(self) -> dict[str, Any]:
        options: dict[str, Any] = self.config["backends"][self.backend_name]
        return options

    def key_prefix(self, storage_key: str) -> str | None:
        prefix: str | None = self.config["policies"][storage_key].get("key_prefix")
        return prefix

    def max_size(self, storage_key: str) -> int:
        return int(self.config["policies"][storage_key]["max_size"])


@dataclass
class LegacyStore:
    """A configuration's objects, served where the test can reach them.

    Attributes:
        data: The configuration.
        server: ``"disk"``, ``"seaweedfs"`` or ``"moto"``.
        backend_factory: Builds the backend as the seed's README does (``LocalStorageBackend(root)``,
            ``S3StorageBackend(bucket=..., prefix=..., client=...)``).
        backend_config: The backend's table for :meth:`StorageManager.from_config`.
        is_stored: Whether an object is stored at a location (looked at directly, not through the
            library).
    """

    data: LegacyData
    server: str
    backend_factory: Callable[[], StorageBackend]
    backend_config: dict[str, Any]
    is_stored: Callable[[str], bool]

    def seed_manager(self) -> StorageManager:
        """The manager built with the seed's calls, exactly as 0.1.0 was configured."""
        name = self.data.backend_name
        return StorageManager(
            backends={name: self.backend_factory()},
            policies={
                "avatars": StoragePolicy(
                    storage_key="avatars",
                    backend_key=name,
                    max_size=self.data.max_size("avatars"),
                    key_prefix=self.data.key_prefix("avatars"),
                ),
                "documents": StoragePolicy(
                    "documents",
                    backend_key=name,
                    max_size=self.data.max_size("documents"),
                    key_prefix=self.data.key_prefix("documents"),
                ),
            },
        )

    def configured_manager(self) -> StorageManager:
        """The same manager built with :meth:`StorageManager.from_config` from 0.1.0's settings."""
        config = self.data.config
        return StorageManager.from_config(
            {"backends": {self.data.backend_name: self.backend_config}, "policies": config["policies"]}
        )


@pytest.fixture(params=STORES, ids=["-".join(store).replace("/", "-") for store in STORES])
def legacy(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LegacyStore]:
    """One 0.1.0 configuration with its objects in place, on local disk or in a fresh bucket."""
    name, server = request.param
    data = LegacyData(name)
    options = data.backend_options
    if server == "disk":
        root = tmp_path / "storage"
        shutil.copytree(data.directory / "storage", root)
        yield LegacyStore(
            data,
            server,
            backend_factory=lambda: LocalStorageBackend(root),
            backend_config={"type": "local", "root": str(root)},
            is_stored=lambda location: (root / location).is_file(),
        )
        return
    s3 = request.getfixturevalue("real_s3" if server == "seaweedfs" else "moto_s3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    client = s3.client()
    bucket = f"v010-{secrets.token_hex(6)}"
    load_bucket(client, bucket, data.directory)
    prefix = options["prefix"]

    def is_stored(location: str) -> bool:
        try:
            client.head_object(Bucket=bucket, Key=f"{prefix}/{location}" if prefix else location)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    backend_config = {"type": "s3", "bucket": bucket, "prefix": prefix, "region_name": s3.region}
    if s3.endpoint_url:
        backend_config["endpoint_url"] = s3.endpoint_url
    try:
        yield LegacyStore(
            data,
            server,
            # The seed's S3 example, with the test server's client.
            backend_factory=lambda: S3StorageBackend(bucket=bucket, prefix=prefix, client=s3.client()),
            backend_config=backend_config,
            is_stored=is_stored,
        )
    finally:
        s3_servers.empty_bucket(client, bucket)
        client.delete_bucket(Bucket=bucket)


def load_bucket(client: Any, bucket: str, directory: Path) -> None:
    """Create ``bucket`` and put every object of ``manifest.json`` at the key 0.1.0 wrote it to."""
    client.create_bucket(Bucket=bucket)
    manifest = json.loads((directory / "manifest.json").read_text("utf-8"))
    for item in manifest["objects"]:
        headers = {"ContentType": item["content_type"]} if item["content_type"] else {}
        client.put_object(
            Bucket=bucket, Key=item["key"], Body=(directory / item["file"]).read_bytes(), **headers
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, legacy: LegacyStore, tmp_path: Path) -> Iterator[Engine]:
    """The configuration's rows: the SQLite file 0.1.0 wrote, or the same JSON copied into PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "app.db"
        shutil.copyfile(legacy.data.directory / "app.db", path)
        engine = create_engine(f"sqlite:///{path}")
        yield engine
        engine.dispose()
        return
    engine = server_engine("postgresql")
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    try:
        copy_rows(legacy.data.directory / "app.db", engine)
        yield engine
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


def copy_rows(sqlite_path: Path, engine: Engine) -> None:
    """Copy the rows 0.1.0 wrote, their JSON as it is, into ``engine``'s ``document`` and ``users``."""
    with contextlib.closing(sqlite3.connect(sqlite_path)) as source:
        documents = source.execute("SELECT id, title, _file_ref FROM document").fetchall()
        users = source.execute("SELECT id, name, avatar FROM users").fetchall()
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO document (id, title, _file_ref) VALUES (:id, :title, CAST(:ref AS JSONB))"),
            [{"id": uuid.UUID(hex=id_), "title": title, "ref": ref} for id_, title, ref in documents],
        )
        connection.execute(
            text("INSERT INTO users (id, name, avatar) VALUES (:id, :name, CAST(:ref AS JSONB))"),
            [{"id": id_, "name": name, "ref": ref} for id_, name, ref in users],
        )
