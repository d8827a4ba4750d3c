"""The click commands behind ``granite-storage`` (imported only when the command runs)."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Any

import click

from granite_storage.cli import EXIT_FAILURES, EXIT_OK, EXIT_STOPPED, EXIT_USAGE
from granite_storage.errors import ConfigurationError, StorageError
from granite_storage.gc import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SAMPLE_SIZE,
    GarbageCollectionProgress,
    GarbageCollectionReport,
    ReferenceSource,
    StorageGarbageCollector,
)
from granite_storage.migrate import DEFAULT_MIGRATION_BATCH_SIZE, DEFAULT_WORKERS
from granite_storage.refs import StoredObjectRef

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from granite_storage.manager import StorageManager
    from granite_storage.migrate import MigrationProgress, MigrationReport

_DURATION_PART = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class _ConfigError(click.ClickException):
    """Bad configuration given on the command line: exit status 2, nothing was deleted."""

    exit_code = EXIT_USAGE


class _RunStopped(click.ClickException):
    """The run stopped on a database or storage error: exit status 3."""

    exit_code = EXIT_STOPPED


def run(argv: list[str]) -> int:
    """Run the command line on ``argv``; return the exit status instead of exiting."""
    try:
        cli.main(argv, prog_name="granite-storage", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_FAILURES)
    return EXIT_OK  # pragma: no cover - click always exits in standalone mode


def _parse_duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``1h30m``, ``2d``, ``1w``; a bare number is seconds; ``0`` is none."""
    text = value.strip().lower()
    if text.isdigit():
        return timedelta(seconds=int(text))
    parts = _DURATION_PART.findall(text)
    if not parts or _DURATION_PART.sub("", text).strip():
        raise click.BadParameter(f"{value!r} is not a duration (e.g. 90s, 15m, 1h, 1h30m, 2d)", ctx, param)
    return timedelta(seconds=sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="granite-storage", prog_name="granite-storage")
def cli() -> None:
    """Operate granite-storage: list installed backends, collect orphaned objects, migrate a slot.

    Exit status: 0 success; 1 some objects could not be deleted or moved (plugins: a plugin failed
    to load); 2 usage or configuration error, nothing deleted or moved; 3 the run stopped on a
    database or storage error.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List the installed backend types, with the distribution and version providing each.

    Exits with status 1 if some plugin failed to load (each failure is listed).
    """
    from granite_storage.plugins import PluginHost

    host = PluginHost()
    host.load_entry_points()
    types = sorted(host.backend_types().values(), key=lambda backend_type: backend_type.name)
    failures = host.failures
    if as_json:
        listing = {
            "backends": [
                {
                    "type": t.name,
                    "distribution": t.distribution,
                    "version": t.version,
                    "plugin": t.plugin,
                    "target": t.target if isinstance(t.target, str) else _qualified_name(t.target),
                }
                for t in types
            ],
            "failures": [
                {
                    "plugin": f.name,
                    "distribution": f.distribution,
                    "error": f"{type(f.error).__name__}: {f.error}",
                }
                for f in failures.values()
            ],
        }
        click.echo(json.dumps(listing, indent=2))
    else:
        rows = [
            (
                t.name,
                t.distribution or "-",
                t.version or "-",
                t.target if isinstance(t.target, str) else _qualified_name(t.target),
            )
            for t in types
        ]
        _echo_table(("TYPE", "DISTRIBUTION", "VERSION", "CLASS"), rows)
        if not rows:
            click.echo("no backend types installed")
        for failure in failures.values():
            source = f" ({failure.distribution})" if failure.distribution else ""
            click.echo(f"plugin {failure.name!r}{source} failed to load: {failure.error}", err=True)
    if failures:
        raise SystemExit(EXIT_FAILURES)


