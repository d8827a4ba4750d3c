"""Scenario 4: small files stored through the ORM and read back, against sqlalchemy-file and advanced-alchemy.

Each side uses its library as that library's documentation shows, on the same disk (a directory of its
own under the row's ``root``) and the same database (SQLite: a file of its own under ``root``;
PostgreSQL: a table of its own in the server's database):

* granite-storage: a ``StoredContentMixin`` model with a ``StoredObjectRefType`` column, a manager with
  the local backend (the default key layout), and ``track_storage(sessionmaker)``. Per file: create the
  row, ``set_content(data, filename=...)``, add, commit (one INSERT carrying the reference). With
  ``params["flow"] == "flush-first"``, the seed's flow instead: add the row, flush,
  ``set_content``, commit; with ``params["key_layout"] == "entity"``, the slot's keys hold the row's
  id (two new directories per row), which needs that flow.
* sqlalchemy-file: a ``FileField`` column, its ``StorageManager`` with a libcloud ``LocalStorageDriver``
  container (its defaults: lock files, a ``.metadata.json`` sidecar per file). Per file: add a row
  holding ``File(content=data, filename=...)``, commit (the upload happens in the flush).
* advanced-alchemy: a ``StoredObject`` column, an ``ObstoreBackend`` on ``file://`` registered in
  ``storages``, and the session listeners its ``SQLAlchemySyncConfig`` installs on a sessionmaker. Per
  file: add a row holding ``FileObject(..., to_filename=<uuid>.bin, content=data)``, commit (the
  listener saves the file after the commit).

All three delete the files of a rolled-back transaction (advanced-alchemy never writes them), which is
why granite-storage's session tracking is on. One session and one transaction per file, as a web
request would. Reading loads every row in one query and reads each file's whole content through the
library's own call.

Both sides of a row report the same work: ``count`` files, ``count * 4 KiB`` bytes, and the sha256 of
all contents in row order, which is computed after the clock stops (a store reads the files back from
disk for it, a read hashes what the library returned).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from measure import Clock

if TYPE_CHECKING:
    from measure import Result
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

#: Bytes per file.
FILE_SIZE = 4096
#: The contents: one seeded random stream, cut into files (distinct, and the same in every process).
SEED = 20_251_204
GRANITE, SQLALCHEMY_FILE, ADVANCED_ALCHEMY = "granite", "sqlalchemy-file", "advanced-alchemy"


def contents(count: int) -> list[bytes]:
    """``count`` distinct 4 KiB contents, produced before any clock starts."""
    import random

    data = random.Random(SEED).randbytes(count * FILE_SIZE)
    return [data[i * FILE_SIZE : (i + 1) * FILE_SIZE] for i in range(count)]


def filename(index: int) -> str:
    return f"file-{index}.bin"


def checksum(parts: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return "sha256:" + digest.hexdigest()


def read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


# -- the database ----------------------------------------------------------------------------------------


def engine(params: dict[str, Any], name: str) -> Engine:
    """An engine on the row's database: SQLite ``root/<name>.sqlite``, or the PostgreSQL server."""
    from sqlalchemy import create_engine

    if params["database"] == "sqlite":
        return create_engine(f"sqlite:///{os.path.join(params['root'], name)}.sqlite")
    url = params["postgres_url"]
    if not url:
        raise SystemExit("this measurement needs PostgreSQL (params['postgres_url'])")
    return create_engine(url)


def table_name(side: str, operation: str, peer: str) -> str:
    """A table of its own per side, operation and row, so that no side sees another's rows."""
    name = f"bench_orm_{operation}_{side}"
    if side == GRANITE:
        name += f"_vs_{peer}"
    return name.replace("-", "_")


def directory(params: dict[str, Any], side: str, operation: str) -> str:
    return os.path.join(params["root"], f"{operation}-{side}")


def reset_table(engine: Engine, base: Any) -> None:
    base.metadata.drop_all(engine)
    base.metadata.create_all(engine)


def connect(engine: Engine) -> None:
    """Open the pool's connection before the clock starts: both sides start connected."""
    from sqlalchemy import text

    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


# -- one library per side ----------------------------------------------------------------------------


class Side:
    """One library's model, storage and per-file calls, all set up before any clock starts.

    ``clear`` starts from an empty storage directory; the table is reset by the caller.
    """

    name: str

    def __init__(self, params: dict[str, Any], operation: str, *, clear: bool) -> None:
        from sqlalchemy.orm import sessionmaker

        self.root = directory(params, self.name, operation)
        if clear:
            shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root, exist_ok=True)
        self.base, self.model = self.declare(table_name(self.name, operation, params["peer"]))
        self.engine = engine(params, f"{operation}-{self.name}")
        self.session_factory: sessionmaker[Session] = sessionmaker(self.engine)

    def declare(self, table: str) -> tuple[Any, Any]:
        """Configure the library's storage under ``self.root``; return a declarative base and the model."""
        raise NotImplementedError

    def store(self, session_factory: sessionmaker[Session], index: int, data: bytes) -> None:
        """Store one file through the ORM, in a transaction of its own."""
        raise NotImplementedError

    def content(self, row: Any) -> bytes:
        """The whole content of one row's file, read through the library."""
        raise NotImplementedError

    def path(self, row: Any) -> str:
        """Where one row's file is on disk (to check, untimed, that a store wrote it)."""
        raise NotImplementedError

    def rows(self, session: Session) -> list[Any]:
        """Every row in id order, loaded in one query."""
        from sqlalchemy import select

        return list(session.scalars(select(self.model).order_by(self.model.id)))


