"""Moving a slot's objects into its current location: copy, verify, rewrite the rows, then delete.

After a slot's configuration moves it (local disk to S3, one bucket to another, granite-storage 0.1.0's
layout to the slot's own prefix), its existing rows still point where the objects were, listed in
``previous_locations``. :class:`StorageMigrator` moves them, batch by batch:

1. Read a batch of rows (by primary key, so a run never holds more than one batch) and keep those whose
   reference of the slot lies outside its current location (:meth:`StorageManager.location_of
   <granite_storage.StorageManager.location_of>` differs from :attr:`StoragePolicy.location
   <granite_storage.StoragePolicy.location>`).
2. Copy each referenced object, streaming, to a key of the current location derived from where it was
   (:func:`migration_key`), and check the copy's size and sha256 against the reference. A copy that
   an earlier, interrupted run left there is verified and reused, never overwritten; a key holding
   other content fails the row. The current location is listed once, when the first copy is due,
   so only a key the listing names (or this run copied) is looked up before copying.
3. Rewrite the batch's rows in one transaction, each only if it still holds the reference read in
   step 1 (rows are locked first, with ``SELECT ... FOR UPDATE``, or on SQLite by taking the write
   lock); a row the application changed meanwhile is left alone and reported.
4. With ``delete_source``, once every batch is committed, read every reference again and delete each
   source object that no reference points at any more.

A run can be killed at any moment and run again: backends publish an object whole or not at all, and
rows change only in step 3, to copies that exist and were verified, so every row stays readable. The
only objects no row references are copies made for rows not rewritten yet (the next run reuses them,
or the garbage collector collects them) and, after an interrupted ``delete_source`` run, sources of
rows already rewritten, which ``collect(..., previous_locations=True)`` collects.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy

from granite_storage.errors import (
    ContentTooLargeError,
    InvalidKeyError,
    InvalidMetadataError,
    InvalidReferenceError,
    ObjectNotFoundError,
    StorageError,
)
from granite_storage.gc import ReferenceSource, _KeyDigests
from granite_storage.headers import check_content_type
from granite_storage.keys import MAX_KEY_LENGTH, is_within_prefix, safe_extension, validate_key
from granite_storage.manager import StorageManager
from granite_storage.policy import StorageLocation, StoragePolicy
from granite_storage.refs import StoredObjectRef
from granite_storage.streams import DEFAULT_CHUNK_SIZE, HashingReader, SizeLimitedStream

if TYPE_CHECKING:
    from sqlalchemy import Column, Table
    from sqlalchemy.engine import Connection

__all__ = [
    "DEFAULT_MIGRATION_BATCH_SIZE",
    "DEFAULT_WORKERS",
    "LARGE_OBJECT_SIZE",
    "MigrationFailure",
    "MigrationMismatchError",
    "MigrationProgress",
    "MigrationReport",
    "StorageMigrator",
    "migration_key",
]

logger = logging.getLogger(__name__)

#: Rows read, copied and rewritten per batch (one transaction each).
DEFAULT_MIGRATION_BATCH_SIZE = 500
#: Objects copied at once by default.
DEFAULT_WORKERS = 4
#: Objects larger than this (8 MiB, an S3 part) are copied one at a time, while the other workers go on
#: with smaller ones: the backend already spreads a large object's parts over threads of its own, and
#: memory then stays near ``workers x`` one part, whatever the objects' sizes.
LARGE_OBJECT_SIZE = 8 * 1024 * 1024
_MIGRATED_SEGMENT = "migrated"


class MigrationMismatchError(StorageError):
    """A copy does not match its reference (size or sha256), or its key holds other content.

    The copy this run made is deleted; the row keeps pointing at its source.
    """


@dataclass(frozen=True, slots=True)
class MigrationFailure:
    """A row whose object could not be moved; it still points where it pointed.

    Attributes:
        row: The model and primary key of the row, as text (``"Document(3f2a...)"``).
        location: The location its reference holds.
        error: What went wrong, as text (the exception's type and message).
    """

    row: str
    location: str
    error: str


@dataclass(frozen=True, slots=True)
class MigrationProgress:
    """How far a run has got; passed to the ``progress`` callback after each batch.

    Attributes:
        phase: ``"rows"`` while rows are moved, then ``"delete"`` while sources are deleted.
        rows_total: Rows with a reference, counted when the run started (all slots; a row the
            application adds meanwhile can make ``rows_done`` pass it).
        rows_done: Rows read so far.
        moved: Rows rewritten so far (in a dry run: that would be).
        failed: Rows that could not be moved, so far.
        bytes_copied: Bytes copied so far (in a dry run: that would be).
    """

    phase: str
    rows_total: int
    rows_done: int
    moved: int
    failed: int
    bytes_copied: int


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What one run of :meth:`StorageMigrator.migrate` found and did.

    Every reference of the slot read is counted once:
    ``references == skipped + moved + changed + failed``.

    Attributes:
        storage_key: The slot migrated.
        backend: The backend of its current location, where the objects were moved.
        prefix: The prefix of its current location.
        dry_run: Whether this was a dry run (nothing copied, rewritten or deleted).
        delete_source: Whether sources were to be deleted once their rows were rewritten.
        started_at: When the run started (UTC).
        duration (datetime.timedelta): How long the run took.
        references: References of the slot read.
        skipped: References already in the current location: nothing to do.
        moved: Rows rewritten to point at their copy (in a dry run: rows that would be).
        changed: Rows the application changed between their reading and their rewriting, left
            alone; a later run moves them if they still need it.
        failed: Rows that could not be moved (source missing, a copy that does not match, an
            unusable reference); each still points where it pointed.
        copied: Objects copied in this run.
        reused: Copies found already in place (an earlier run's), verified and reused.
        bytes_copied: Bytes copied (in a dry run: the size of what would be).
        checksums_computed: Moved rows whose reference had no usable sha256 checksum (granite-storage
            0.1.0 accepted any string): only the size was checked, and the new reference carries the
            sha256 computed while copying.
        sources_deleted: Source objects deleted (``delete_source``).
        sources_kept: Source objects of moved rows kept because some reference still points at them.
        delete_failed: Source objects whose deletion failed (they are still stored).
        failures: The first failures, at most ``sample_size`` of them (source deletions included).
        changed_rows: The first rows changed meanwhile, at most ``sample_size``.
    """

    storage_key: str
    backend: str
    prefix: str
    dry_run: bool
    delete_source: bool
    started_at: datetime
    duration: timedelta
    references: int
    skipped: int
    moved: int
    changed: int
    failed: int
    copied: int
    reused: int
    bytes_copied: int
    checksums_computed: int
    sources_deleted: int
    sources_kept: int
    delete_failed: int
    failures: tuple[MigrationFailure, ...]
    changed_rows: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether no row failed and every source deletion attempted succeeded.

        Rows changed meanwhile are not failures: the application decided where they point.
        """
        return self.failed == 0 and self.delete_failed == 0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-serialisable values (durations in seconds, times in ISO 8601)."""
        return {
            "storage_key": self.storage_key,
            "backend": self.backend,
            "prefix": self.prefix,
            "dry_run": self.dry_run,
            "delete_source": self.delete_source,
            "started_at": self.started_at.isoformat(),
            "duration_seconds": self.duration.total_seconds(),
            "references": self.references,
            "skipped": self.skipped,
            "moved": self.moved,
            "changed": self.changed,
            "failed": self.failed,
            "copied": self.copied,
            "reused": self.reused,
            "bytes": self.bytes_copied,
            "checksums_computed": self.checksums_computed,
            "sources_deleted": self.sources_deleted,
            "sources_kept": self.sources_kept,
            "delete_failed": self.delete_failed,
            "failures": [
                {"row": failure.row, "location": failure.location, "error": failure.error}
                for failure in self.failures
            ],
            "changed_rows": list(self.changed_rows),
        }


def migration_key(policy: StoragePolicy, source: StorageLocation, location: str) -> str:
    """The key in ``policy``'s current location that the object at ``location`` is copied to.

    Derived from the source alone, so a run that is interrupted and run again finds its earlier copy:

    * a location already inside the slot's prefix keeps its key (a backend move with the prefix
      unchanged: ``documents/document/7/file/9f1c....pdf`` stays that);
    * any other goes under the prefix as it is (0.1.0's ``document/<uuid>-1a2b3c4d.pdf`` becomes
      ``documents/document/<uuid>-1a2b3c4d.pdf``);
    * one that would then pass :data:`~granite_storage.keys.MAX_KEY_LENGTH` becomes
      ``<prefix>/migrated/<32 hex digits of the sha256 of source backend and location><.ext>``.

    Every key is inside the slot's prefix. Two sources map to one key only if their keys are equal
    below the prefix, which keys with 128 random bits (or 0.1.0's entity id and 32 random bits) make
    as good as impossible unless one object was copied to two places; the migrator never overwrites
    an object: a key holding other content than the reference describes fails the row.
    """
    prefix = policy.prefix
    if is_within_prefix(location, prefix):
        return validate_key(location)
    key = f"{prefix}/{location}"
    if len(key.encode("utf-8", "surrogatepass")) <= MAX_KEY_LENGTH:
        return validate_key(key)
    digest = hashlib.sha256(f"{source.backend}\0{location}".encode("utf-8", "surrogatepass")).hexdigest()
    return validate_key(f"{prefix}/{_MIGRATED_SEGMENT}/{digest[:32]}{safe_extension(location)}")


@dataclass(frozen=True, slots=True)
class _Column:
    """One model's reference column, with what rewriting its rows needs."""

    name: str
    table: Table
    column: Column[Any]
    primary_key: tuple[Column[Any], ...]


@dataclass(slots=True)
class _Item:
    """A row whose reference needs moving."""

    row: str
    key: tuple[Any, ...]
    raw: Any
    ref: StoredObjectRef
    source: StorageLocation
    target: str
    new_ref: StoredObjectRef | None = None


@dataclass(frozen=True, slots=True)
class _Batch:
    """A batch whose copies have been started: its items grouped by target, and each target's copy."""

    column: _Column
    groups: dict[str, list[_Item]]
    copies: dict[str, Future[_Copied]]


@dataclass(slots=True)
class _Copied:
    size: int
    sha256: str
    reused: bool


class StorageMigrator:
    """Moves the objects a slot's rows reference into the slot's current location, and rewrites the rows.

    Args:
        manager: The manager whose slots are migrated; its policies list the previous locations.
        engine: The database holding the rows (a SQLAlchemy :class:`~sqlalchemy.engine.Engine`).
        columns: The ``(model, attribute)`` pairs whose rows are moved: a
            :class:`~granite_storage.StoredObjectRefType` attribute (``"_file_ref"``) or a
            :class:`~granite_storage.StoredContent` field's name. Rows of other slots are left alone,
            so one list can serve every slot.
        references: Callables returning further references (as the garbage collector's
            ``iter_references``) that the migrator cannot rewrite: with ``delete_source`` a source
            one of them still points at is kept. Give every place that may reference the slot.
        workers: Objects copied at once (see :data:`LARGE_OBJECT_SIZE` for large ones).
        batch_size: Rows per batch: read, copied and rewritten (one transaction) together.
        sample_size: How many failures and changed rows a report lists.
        progress: Called with a :class:`MigrationProgress` after each batch.

    Each copy streams (memory stays flat whatever the object's size) and is checked for size and
    sha256 against the reference before any row changes. A copy is existing data: the slot's
    ``max_size`` does not apply to it.

    Raises:
        TypeError: ``manager`` is not a :class:`~granite_storage.StorageManager`, or a source is
            not callable.
        ConfigurationError: a pair is not a reference column of its model.
        ValueError: ``workers``, ``batch_size`` or ``sample_size`` is out of range.
    """

    def __init__(
        self,
        *,
        manager: StorageManager,
        engine: sqlalchemy.Engine,
        columns: Sequence[tuple[type[Any], str]],
        references: Sequence[ReferenceSource] = (),
        workers: int = DEFAULT_WORKERS,
        batch_size: int = DEFAULT_MIGRATION_BATCH_SIZE,
        sample_size: int = 100,
        progress: Callable[[MigrationProgress], None] | None = None,
    ) -> None:
        from granite_storage.orm.queries import reference_column

        if not isinstance(manager, StorageManager):
            raise TypeError(f"manager must be a StorageManager, got {type(manager).__name__}")
        for name, value, least in (("workers", workers, 1), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 0:
            raise ValueError(f"sample_size must be a non-negative integer, got {sample_size!r}")
        if not all(callable(source) for source in references):
            raise TypeError("references must be callables returning references")
        self.manager = manager
        self.engine = engine
        self._columns = []
        for model, attribute in columns:
            column = reference_column(model, attribute)
            table = column.table
            self._columns.append(_Column(model.__name__, table, column, tuple(table.primary_key.columns)))
        self.references: tuple[ReferenceSource, ...] = tuple(references)
        self.workers = workers
        self.batch_size = batch_size
        self.sample_size = sample_size
        self.progress = progress

    def migrate(
        self, storage_key: str, *, dry_run: bool = True, delete_source: bool = False
    ) -> MigrationReport:
        """Move every object the rows reference for ``storage_key`` into the slot's current location.

        Args:
            storage_key: The slot to migrate.
            dry_run: Only report what would be moved (the default); each source is checked to exist.
                Pass ``False`` to copy and rewrite.
            delete_source: Once the rows are rewritten and committed, delete each source object no
                reference points at any more (see the class's ``references``).

        A row that cannot be moved is reported and the run goes on. The run stops, raising, on an
        error that is not one row's (a backend that cannot be reached, a database error); what was
        committed until then stays, and running again resumes.

        Raises:
            ConfigurationError: ``storage_key`` has no policy.
            StorageError: a backend failed other than for one object.
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        delete_source = delete_source and not dry_run
        run = _Run(self, self.manager.policy(storage_key), dry_run=dry_run, delete_source=delete_source)
        run.move_rows()
        if delete_source:
            run.delete_sources()
        return run.report(delete_source=delete_source)


class _Run:
    """The state of one :meth:`StorageMigrator.migrate` run."""

    def __init__(
        self, migrator: StorageMigrator, policy: StoragePolicy, *, dry_run: bool, delete_source: bool
    ) -> None:
        self.migrator = migrator
        self.manager = migrator.manager
        self.policy = policy
        self.location = policy.location
        self.target = self.manager.backend(policy.backend_key)
        self.dry_run = dry_run
        self.started_at = datetime.now(UTC)
        self.clock = time.perf_counter()
        self.large = threading.Lock()
        #: Keys in the current location: listed once, when the first copy is due, and each copy this
        #: run makes added (so two batches never write one key). A key not in it needs no lookup.
        self.existing: _KeyDigests | None = None
        self.existing_lock = threading.Lock()
        #: Copies started and not yet collected, by target (two batches' copies run at once).
        self.in_flight: dict[str, Future[_Copied]] = {}
        self.rows_total = 0
        self.rows_done = 0
        self.references = self.skipped = self.moved = self.changed = self.failed = 0
        self.copied = self.reused = self.bytes = self.checksums_computed = 0
        self.sources_deleted = self.sources_kept = self.delete_failed = 0
        self.failures: list[MigrationFailure] = []
        self.changed_rows: list[str] = []
        #: Sources of rewritten rows, by (backend, location): deleted at the end if unreferenced.
        #: Kept only for ``delete_source``: about 150 bytes a row (a million rows: 150 MB).
        self.delete_source = delete_source
        self.moved_sources: set[tuple[str, str]] = set()

    # -- moving ----------------------------------------------------------------------------------------

    def move_rows(self) -> None:
        """Move the rows batch by batch; a batch's copies run while the next one is read and started.

        The workers then never wait for a batch's rows to be rewritten, or the next one's read.
        """
        self.rows_total = sum(self._count(column) for column in self.migrator._columns)
        with ThreadPoolExecutor(self.migrator.workers, thread_name_prefix="granite-migrate") as pool:
            started: _Batch | None = None
            try:
                for column in self.migrator._columns:
                    for batch in self._batches(column):
                        self.rows_done += len(batch)
                        items = [item for item in map(self._item, batch) if item is not None]
                        if self.dry_run:
                            self._check_sources(pool, items)
                            self._report_progress("rows")
                            continue
                        following = self._start_copies(pool, column, items)
                        if started is not None:
                            self._finish(started)
                        started = following
                if started is not None:
                    self._finish(started)
            except BaseException:
                # Copies not started yet are dropped; running ones finish (a copy is published whole
                # or not at all) and are left for the next run to reuse, or for the garbage collector.
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _count(self, column: _Column) -> int:
        from sqlalchemy import func, select

        with self.migrator.engine.connect() as connection:
            counted = connection.scalar(
                select(func.count()).select_from(column.table).where(column.column.is_not(None))
            )
        return int(counted or 0)

    def _batches(self, column: _Column) -> Iterator[list[tuple[str, tuple[Any, ...], Any]]]:
        """Rows with a reference, ``batch_size`` at a time, in primary-key order (keyset pagination).

        Each batch is read in a transaction of its own, so no read holds locks or a snapshot while
        objects are copied.
        """
        from sqlalchemy import select, tuple_

        keys = column.primary_key
        last: tuple[Any, ...] | None = None
        while True:
            statement = select(*keys, _raw(column))
            statement = statement.where(column.column.is_not(None))
            if last is not None:
                statement = statement.where(
                    keys[0] > last[0] if len(keys) == 1 else tuple_(*keys) > tuple_(*last)
                )
            statement = statement.order_by(*keys).limit(self.migrator.batch_size)
            with self.migrator.engine.connect() as connection:
                rows = connection.execute(statement).all()
            if not rows:
                return
            batch = []
            for row in rows:
                key = tuple(row[: len(keys)])
                batch.append((_row_name(column.name, key), key, row[len(keys)]))
            last = batch[-1][1]
            yield batch

    def _item(self, row: tuple[str, tuple[Any, ...], Any]) -> _Item | None:
        name, key, raw = row
        if raw is None:  # a JSON null (granite-storage 0.1.0 wrote them): no reference
            return None
        try:
            ref = StoredObjectRef.from_dict(raw)
        except InvalidReferenceError as exc:
            if isinstance(raw, Mapping) and raw.get("storage_key") == self.policy.storage_key:
                self.references += 1
                self._fail(name, str(raw.get("location")), exc)
            return None
        if ref.storage_key != self.policy.storage_key:
            return None
        self.references += 1
        try:
            source = self.manager.location_of(ref)
            if source == self.location:
                self.skipped += 1
                return None
            target = migration_key(self.policy, source, ref.location)
        except (InvalidKeyError, InvalidReferenceError) as exc:
            self._fail(name, ref.location, exc)
            return None
        return _Item(name, key, raw, ref, source, target)

    def _check_sources(self, pool: ThreadPoolExecutor, items: list[_Item]) -> None:
        """A dry run: count what would move, and fail the rows whose source is missing."""
        for item, found in zip(
            items, pool.map(lambda item: self.manager.exists(item.ref), items), strict=True
        ):
            if found:
                self.moved += 1
                self.bytes += item.ref.size
            else:
                self._fail(item.row, item.ref.location, ObjectNotFoundError(item.ref.location))

    def _start_copies(self, pool: ThreadPoolExecutor, column: _Column, items: list[_Item]) -> _Batch:
        """Start copying each distinct target of the batch once, in parallel."""
        groups: dict[str, list[_Item]] = {}
        for item in items:
            groups.setdefault(item.target, []).append(item)
        if groups and self.existing is None:
            self.existing = self._list_target()
        copies = {}
        for target, group in groups.items():
            # A target the previous batch is still copying: this copy waits for it, then finds it.
            copies[target] = pool.submit(self._copy_one, group[0], self.in_flight.get(target))
            self.in_flight[target] = copies[target]
        return _Batch(column, groups, copies)

    def _finish(self, batch: _Batch) -> None:
        """Collect the batch's copies, then rewrite the rows of those that match."""
        items = [item for group in batch.groups.values() for item in group]
        self._collect(batch)
        self._rewrite(batch.column, [item for item in items if item.new_ref is not None])
        self._report_progress("rows")

    def _collect(self, batch: _Batch) -> None:
        """Wait for the batch's copies; set ``new_ref`` on the items that now have a verified one."""
        groups = batch.groups
        errors: list[BaseException] = []
        for target, future in batch.copies.items():
            if self.in_flight.get(target) is future:
                del self.in_flight[target]
            group = groups[target]
            try:
                copied = future.result()
            except (ObjectNotFoundError, MigrationMismatchError, InvalidKeyError) as exc:
                for item in group:
                    self._fail(item.row, item.ref.location, exc)
                continue
            except BaseException as exc:  # not one row's: stop once the batch's copies are done
                errors.append(exc)
                continue
            if copied.reused:
                self.reused += 1
            else:
                self.copied += 1
                self.bytes += copied.size
            for item in group:
                expected = item.ref.sha256
                if item.ref.size != copied.size or (
                    expected is not None and not hmac.compare_digest(expected, copied.sha256)
                ):
                    self._fail(
                        item.row,
                        item.ref.location,
                        MigrationMismatchError(f"{target!r} holds other content than this reference"),
                    )
                    continue
                if expected is None:
                    logger.info(
                        "%s: %r had no usable checksum; computed %s",
                        item.row,
                        item.ref.checksum,
                        copied.sha256,
                    )
                item.new_ref = StoredObjectRef(
                    storage_key=item.ref.storage_key,
                    backend=self.policy.backend_key,
                    location=target,
                    size=copied.size,
                    checksum=f"sha256:{copied.sha256}",
                    content_type=item.ref.content_type,
                    original_filename=item.ref.original_filename,
                    created_at=item.ref.created_at,
                    extra=item.ref.extra,
                )
        if errors:
            raise errors[0]

    def _copy_one(self, item: _Item, earlier: Future[_Copied] | None = None) -> _Copied:
        if earlier is not None:
            wait([earlier])  # submitted before this one: running or next in the queue, never after it
        if item.ref.size > LARGE_OBJECT_SIZE:
            with self.large:
                return self._copy_object(item)
        return self._copy_object(item)

    def _list_target(self) -> _KeyDigests:
        """The keys in the current location, streamed into 64-bit digests (8 bytes a key).

        One listing a run (on S3 one request per 1,000 keys) instead of a lookup per copy: only a
        key it names is looked up before copying. Keys are matched case-folded, as the garbage
        collector matches them, so a fold or a digest collision can only cost a lookup, never let a
        copy overwrite an object.
        """
        found = _KeyDigests()
        for info in self.target.list(self.policy.prefix):
            found.add(info.key)
        found.freeze()
        return found

    def _may_exist(self, target: str) -> bool:
        assert self.existing is not None, "_start_copies lists the target first"
        with self.existing_lock:
            return target in self.existing

    def _copy_object(self, item: _Item) -> _Copied:
        """Copy the item's object to its target, or verify the copy already there."""
        ref, target = item.ref, item.target
        if self._may_exist(target):  # listed when the run started, or copied by an earlier batch
            try:
                info = self.target.stat(target)
            except ObjectNotFoundError:
                info = None
            if info is not None:
                return self._verify_existing(item, info.size)
        with self.manager.open(ref) as source:
            # A source longer than its reference stops the copy at once, and nothing is published.
            reader = HashingReader(SizeLimitedStream(source, ref.size))
            try:
                self.target.put(
                    target, reader, content_type=_content_type(ref), original_filename=ref.original_filename
                )
            except ContentTooLargeError as exc:
                raise MigrationMismatchError(
                    f"{ref.location!r} is larger than its reference says ({ref.size} bytes); nothing copied"
                ) from exc
            unread = reader.read(1)
        assert self.existing is not None
        with self.existing_lock:  # published: a later batch with this target looks it up
            self.existing.insert(target)
        digest = reader.checksum.removeprefix("sha256:")
        if (
            unread
            or reader.size != ref.size
            or (ref.sha256 is not None and not hmac.compare_digest(digest, ref.sha256))
        ):
            self.target.delete(target)
            raise MigrationMismatchError(
                f"the copy of {ref.location!r} ({reader.size} bytes, sha256 {digest}) does not match its "
                f"reference ({ref.size} bytes, checksum {ref.checksum!r}); the copy was deleted"
            )
        logger.debug("copied %s to %s (%d bytes)", ref.location, target, reader.size)
        return _Copied(reader.size, digest, reused=False)

    def _verify_existing(self, item: _Item, size: int) -> _Copied:
        """An object is at the target already: an earlier run's copy, to reuse if it is this content."""
        ref, target = item.ref, item.target
        if size != ref.size:
            raise MigrationMismatchError(
                f"{target!r} already holds another object ({size} bytes, the reference says {ref.size})"
            )
        digest = _sha256(self.target.open(target))
        # Without a usable checksum in the reference, the source itself says what the content is.
        expected = ref.sha256 if ref.sha256 is not None else _sha256(self.manager.open(ref))
        if not hmac.compare_digest(digest, expected):
            raise MigrationMismatchError(f"{target!r} already holds other content than {ref.location!r}")
        return _Copied(size, digest, reused=True)

    def _rewrite(self, column: _Column, items: list[_Item]) -> None:
        """Point the items' rows at their copies, each only if it still holds the reference read."""
        if not items:
            return
        from sqlalchemy import bindparam, update

        keys = column.primary_key
        where = [key == bindparam(f"_key_{index}") for index, key in enumerate(keys)]
        statement = (
            update(column.table)
            .where(*where)
            .values({column.column.key: bindparam("_new_ref", type_=column.column.type)})
        )
        wanted = [item.key for item in items]
        with self.migrator.engine.connect() as connection, connection.begin():
            current = self._lock_rows(connection, column, wanted)
            rewrite = []
            for item in items:
                if item.key in current and current[item.key] == item.raw:
                    rewrite.append(item)
                else:
                    self.changed += 1
                    if len(self.changed_rows) < self.migrator.sample_size:
                        self.changed_rows.append(item.row)
            if rewrite:
                connection.execute(
                    statement,
                    [
                        {
                            **{f"_key_{index}": value for index, value in enumerate(item.key)},
                            "_new_ref": item.new_ref,
                        }
                        for item in rewrite
                    ],
                )
        # Committed: only now may a source be deleted.
        for item in rewrite:
            self.moved += 1
            if item.ref.sha256 is None:
                self.checksums_computed += 1
            if self.delete_source:
                self.moved_sources.add((item.source.backend, item.ref.location))

    def _lock_rows(
        self, connection: Connection, column: _Column, wanted: list[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], Any]:
        """Lock the rows (``FOR UPDATE``; on SQLite, the database's write lock) and read their references."""
        from sqlalchemy import false, select, tuple_, update

        keys = column.primary_key
        if connection.dialect.name == "sqlite":
            # An UPDATE that changes nothing takes SQLite's write lock, held until the commit: no
            # writer can change a row between this read and the rewrite.
            connection.execute(update(column.table).where(false()).values({column.column.key: column.column}))
        condition = keys[0].in_([key[0] for key in wanted]) if len(keys) == 1 else tuple_(*keys).in_(wanted)
        statement = select(*keys, _raw(column)).where(condition)
        if connection.dialect.name != "sqlite":
            statement = statement.with_for_update()
        return {tuple(row[: len(keys)]): row[len(keys)] for row in connection.execute(statement)}

    # -- deleting sources ------------------------------------------------------------------------------

    def delete_sources(self) -> None:
        """Delete the sources of rewritten rows that no reference points at any more."""
        if not self.moved_sources:
            return
        still, unreadable = self._referenced_sources()
        for backend, location in sorted(self.moved_sources):
            if (backend, location) in still or location in unreadable:
                self.sources_kept += 1
                continue
            # Through the manager, which checks the location once more, as any delete does.
            ref = StoredObjectRef(self.policy.storage_key, backend, location, 0)
            try:
                self.manager.delete(ref)
            except Exception as exc:  # one object; the next may go
                logger.warning("could not delete the source %r: %s", location, exc)
                self.delete_failed += 1
                if len(self.failures) < self.migrator.sample_size:
                    self.failures.append(
                        MigrationFailure("(source)", location, f"{type(exc).__name__}: {exc}")
                    )
                continue
            self.sources_deleted += 1
        self._report_progress("delete")

    def _referenced_sources(self) -> tuple[set[tuple[str, str]], set[str]]:
        """What still points outside the current location, read after every rewrite was committed.

        The (backend, location) of every reference of every column and source, and the bare
        locations of the slot's rows that do not load (whatever backend they may name).
        """
        found: set[tuple[str, str]] = set()
        unreadable: set[str] = set()

        def add(ref: StoredObjectRef) -> None:
            if ref.storage_key != self.policy.storage_key:
                return
            try:
                location = self.manager.location_of(ref)
            except StorageError:
                return  # an unusable reference protects nothing it could name
            if location != self.location:
                found.add((location.backend, ref.location))

        for column in self.migrator._columns:
            for batch in self._batches(column):
                for _, _, raw in batch:
                    try:
                        add(StoredObjectRef.from_dict(raw))
                    except InvalidReferenceError:
                        # A row that does not load: keep whatever its location may name, in any backend.
                        if isinstance(raw, Mapping) and isinstance(raw.get("location"), str):
                            unreadable.add(raw["location"])
        for source in self.migrator.references:
            for ref in source():
                if not isinstance(ref, StoredObjectRef):
                    raise TypeError(f"a reference source yielded {type(ref).__name__}, not a StoredObjectRef")
                add(ref)
        return found, unreadable

    # -- reporting -------------------------------------------------------------------------------------

    def _fail(self, row: str, location: str, error: BaseException) -> None:
        self.failed += 1
        logger.warning("%s: could not move %r: %s", row, location, error)
        if len(self.failures) < self.migrator.sample_size:
            self.failures.append(MigrationFailure(row, location, f"{type(error).__name__}: {error}"))

    def _report_progress(self, phase: str) -> None:
        if self.migrator.progress is not None:
            self.migrator.progress(
                MigrationProgress(phase, self.rows_total, self.rows_done, self.moved, self.failed, self.bytes)
            )

    def report(self, *, delete_source: bool) -> MigrationReport:
        return MigrationReport(
            storage_key=self.policy.storage_key,
            backend=self.location.backend,
            prefix=self.location.prefix or "",
            dry_run=self.dry_run,
            delete_source=delete_source,
            started_at=self.started_at,
            duration=timedelta(seconds=time.perf_counter() - self.clock),
            references=self.references,
            skipped=self.skipped,
            moved=self.moved,
            changed=self.changed,
            failed=self.failed,
            copied=self.copied,
            reused=self.reused,
            bytes_copied=self.bytes,
            checksums_computed=self.checksums_computed,
            sources_deleted=self.sources_deleted,
            sources_kept=self.sources_kept,
            delete_failed=self.delete_failed,
            failures=tuple(self.failures),
            changed_rows=tuple(self.changed_rows),
        )


def _raw(column: _Column) -> Any:
    """The reference column read as plain JSON (a dict), not as a reference: any row loads."""
    from sqlalchemy import type_coerce

    from granite_storage.orm.types import portable_storage_ref_type

    return type_coerce(column.column, portable_storage_ref_type())


def _row_name(model: str, key: tuple[Any, ...]) -> str:
    return f"{model}({', '.join(map(str, key))})"


def _content_type(ref: StoredObjectRef) -> str | None:
    if ref.content_type is None:
        return None
    try:
        return check_content_type(ref.content_type)
    except InvalidMetadataError:  # edited in the database: not worth failing the copy for
        return None


def _sha256(stream: Any) -> str:
    digest = hashlib.sha256()
    with stream:
        while chunk := stream.read(DEFAULT_CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()