def _slot_options(verb: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The options ``gc`` and ``migrate`` share: configuration, database, slot, sources of references.

    ``verb`` says what the command does to the slot, for the help of ``--storage-key``.
    """
    options = [
        click.option(
            "--config",
            "config_path",
            required=True,
            type=click.Path(exists=True, dir_okay=False),
            help="The storage configuration (TOML), as StorageManager.from_config reads it.",
        ),
        click.option("--section", help="The table of the config file that holds the storage configuration."),
        click.option(
            "--database-url",
            required=True,
            envvar="GRANITE_STORAGE_DATABASE_URL",
            show_envvar=True,
            help="SQLAlchemy URL of the database holding the references.",
        ),
        click.option("--storage-key", required=True, help=f"The slot to {verb}."),
        click.option(
            "--model",
            "models",
            multiple=True,
            metavar="MODULE:CLASS",
            help="A model whose rows reference the slot (repeatable).",
        ),
        click.option(
            "--field",
            "fields",
            multiple=True,
            metavar="NAME",
            help="The reference attribute (or StoredContent field) of the --model at the same position; "
            "defaults to the model's __stored_content_field_name__.",
        ),
        click.option(
            "--references",
            "reference_callables",
            multiple=True,
            metavar="MODULE:CALLABLE",
            help="A callable taking a SQLAlchemy Session and returning an iterable of StoredObjectRef "
            "(repeatable).",
        ),
    ]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _output_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--json`` and ``--progress/--no-progress``, as ``gc`` and ``migrate`` take them."""
    command = click.option(
        "--progress/--no-progress",
        default=None,
        help="Show progress on standard error (default: when it is a terminal).",
    )(command)
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table."
    )(command)