class GraniteSide(Side):
    """``StoredContentMixin`` + ``StoredObjectRefType``, a local backend, ``track_storage``."""

    name = GRANITE

    def __init__(self, params: dict[str, Any], operation: str, *, clear: bool) -> None:
        from granite_storage import track_storage

        self.key_layout = params.get("key_layout", "fanout")
        super().__init__(params, operation, clear=clear)
        track_storage(self.session_factory)
        if params.get("flow") == "flush-first":
            self.store = self.store_flush_first  # type: ignore[method-assign]

    def declare(self, table: str) -> tuple[Any, Any]:
        from sqlalchemy import Integer, String
        from sqlalchemy.orm import DeclarativeBase, mapped_column

        from granite_storage import StorageManager, StoredContentMixin, StoredObjectRefType

        manager = StorageManager.from_config(
            {
                "backends": {"disk": {"type": "local", "root": self.root}},
                "policies": {
                    "documents": {"backend": "disk", "key_prefix": "documents", "key_layout": self.key_layout}
                },
            }
        )
        self.backend_root = str(manager.backend("disk").root)  # type: ignore[attr-defined]

        class Base(DeclarativeBase):
            pass

        class Document(StoredContentMixin, Base):
            __tablename__ = table
            __stored_content_field_name__ = "_file_ref"
            __stored_content_storage_key__ = "documents"

            id = mapped_column(Integer, primary_key=True)
            name = mapped_column(String(100), nullable=False)
            _file_ref = mapped_column(StoredObjectRefType(), nullable=True)

        Document.configure_storage_manager(manager)
        return Base, Document

    def store(self, session_factory: sessionmaker[Session], index: int, data: bytes) -> None:
        with session_factory() as session:
            document = self.model(name=filename(index))
            document.set_content(data, filename=filename(index))
            session.add(document)
            session.commit()

    def store_flush_first(self, session_factory: sessionmaker[Session], index: int, data: bytes) -> None:
        """The seed's flow: the row is flushed (INSERT) before its content is stored (UPDATE)."""
        with session_factory() as session:
            document = self.model(name=filename(index))
            session.add(document)
            session.flush()
            document.set_content(data, filename=filename(index))
            session.commit()

    def content(self, row: Any) -> bytes:
        data: bytes = row.get_content()
        return data

    def path(self, row: Any) -> str:
        return os.path.join(self.backend_root, *row.content_ref.location.split("/"))


class SqlalchemyFileSide(Side):
    """``FileField`` with libcloud's ``LocalStorageDriver``, as sqlalchemy-file configures it by default."""

    name = SQLALCHEMY_FILE

    def declare(self, table: str) -> tuple[Any, Any]:
        # libcloud's local driver takes an inter-process lock file per write in the temporary
        # directory: keep them on the same disk, inside the run's directory, so the run deletes them.
        locks = self.root + "-locks"
        os.makedirs(locks, exist_ok=True)
        os.environ["TMPDIR"] = locks
        import tempfile

        tempfile.tempdir = None

        from libcloud.storage.drivers.local import LocalStorageDriver
        from libcloud.storage.types import ContainerDoesNotExistError
        from sqlalchemy import Integer, String
        from sqlalchemy.orm import DeclarativeBase, mapped_column
        from sqlalchemy_file import File, FileField
        from sqlalchemy_file.storage import StorageManager

        driver = LocalStorageDriver(self.root)  # type: ignore[no-untyped-call]
        try:
            container = driver.get_container("documents")  # type: ignore[no-untyped-call]
        except ContainerDoesNotExistError:
            container = driver.create_container("documents")  # type: ignore[no-untyped-call]
        StorageManager.add_storage("documents", container)
        self.container_path = os.path.join(self.root, "documents")
        self.file_class = File

        class Base(DeclarativeBase):
            pass

        class Document(Base):
            __tablename__ = table

            id = mapped_column(Integer, primary_key=True)
            name = mapped_column(String(100), nullable=False)
            content = mapped_column(FileField(upload_storage="documents"), nullable=True)

        return Base, Document

    def store(self, session_factory: sessionmaker[Session], index: int, data: bytes) -> None:
        with session_factory() as session:
            content = self.file_class(content=data, filename=filename(index))
            session.add(self.model(name=filename(index), content=content))
            session.commit()

    def content(self, row: Any) -> bytes:
        data: bytes = row.content.file.read()
        return data

    def path(self, row: Any) -> str:
        return os.path.join(self.container_path, row.content["file_id"])


