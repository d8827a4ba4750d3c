"""``granite-storage migrate``, run in-process (click's runner) against a real SQLite database and local
storage: a slot whose backend changed from ``old`` to ``files`` in the configuration."""

from __future__ import annotations

import importlib
import json
import secrets
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from granite_storage import StorageManager, StoredObjectRef
from granite_storage.cli import EXIT_FAILURES, EXIT_OK, EXIT_USAGE
from granite_storage.cli._commands import cli

from .test_cli import MODELS  # the application gc's tests use

BEFORE = """
    [backends.old]
    type = "local"
    root = "old-storage"

    [policies.documents]
    backend = "old"
"""

AFTER = """
    [backends.old]
    type = "local"
    root = "old-storage"

    [backends.files]
    type = "local"
    root = "storage"

    [policies.documents]
    backend = "files"
    previous_locations = [{ backend = "old" }]
"""


@dataclass
class App:
    """An application whose two documents were stored in ``old``; its configuration now says ``files``."""

    directory: Path
    module: ModuleType
    database_url: str
    refs: list[StoredObjectRef]

    def arguments(self, *extra: str) -> list[str]:
        return [
            "migrate",
            "--config",
            "storage.toml",
            "--database-url",
            self.database_url,
            "--storage-key",
            "documents",
            "--model",
            f"{self.module.__name__}:Document",
            *extra,
        ]

    def current_refs(self) -> list[StoredObjectRef]:
        engine = create_engine(self.database_url)
        try:
            with Session(engine) as session:
                return [doc._file_ref for doc in session.scalars(select(self.module.Document))]
        finally:
            engine.dispose()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    module_name = f"migrate_cli_app_{secrets.token_hex(4)}"
    (tmp_path / f"{module_name}.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / "storage.toml").write_text(textwrap.dedent(BEFORE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(module_name)
    before = StorageManager.from_config(tmp_path / "storage.toml")
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(database_url)
    module.Base.metadata.create_all(engine)
    module.Document.configure_storage_manager(before)
    refs = []
    with Session(engine) as session:
        for title in ("first", "second"):
            doc = module.Document(title=title)
            session.add(doc)
            session.flush()
            refs.append(doc.set_content(f"%PDF {title}".encode(), filename=f"{title}.pdf"))
        session.commit()
    engine.dispose()
    (tmp_path / "storage.toml").write_text(textwrap.dedent(AFTER))
    try:
        yield App(tmp_path, module, database_url, refs)
    finally:
        sys.modules.pop(module_name, None)


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


def test_migrate_is_a_dry_run_by_default_and_reports_what_it_would_move(app: App) -> None:
    result = invoke(*app.arguments())
    assert result.exit_code == EXIT_OK, result.output
    assert "dry run, nothing copied or rewritten" in result.output
    table = dict(line.rsplit(None, 1) for line in result.output.splitlines()[1:] if line.strip())
    assert (table["would move"], table["failed"], table["bytes to copy"]) == ("2", "0", "21")
    assert app.current_refs() == app.refs


def test_migrate_apply_moves_rewrites_and_with_delete_source_deletes_the_sources(app: App) -> None:
    result = invoke(*app.arguments("--apply", "--delete-source", "--json"))
    assert result.exit_code == EXIT_OK, result.output
    report = json.loads(result.output)
    assert (report["moved"], report["copied"], report["sources_deleted"], report["failed"]) == (2, 2, 2, 0)
    assert not report["dry_run"]
    refs = app.current_refs()
    assert {ref.backend for ref in refs} == {"files"}
    assert sorted(path.name for path in (app.directory / "storage").rglob("*.pdf")) == sorted(
        Path(ref.location).name for ref in refs
    )
    assert not list((app.directory / "old-storage").rglob("*.pdf"))


def test_migrate_exits_1_when_a_row_cannot_be_moved(app: App) -> None:
    (app.directory / "old-storage" / app.refs[0].location).unlink()
    result = invoke(*app.arguments("--apply"))
    assert result.exit_code == EXIT_FAILURES
    assert "ObjectNotFoundError" in result.stderr
    assert app.current_refs()[0] == app.refs[0]


def test_migrate_needs_a_model_and_a_known_slot(app: App) -> None:
    without_model = invoke(
        "migrate",
        "--config",
        "storage.toml",
        "--database-url",
        app.database_url,
        "--storage-key",
        "documents",
    )
    assert without_model.exit_code == EXIT_USAGE
    assert "--model" in without_model.output
    unknown = invoke(*app.arguments()[:6], "avatars", "--model", f"{app.module.__name__}:Document")
    assert unknown.exit_code == EXIT_USAGE
    assert "no storage policy for 'avatars'" in unknown.output


def test_migrate_takes_the_reference_options_of_gc() -> None:
    def options(command: str) -> set[str]:
        return {option for param in cli.commands[command].params for option in param.opts}

    shared = {
        "--config",
        "--section",
        "--database-url",
        "--storage-key",
        "--model",
        "--field",
        "--references",
    }
    assert shared <= options("gc") & options("migrate")
    assert {"--json", "--progress"} <= options("migrate")


def test_migrate_shows_a_progress_bar_on_standard_error_when_asked(app: App) -> None:
    result = invoke(*app.arguments("--apply", "--progress"))
    assert result.exit_code == EXIT_OK, result.output
    assert "documents: migrating rows" in result.stderr
    quiet = invoke(*app.arguments("--apply", "--no-progress"))
    assert quiet.stderr == ""