@cli.command()
@_slot_options("collect")
@click.option("--delete", is_flag=True, help="Delete the orphans. Without it, a dry run only reports them.")
@click.option(
    "--min-age",
    callback=_parse_duration,
    metavar="DURATION",
    default="1h",
    show_default=True,
    help="Grace period: younger objects are never deleted. Longer than any upload (from its start) "
    "until its commit, plus clock skew.",
)
@click.option(
    "--remove-incomplete-uploads",
    is_flag=True,
    help="With --delete, also remove leftovers of interrupted uploads into the slot older than --min-age.",
)
@click.option(
    "--previous-locations",
    is_flag=True,
    help="Also collect orphans in the slot's previous locations (except one that overlaps another "
    "slot's location on the same backend: skipped, and said so). Referenced objects are kept wherever "
    "they live.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option(
    "--sample",
    "sample_size",
    type=click.IntRange(min=0),
    default=DEFAULT_SAMPLE_SIZE,
    show_default=True,
    help="How many orphan keys and failures to list.",
)
@_output_options
def gc(
    config_path: str,
    section: str | None,
    database_url: str,
    storage_key: str,
    models: tuple[str, ...],
    fields: tuple[str, ...],
    reference_callables: tuple[str, ...],
    delete: bool,
    min_age: timedelta,
    remove_incomplete_uploads: bool,
    previous_locations: bool,
    batch_size: int,
    sample_size: int,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Find the objects of a slot that no row references; with --delete, delete them.

    References come from --model/--field pairs and/or --references callables, all read in one
    database transaction (REPEATABLE READ where the database has it, so they form one snapshot).
    Modules are imported with the current directory on the import path.

    \b
    Example:
      granite-storage gc --config storage.toml --database-url postgresql://db/app \\
          --storage-key documents --model app.models:Document --field _file_ref --delete
    """  # noqa: D301 - "\b" is click's marker that keeps the example's lines as they are
    from sqlalchemy.orm import Session

    if not models and not reference_callables:
        raise click.UsageError("give the references: --model (with --field) and/or --references")
    setup = _SlotSetup.load(config_path, section, storage_key, models, fields, reference_callables)
    model_sources = [_model_source(model, attribute) for model, attribute in setup.columns]
    manager = setup.manager
    engine = setup.engine(_snapshot_engine, database_url)
    display = _Progress(storage_key, enabled=sys.stderr.isatty() if progress is None else progress)
    try:
        with Session(engine) as session:
            sources: list[ReferenceSource] = [
                *(_bind(source, session) for source in model_sources),
                *setup.reference_sources(session),
            ]
            collector = StorageGarbageCollector(
                manager=manager,
                iter_references=lambda: _in_one_snapshot(session, sources),
                min_age=min_age,
                batch_size=batch_size,
                sample_size=sample_size,
                progress=display.update,
            )
            report = collector.collect(
                storage_key,
                dry_run=not delete,
                remove_incomplete_uploads=remove_incomplete_uploads,
                previous_locations=previous_locations,
            )
    except click.ClickException:
        raise
    except Exception as exc:
        raise _stopped(exc, "nothing more was deleted") from exc
    finally:
        display.finish()
        engine.dispose()
    _conclude(report, as_json=as_json, echo=_echo_report)


@cli.command()
@_slot_options("migrate")
@click.option(
    "--apply",
    is_flag=True,
    help="Copy the objects and rewrite the rows. Without it, a dry run only reports what would move.",
)
@click.option(
    "--delete-source",
    is_flag=True,
    help="With --apply, delete each source object once its rows are rewritten and no reference points "
    "at it any more.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=DEFAULT_WORKERS,
    show_default=True,
    help="Objects copied at once.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_MIGRATION_BATCH_SIZE,
    show_default=True,
    help="Rows read, copied and rewritten (in one transaction) together.",
)
@click.option(
    "--sample",
    "sample_size",
    type=click.IntRange(min=0),
    default=DEFAULT_SAMPLE_SIZE,
    show_default=True,
    help="How many failures and changed rows to list.",
)
@_output_options
def migrate(
    config_path: str,
    section: str | None,
    database_url: str,
    storage_key: str,
    models: tuple[str, ...],
    fields: tuple[str, ...],
    reference_callables: tuple[str, ...],
    apply: bool,
    delete_source: bool,
    workers: int,
    batch_size: int,
    sample_size: int,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Move the objects a slot's rows reference into the slot's current location; rewrite the rows.

    Every object referenced by a --model/--field's rows that lies outside the slot's current
    location (a previous location, or granite-storage 0.1.0's layout) is copied there, checked
    for size and sha256, and its row rewritten if the application has not changed it meanwhile.
    --references callables name further references, which cannot be rewritten: with
    --delete-source, a source they point at is kept. Killed at any point, a run can be repeated:
    it reuses the copies already made.

    \b
    Example:
      granite-storage migrate --config storage.toml --database-url postgresql://db/app \\
          --storage-key documents --model app.models:Document --field _file_ref --apply
    """  # noqa: D301 - "\b" is click's marker that keeps the example's lines as they are
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from granite_storage.migrate import StorageMigrator

    if not models:
        raise click.UsageError("give the rows to migrate: --model (with --field)")
    setup = _SlotSetup.load(config_path, section, storage_key, models, fields, reference_callables)
    engine = setup.engine(create_engine, database_url)
    display = _MigrationProgressBar(
        storage_key, enabled=sys.stderr.isatty() if progress is None else progress
    )
    try:
        with Session(engine) as session:
            migrator = StorageMigrator(
                manager=setup.manager,
                engine=engine,
                columns=setup.columns,
                references=setup.reference_sources(session),
                workers=workers,
                batch_size=batch_size,
                sample_size=sample_size,
                progress=display.update,
            )
            report = migrator.migrate(storage_key, dry_run=not apply, delete_source=delete_source)
    except click.ClickException:
        raise
    except Exception as exc:
        raise _stopped(exc, "what was committed stays; run it again") from exc
    finally:
        display.finish()
        engine.dispose()
    _conclude(report, as_json=as_json, echo=_echo_migration_report)


def _stopped(exc: Exception, what_stays: str) -> _RunStopped:
    """The error, exit status 3, of a run that stopped on ``exc``; the message says ``what_stays``."""
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, StorageError | SQLAlchemyError):
        return _RunStopped(f"the run stopped, {what_stays}: {exc}")
    # a --references callable of the application's, or a backend, broke
    return _RunStopped(f"the run stopped, {what_stays}: {type(exc).__name__}: {exc}")