class AdvancedAlchemySide(Side):
    """``StoredObject`` with an ``ObstoreBackend`` on ``file://`` and the library's session listeners."""

    name = ADVANCED_ALCHEMY

    def __init__(self, params: dict[str, Any], operation: str, *, clear: bool) -> None:
        from advanced_alchemy._listeners import SyncFileObjectListener
        from sqlalchemy import event

        super().__init__(params, operation, clear=clear)
        # What SQLAlchemySyncConfig.create_session_maker installs for file objects.
        event.listen(self.session_factory, "before_flush", SyncFileObjectListener.before_flush)
        event.listen(self.session_factory, "after_commit", SyncFileObjectListener.after_commit)
        event.listen(self.session_factory, "after_rollback", SyncFileObjectListener.after_rollback)

    def declare(self, table: str) -> tuple[Any, Any]:
        from advanced_alchemy.types.file_object import FileObject, StoredObject, storages
        from advanced_alchemy.types.file_object.backends.obstore import ObstoreBackend
        from sqlalchemy import Integer, String
        from sqlalchemy.orm import DeclarativeBase, mapped_column

        storages.register_backend(ObstoreBackend(key="documents", fs=f"file://{self.root}/"))
        self.file_class = FileObject

        class Base(DeclarativeBase):
            pass

        class Document(Base):
            __tablename__ = table

            id = mapped_column(Integer, primary_key=True)
            name = mapped_column(String(100), nullable=False)
            attachment = mapped_column(StoredObject(backend="documents"), nullable=True)

        return Base, Document

    def store(self, session_factory: sessionmaker[Session], index: int, data: bytes) -> None:
        import uuid

        with session_factory() as session:
            attachment = self.file_class(
                backend="documents",
                filename=filename(index),
                to_filename=f"{uuid.uuid4()}.bin",  # the documentation's pattern for unique names
                content=data,
            )
            session.add(self.model(name=filename(index), attachment=attachment))
            session.commit()

    def content(self, row: Any) -> bytes:
        data: bytes = row.attachment.get_content()
        return data

    def path(self, row: Any) -> str:
        return os.path.join(self.root, row.attachment.path)


SIDES: dict[str, Callable[..., Side]] = {
    GRANITE: GraniteSide,
    SQLALCHEMY_FILE: SqlalchemyFileSide,
    ADVANCED_ALCHEMY: AdvancedAlchemySide,
}


# -- measurements ----------------------------------------------------------------------------------------


def stored_checksum(side: Side, count: int) -> str:
    """Check (untimed) that every row is there with its file on disk; the sha256 of all files in order."""
    from sqlalchemy.orm import Session

    with Session(side.engine) as session:
        paths = [side.path(row) for row in side.rows(session)]
    if len(paths) != count:
        raise RuntimeError(f"{count} files stored, but the table has {len(paths)} rows")
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise RuntimeError(f"{len(missing)} stored files are missing, e.g. {missing[0]}")
    return checksum(read_file(path) for path in paths)


def store_all(side: Side, files: list[bytes]) -> None:
    store, session_factory = side.store, side.session_factory
    for index, data in enumerate(files):
        store(session_factory, index, data)


def measure_store(library: str, params: dict[str, Any]) -> Result:
    side = SIDES[library](params, "store", clear=True)
    files = contents(params["count"])
    reset_table(side.engine, side.base)
    connect(side.engine)
    os.sync()  # the cleared directory and table are on disk before the clock starts
    with Clock(params) as clock:
        store_all(side, files)
    stored = stored_checksum(side, len(files))
    result = clock.result(len(files) * FILE_SIZE, count=len(files), checksum=stored)
    if params["database"] != "sqlite":
        side.base.metadata.drop_all(side.engine)  # the server keeps no benchmark tables
    return result


def measure_read(library: str, params: dict[str, Any]) -> Result:
    side = SIDES[library](params, "read", clear=False)
    connect(side.engine)
    content = side.content
    with Clock(params) as clock, side.session_factory() as session:
        read = [content(row) for row in side.rows(session)]
    size = sum(map(len, read))
    return clock.result(size, count=len(read), checksum=checksum(iter(read)))


def prepare_read(params: dict[str, Any]) -> Result:
    """Store the files a read row reads (not a measurement): once with granite-storage, once with the peer."""
    files = contents(params["count"])
    for library in (GRANITE, params["peer"]):
        side = SIDES[library](params, "read", clear=True)
        reset_table(side.engine, side.base)
        store_all(side, files)
        stored_checksum(side, len(files))
    return {}


MEASUREMENTS: dict[str, Callable[[dict[str, Any]], Result]] = {
    "orm-store-granite": lambda params: measure_store(GRANITE, params),
    "orm-store-sqlalchemy-file": lambda params: measure_store(SQLALCHEMY_FILE, params),
    "orm-store-advanced-alchemy": lambda params: measure_store(ADVANCED_ALCHEMY, params),
    "orm-read-granite": lambda params: measure_read(GRANITE, params),
    "orm-read-sqlalchemy-file": lambda params: measure_read(SQLALCHEMY_FILE, params),
    "orm-read-advanced-alchemy": lambda params: measure_read(ADVANCED_ALCHEMY, params),
    "orm-prepare-read": prepare_read,
}
