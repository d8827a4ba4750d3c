"""The ``granite-storage`` command, run in-process (click's runner) and as the installed console script,
against a real SQLite database and local storage."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from granite_storage import StorageManager, StoragePermissionError, StoredObjectRef
from granite_storage.cli import EXIT_FAILURES, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, main
from granite_storage.cli._commands import cli
from granite_storage_local import LocalStorageBackend

DAY = 24 * 3600

MODELS = """
    import uuid

    from sqlalchemy import String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    from granite_storage import StoredContentMixin, StoredObjectRef, StoredObjectRefType
    from granite_storage.orm import iter_model_storage_refs


    class Base(DeclarativeBase):
        pass


    class Document(StoredContentMixin, Base):
        __tablename__ = "document"
        __stored_content_field_name__ = "_file_ref"
        __stored_content_storage_key__ = "documents"

        id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
        title: Mapped[str] = mapped_column(String(200))
        _file_ref: Mapped[StoredObjectRef | None] = mapped_column(StoredObjectRefType(), nullable=True)


    def document_refs(session):
        return iter_model_storage_refs(session, Document, "_file_ref")
"""

CONFIG = """
    [backends.files]
    type = "local"
    root = "storage"

    [policies.documents]
    backend = "files"
    key_prefix = "docs"
"""


@dataclass
class App:
    """An application directory: a models module, a storage config, a SQLite database with one row."""

    directory: Path
    module: str
    manager: StorageManager
    database_url: str
    kept: StoredObjectRef

    def orphan(self, *, age: float = DAY) -> StoredObjectRef:
        ref = self.manager.put_bytes(
            storage_key="documents", model_name="document", entity_id="lost", field_name="file", content=b"x"
        )
        moment = time.time() - age
        os.utime(self.storage / ref.location, (moment, moment))
        return ref

    @property
    def storage(self) -> Path:
        backend = self.manager.backend("files")
        assert isinstance(backend, LocalStorageBackend)
        return backend.root

    def arguments(self, *extra: str) -> list[str]:
        return [
            "gc",
            "--config",
            "storage.toml",
            "--database-url",
            self.database_url,
            "--storage-key",
            "documents",
            *extra,
        ]


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    module_name = f"gc_cli_app_{secrets.token_hex(4)}"
    (tmp_path / f"{module_name}.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / "storage.toml").write_text(textwrap.dedent(CONFIG))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module: ModuleType = importlib.import_module(module_name)
    manager = StorageManager.from_config(tmp_path / "storage.toml")
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(database_url)
    module.Base.metadata.create_all(engine)
    module.Document.configure_storage_manager(manager)
    with Session(engine) as session:
        doc = module.Document(title="kept")
        session.add(doc)
        session.flush()
        doc.set_content(b"%PDF kept", filename="kept.pdf")
        session.commit()
        kept = doc._file_ref
    engine.dispose()
    application = App(tmp_path, module_name, manager, database_url, kept)
    moment = time.time() - DAY
    os.utime(application.storage / kept.location, (moment, moment))
    try:
        yield application
    finally:
        sys.modules.pop(module_name, None)


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


# -- plugins ---------------------------------------------------------------------------------------


def test_plugins_lists_backend_types_with_their_distribution_and_version() -> None:
    result = invoke("plugins")
    assert result.exit_code == EXIT_OK, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["TYPE", "DISTRIBUTION", "VERSION", "CLASS"]
    local = next(row.split() for row in rows if row.startswith("local "))
    version = importlib.metadata.version("granite-storage-local")
    assert local == [
        "local",
        "granite-storage-local",
        version,
        "granite_storage_local.backend:LocalStorageBackend",
    ]


def test_plugins_as_json() -> None:
    result = invoke("plugins", "--json")
    listing = json.loads(result.output)
    assert {"type": "local", "distribution": "granite-storage-local"}.items() <= next(
        entry for entry in listing["backends"] if entry["type"] == "local"
    ).items()
    assert listing["failures"] == []


def test_a_plugin_that_fails_to_load_is_listed_and_fails_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = importlib.metadata.EntryPoint("broken", "granite_storage_no_such_module", "granite_storage")
    real = importlib.metadata.entry_points

    def entry_points(**selection: str) -> Any:
        found = real(**selection)
        return (
            importlib.metadata.EntryPoints([*found, broken])
            if selection.get("group") == "granite_storage"
            else found
        )

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.delenv("GRANITE_STORAGE_STRICT_PLUGINS", raising=False)
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == EXIT_FAILURES
    assert "plugin 'broken' failed to load" in result.stderr
    assert "local" in result.stdout


# -- gc --------------------------------------------------------------------------------------------


def test_gc_is_a_dry_run_by_default_and_reports_what_it_would_delete(app: App) -> None:
    lost = app.orphan()
    result = invoke(*app.arguments("--model", f"{app.module}:Document"))
    assert result.exit_code == EXIT_OK, result.output
    assert "dry run, nothing deleted" in result.output
    table = dict(line.rsplit(None, 1) for line in result.output.splitlines()[1:12] if line.strip())
    assert (table["objects scanned"], table["referenced"], table["orphaned"], table["deleted"]) == (
        "2",
        "1",
        "1",
        "0",
    )
    assert f"  {lost.location}" in result.output.splitlines()
    assert app.manager.exists(lost)


def test_gc_delete_as_the_installed_console_script(app: App) -> None:
    lost = app.orphan()
    young = app.orphan(age=60)
    script = Path(sys.executable).parent / "granite-storage"
    completed = subprocess.run(
        [
            str(script),
            *app.arguments("--model", f"{app.module}:Document", "--field", "_file_ref", "--delete", "--json"),
        ],
        cwd=app.directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == EXIT_OK, completed.stderr
    report = json.loads(completed.stdout)
    assert (report["scanned"], report["referenced"], report["skipped_too_young"], report["deleted"]) == (
        3,
        1,
        1,
        1,
    )
    assert report["orphan_sample"] == [lost.location]
    assert not app.manager.exists(lost)
    assert app.manager.exists(young)
    assert app.manager.get(app.kept) == b"%PDF kept"


def test_gc_min_age_sets_the_grace_period(app: App) -> None:
    young = app.orphan(age=60)
    result = invoke(
        *app.arguments("--references", f"{app.module}:document_refs", "--delete", "--min-age", "30m")
    )
    assert result.exit_code == EXIT_OK, result.output
    assert app.manager.exists(young)
    result = invoke(
        *app.arguments("--references", f"{app.module}:document_refs", "--delete", "--min-age", "0")
    )
    assert result.exit_code == EXIT_OK, result.output
    assert not app.manager.exists(young)
    assert app.manager.exists(app.kept)


def test_gc_exits_1_when_some_objects_could_not_be_deleted(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    lost, refused = app.orphan(), app.orphan()
    real_delete = LocalStorageBackend.delete

    def delete(self: LocalStorageBackend, key: str) -> None:
        if key == refused.location:
            raise StoragePermissionError(f"local storage denied access to {key!r}: Permission denied")
        real_delete(self, key)

    monkeypatch.setattr(LocalStorageBackend, "delete", delete)
    result = CliRunner().invoke(cli, app.arguments("--model", f"{app.module}:Document", "--delete"))
    assert result.exit_code == EXIT_FAILURES
    assert f"{refused.location}: StoragePermissionError" in result.stderr
    assert not app.manager.exists(lost)
    assert app.manager.exists(refused)


@pytest.mark.parametrize(
    "extra",
    [
        [],  # no references given
        ["--model", "no_such_module:Document"],
        ["--model", "{module}:Missing"],
        ["--model", "{module}:Document", "--field", "title"],
        ["--model", "{module}:Document", "--min-age", "soon"],
        ["--references", "{module}"],
    ],
)
def test_gc_usage_errors_exit_2_and_delete_nothing(app: App, extra: list[str]) -> None:
    lost = app.orphan()
    arguments = [part.format(module=app.module) for part in extra]
    result = CliRunner().invoke(cli, [*app.arguments(*arguments), "--delete"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert app.manager.exists(lost)


def test_gc_an_unknown_storage_key_is_a_usage_error(app: App) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "gc",
            "--config",
            "storage.toml",
            "--database-url",
            app.database_url,
            "--storage-key",
            "nope",
            "--model",
            f"{app.module}:Document",
        ],
    )
    assert result.exit_code == EXIT_USAGE
    assert "no storage policy for 'nope'" in result.stderr


def test_gc_stops_with_status_3_when_the_database_fails(app: App) -> None:
    lost = app.orphan()
    empty_database = f"sqlite:///{app.directory / 'empty.db'}"
    result = CliRunner().invoke(
        cli,
        [
            "gc",
            "--config",
            "storage.toml",
            "--database-url",
            empty_database,
            "--storage-key",
            "documents",
            "--model",
            f"{app.module}:Document",
            "--delete",
        ],
    )
    assert result.exit_code == EXIT_STOPPED
    assert "no such table" in result.stderr
    assert app.manager.exists(lost)


def test_gc_shows_progress_when_asked(app: App) -> None:
    result = CliRunner().invoke(cli, app.arguments("--model", f"{app.module}:Document", "--progress"))
    assert result.exit_code == EXIT_OK
    assert "objects scanned" in result.stderr or "reading references" in result.stderr


def test_main_returns_the_exit_status(app: App) -> None:
    assert main(["plugins"]) == EXIT_OK
    assert main(["gc", "--storage-key", "documents"]) == EXIT_USAGE
    assert main(["--help"]) == EXIT_OK


def test_without_click_the_command_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "click", None)
    monkeypatch.delitem(sys.modules, "granite_storage.cli._commands")
    assert main(["plugins"]) == EXIT_USAGE
    assert 'pip install "granite-storage[cli]"' in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["plugins"], ["gc"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == EXIT_OK
    assert result.output.startswith("Usage: ")


def test_gc_help_shows_its_example_line_by_line() -> None:
    lines = invoke("gc", "--help").output.splitlines()
    assert "    granite-storage gc --config storage.toml --database-url postgresql://db/app \\" in lines


MOVING_REFERENCE = """
    from sqlalchemy import Integer, create_engine, delete, update
    from sqlalchemy.orm import Mapped, Session, mapped_column

    from granite_storage import StoredObjectRef, StoredObjectRefType
    from granite_storage.orm import iter_model_storage_refs

    from {module} import Base, Document


    class Archived(Base):
        __tablename__ = "archived"

        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        file_ref: Mapped[StoredObjectRef] = mapped_column(StoredObjectRefType())


    def documents_then_a_commit_elsewhere(session):
        yield from iter_model_storage_refs(session, Document, "_file_ref")
        # While the run reads, the application moves a file's reference from the archive (not read
        # yet) to a document (already read), and commits.
        engine = create_engine("{database_url}")
        with Session(engine) as other:
            archived = other.get(Archived, 1)
            other.execute(update(Document).values(_file_ref=archived.file_ref))
            other.execute(delete(Archived))
            other.commit()
        engine.dispose()


    def archive(session):
        return iter_model_storage_refs(session, Archived, "file_ref")