def _conclude(
    report: GarbageCollectionReport | MigrationReport, *, as_json: bool, echo: Callable[[Any], None]
) -> None:
    """Print ``report`` (as JSON, or with ``echo``); exit with status 1 unless it is ok."""
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        echo(report)
    if not report.ok:
        raise SystemExit(EXIT_FAILURES)


# -- references ------------------------------------------------------------------------------------


def _import(target: str, option: str) -> Any:
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigurationError(f"{option} {target!r}: expected MODULE:NAME, e.g. app.models:Document")
    try:
        value: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            value = getattr(value, name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{option} {target!r} cannot be imported: {exc}") from exc
    return value


@dataclass(frozen=True, slots=True)
class _SlotSetup:
    """What ``gc`` and ``migrate`` build from their shared options, checked before anything runs."""

    manager: StorageManager
    #: (model, attribute) of each --model/--field pair.
    columns: list[tuple[type[Any], str]]
    #: (target, callable) of each --references.
    callables: list[tuple[str, Any]]

    @classmethod
    def load(
        cls,
        config_path: str,
        section: str | None,
        storage_key: str,
        models: Sequence[str],
        fields: Sequence[str],
        reference_callables: Sequence[str],
    ) -> _SlotSetup:
        """Build the manager and import the sources; a usage or configuration error exits with 2."""
        from granite_storage.manager import StorageManager

        if fields and len(fields) not in (1, len(models)):
            raise click.UsageError(f"{len(fields)} --field options for {len(models)} --model options")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # the application's modules, as `python -m` would find them
        try:
            manager = StorageManager.from_config(config_path, section=section)
            manager.policy(storage_key)
            columns = [
                _model_field(model, fields[0] if len(fields) == 1 else (fields[index] if fields else None))
                for index, model in enumerate(models)
            ]
            callables = [(target, _import(target, "--references")) for target in reference_callables]
        except ConfigurationError as exc:
            raise _ConfigError(str(exc)) from exc
        return cls(manager, columns, callables)

    @staticmethod
    def engine(factory: Callable[[str], Engine], database_url: str) -> Engine:
        """``factory(database_url)``; a URL SQLAlchemy cannot use exits with 2."""
        from sqlalchemy.exc import ArgumentError

        try:
            return factory(database_url)
        except ArgumentError as exc:
            raise _ConfigError(str(exc)) from exc

    def reference_sources(self, session: Any) -> list[ReferenceSource]:
        """The --references callables, each bound to ``session``."""
        return [_checked(target, function, session) for target, function in self.callables]


def _model_field(target: str, field: str | None) -> tuple[type[Any], str]:
    """Import a --model and find its reference attribute, checked up front."""
    model = _import(target, "--model")
    if not isinstance(model, type):
        raise ConfigurationError(f"--model {target!r} is not a class")
    attribute = field or getattr(model, "__stored_content_field_name__", None)
    if not attribute:
        raise ConfigurationError(f"--model {target!r} needs a --field (it declares no stored content field)")
    if not hasattr(model, attribute):
        raise ConfigurationError(f"--field {attribute!r}: {model.__name__} has no such attribute")

    _check_column(model, attribute)  # an unsuitable column is found before the run starts
    return model, attribute


def _model_source(model: type[Any], attribute: str) -> Callable[[Any], Iterator[StoredObjectRef]]:
    """A function of a session yielding the references of one model's field."""
    from granite_storage.orm import iter_model_storage_refs

    def source(session: Any) -> Iterator[StoredObjectRef]:
        return iter_model_storage_refs(session, model, attribute)

    return source


def _check_column(model: type[Any], attribute: str) -> None:
    from granite_storage.orm.content import StoredContent
    from granite_storage.orm.types import StoredObjectRefType

    column = getattr(model, attribute)
    if isinstance(column, StoredContent):
        column = getattr(model, column.ref_attribute)
    if not isinstance(getattr(getattr(column, "expression", None), "type", None), StoredObjectRefType):
        raise ConfigurationError(
            f"--field {attribute!r}: {model.__name__}.{attribute} is not a StoredObjectRefType column"
        )


def _in_one_snapshot(session: Any, sources: Sequence[ReferenceSource]) -> Iterator[StoredObjectRef]:
    """Every source's references, read in one transaction that ends once they are all read.

    One transaction makes one snapshot, taken by the first read, after the run started: read on
    separate connections, a reference moved meanwhile from a source not read yet to one already
    read would be in neither, and its file deleted. Ending it before the listing keeps SQLite
    writers waiting, and PostgreSQL's vacuum held back, only while the references are read.
    """
    with session.begin():
        for source in sources:
            yield from source()


def _bind(source: Callable[[Any], Iterable[StoredObjectRef]], session: Any) -> ReferenceSource:
    return lambda: source(session)


def _checked(target: str, function: Any, session: Any) -> ReferenceSource:
    if not callable(function):
        raise _ConfigError(f"--references {target!r} is not callable")

    def source() -> Iterable[StoredObjectRef]:
        return function(session)  # type: ignore[no-any-return]

    return source


def _snapshot_engine(url: str) -> Engine:
    """An engine whose transactions read one snapshot, without locking writers where it can."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from granite_storage.orm.sqlite import enable_sqlite_savepoints

    backend = make_url(url).get_backend_name()
    if backend in {"postgresql", "mysql", "mariadb"}:
        return create_engine(url, isolation_level="REPEATABLE READ")
    engine = create_engine(url)
    if backend == "sqlite":
        # The sqlite3 driver begins a transaction only before a write, so each SELECT would read on
        # its own; the remedy that makes SAVEPOINTs exact also makes SQLAlchemy emit BEGIN itself.
        # (In rollback-journal mode the read transaction keeps writers waiting until the references
        # are read.)
        enable_sqlite_savepoints(engine)
    return engine


# -- output ----------------------------------------------------------------------------------------


class _Progress:
    """A one-line live counter on standard error; a scan's total is unknown, so no percentage."""

    _INTERVAL = 0.2

    def __init__(self, storage_key: str, *, enabled: bool, stream: IO[str] | None = None) -> None:
        self.storage_key = storage_key
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._shown = False

    def update(self, progress: GarbageCollectionProgress) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self._INTERVAL:
            return
        self._last = now
        if progress.phase == "references":
            line = f"{self.storage_key}: reading references... {progress.references:,}"
        else:
            line = (
                f"{self.storage_key}: {progress.references:,} references, {progress.scanned:,} objects "
                f"scanned, {progress.orphaned:,} orphaned, {progress.deleted:,} deleted"
            )
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def _echo_report(report: GarbageCollectionReport) -> None:
    mode = "dry run, nothing deleted (pass --delete to delete)" if report.dry_run else "deleting"
    click.echo(f"Garbage collection of {report.storage_key!r}: {mode}")
    rows = [
        ("backend / prefix", f"{report.backend} / {report.prefix}/"),
        *(("previous location", f"{loc.backend} / {loc.prefix}/") for loc in report.locations[1:]),
        ("grace period", _format_duration(report.min_age)),
        ("references of the slot", f"{report.references:,}"),
        ("references ignored", f"{report.ignored_references:,}"),
        ("unreadable rows", f"{report.invalid_references:,}"),
        ("objects scanned", f"{report.scanned:,}"),
        ("referenced", f"{report.referenced:,}"),
        ("too young, kept", f"{report.skipped_too_young:,}"),
        ("orphaned", f"{report.orphaned:,}"),
        ("deleted", f"{report.deleted:,}"),
        ("failed", f"{report.failed:,}"),
    ]
    if report.incomplete_uploads_removed is not None:
        rows.append(("incomplete uploads removed", f"{report.incomplete_uploads_removed:,}"))
    rows.append(("duration", f"{report.duration.total_seconds():.1f} s"))
    _echo_table(None, rows)
    for skipped in report.skipped_locations:
        location = skipped.location
        click.echo(f"\nnot collected: {location.backend} / {location.prefix}/: {skipped.reason}")
    if report.orphan_sample:
        verb = "would delete" if report.dry_run else "orphans"
        shown = len(report.orphan_sample)
        click.echo(f"\n{verb} ({shown} of {report.orphaned:,} listed):")
        for key in report.orphan_sample:
            click.echo(f"  {key}")
    if report.failures:
        click.echo(f"\nfailures ({len(report.failures)} of {report.failed:,} listed):", err=True)
        for failure in report.failures:
            click.echo(f"  {failure.key}: {failure.error}", err=True)


class _MigrationProgressBar:
    """click's progress bar over the rows of a migration, on standard error."""

    def __init__(self, storage_key: str, *, enabled: bool) -> None:
        self.storage_key = storage_key
        self.enabled = enabled
        self._bar: Any = None
        self._done = 0

    def update(self, progress: MigrationProgress) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=max(progress.rows_total, 1),
                label=f"{self.storage_key}: migrating rows",
                file=sys.stderr,
                show_pos=True,
            )
            self._bar.__enter__()
        step = min(progress.rows_done, self._bar.length) - self._done
        if step > 0:
            self._bar.update(step)
            self._done += step

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _echo_migration_report(report: MigrationReport) -> None:
    if report.dry_run:
        mode = "dry run, nothing copied or rewritten (pass --apply to move)"
    else:
        mode = "moving, deleting sources" if report.delete_source else "moving, sources kept"
    click.echo(f"Migration of {report.storage_key!r} to {report.backend} / {report.prefix}/: {mode}")
    moved = "would move" if report.dry_run else "moved"
    rows = [
        ("references of the slot", f"{report.references:,}"),
        ("skipped (already current)", f"{report.skipped:,}"),
        (moved, f"{report.moved:,}"),
        ("changed meanwhile, left alone", f"{report.changed:,}"),
        ("failed", f"{report.failed:,}"),
        ("objects copied", f"{report.copied:,}"),
        ("copies reused", f"{report.reused:,}"),
        ("bytes" if not report.dry_run else "bytes to copy", f"{report.bytes_copied:,}"),
        ("checksums computed", f"{report.checksums_computed:,}"),
    ]
    if report.delete_source and not report.dry_run:
        rows += [
            ("sources deleted", f"{report.sources_deleted:,}"),
            ("sources kept (still referenced)", f"{report.sources_kept:,}"),
            ("source deletions failed", f"{report.delete_failed:,}"),
        ]
    rows.append(("duration", f"{report.duration.total_seconds():.1f} s"))
    _echo_table(None, rows)
    if report.checksums_computed:
        click.echo(
            f"\n{report.checksums_computed:,} references had no usable sha256 checksum: their copies were "
            "checked by size only, and their new references carry the sha256 computed while copying."
        )
    if report.changed_rows:
        shown = len(report.changed_rows)
        click.echo(f"\nchanged by the application meanwhile ({shown} of {report.changed:,} listed):")
        for row in report.changed_rows:
            click.echo(f"  {row}")
    if report.failures:
        click.echo(f"\nfailures ({len(report.failures)} listed):", err=True)
        for failure in report.failures:
            click.echo(f"  {failure.row} {failure.location}: {failure.error}", err=True)


def _echo_table(header: Sequence[str] | None, rows: Sequence[Sequence[str]]) -> None:
    lines = [header, *rows] if header else rows
    if not lines or (header and not rows):
        return
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "none"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)


def _qualified_name(target: type[Any]) -> str:
    return f"{target.__module__}:{target.__qualname__}"