"""


def test_gc_reads_all_its_sources_in_one_snapshot(app: App) -> None:
    # Read in separate snapshots, neither source would see the moved reference, and its file (far
    # older than the grace period) would be deleted while a committed row points at it.
    sources_name = f"gc_cli_sources_{secrets.token_hex(4)}"
    text = MOVING_REFERENCE.format(module=app.module, database_url=app.database_url)
    (app.directory / f"{sources_name}.py").write_text(textwrap.dedent(text))
    sources = importlib.import_module(sources_name)
    moved = app.orphan()
    engine = create_engine(app.database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")  # the reader does not block the writer
        sources.Archived.__table__.create(connection)
    with Session(engine) as session:
        session.add(sources.Archived(id=1, file_ref=moved))
        session.commit()
    engine.dispose()
    try:
        result = invoke(
            *app.arguments(
                "--references",
                f"{sources_name}:documents_then_a_commit_elsewhere",
                "--references",
                f"{sources_name}:archive",
                "--delete",
            )
        )
    finally:
        sys.modules.pop(sources_name, None)
    assert result.exit_code == EXIT_OK, result.output
    assert app.manager.exists(moved)


def test_gc_stops_with_status_3_when_a_references_callable_fails(app: App) -> None:
    lost = app.orphan()
    failing = f"gc_cli_failing_{secrets.token_hex(4)}"
    (app.directory / f"{failing}.py").write_text(
        "def refs(session):\n    raise RuntimeError('the archive database is down')\n"
    )
    try:
        result = CliRunner().invoke(cli, app.arguments("--references", f"{failing}:refs", "--delete"))
    finally:
        sys.modules.pop(failing, None)
    assert result.exit_code == EXIT_STOPPED, result.output
    assert "RuntimeError: the archive database is down" in result.stderr
    assert "Traceback" not in result.output
    assert app.manager.exists(lost)


def test_gc_lets_the_application_write_while_it_lists_and_deletes(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The snapshot is for reading the references only: held through the listing, it would lock
    # SQLite writers out (rollback journal) and hold back PostgreSQL's vacuum for the whole run.
    lost = app.orphan()
    writes: list[str] = []
    listing = LocalStorageBackend.list

    def list_while_the_application_writes(backend: LocalStorageBackend, prefix: str = "") -> Iterator[Any]:
        database = sqlite3.connect(app.directory / "app.db", timeout=0.1)
        try:
            with database:
                database.execute("UPDATE document SET title = 'renamed'")
            writes.append("committed")
        finally:
            database.close()
        return listing(backend, prefix)

    monkeypatch.setattr(LocalStorageBackend, "list", list_while_the_application_writes)
    result = invoke(*app.arguments("--model", f"{app.module}:Document", "--delete"))
    assert result.exit_code == EXIT_OK, result.output
    assert writes == ["committed"]
    assert not app.manager.exists(lost)
