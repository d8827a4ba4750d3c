"""The garbage collector: deletes the objects of a slot that no database row references.

It is the backstop that keeps storage and database consistent whatever happened in between (a
process killed between upload and commit, a row deleted without its file, a bulk SQL update). One run
of :meth:`StorageGarbageCollector.collect` decides like this:

1. Read every reference the ``iter_references`` callables yield, and keep the locations of those
   that belong to the slot, as 64-bit digests (8 bytes a reference).
2. List the slot's current location (its key prefix in its backend), streaming; with
   ``previous_locations=True``, its previous locations too, except any that overlaps another
   slot's location on the same backend.
3. Keep each object that is referenced, or younger than the grace period (``min_age``); every other
   object is an orphan.
4. Dry run (the default): count and sample the orphans. Otherwise delete them in batches
   (:meth:`StorageBackend.delete_many <granite_storage.StorageBackend.delete_many>`), recording each
   failure and going on.

References are read before the listing starts, so every object the listing finds either was
referenced when the references were read, or is judged by its age: an upload whose row has not
been committed yet is younger than the grace period, and survives.
"""

from __future__ import annotations

import hashlib
import logging
import time
from array import array
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from granite_storage.backend import StorageBackend
from granite_storage.errors import ConfigurationError
from granite_storage.keys import fold_key, is_within_prefix, prefixes_overlap
from granite_storage.manager import StorageManager
from granite_storage.policy import StorageLocation, StoragePolicy
from granite_storage.refs import InvalidStoredObjectRef, StoredObjectRef

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MIN_AGE",
    "DEFAULT_SAMPLE_SIZE",
    "GarbageCollectionFailure",
    "GarbageCollectionProgress",
    "GarbageCollectionReport",
    "ReferenceSource",
    "SkippedLocation",
    "StorageGarbageCollector",
]

logger = logging.getLogger(__name__)

#: The default grace period, one hour. Younger objects are never deleted.
DEFAULT_MIN_AGE = timedelta(hours=1)
#: Keys per :meth:`~granite_storage.StorageBackend.delete_many` call (S3's limit per request).
DEFAULT_BATCH_SIZE = 1000
#: How many orphan keys and failures a report lists at most (the counts are always complete).
DEFAULT_SAMPLE_SIZE = 100
_PROGRESS_EVERY = 1000

#: A callable returning references, e.g.
#: ``lambda: iter_model_storage_refs(session, Document, "_file_ref")``.
ReferenceSource = Callable[[], Iterable[StoredObjectRef]]


def _utc_now() -> datetime:
    """The system clock in UTC: the collector's default clock."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class GarbageCollectionFailure:
    """An orphan that could not be deleted.

    Attributes:
        key: The object's key in the backend.
        error: What went wrong, as text (the exception's type and message).
    """

    key: str
    error: str


@dataclass(frozen=True, slots=True)
class SkippedLocation:
    """A previous location of the slot that a run was asked to collect and did not list.

    Attributes:
        location: The location, its prefix resolved.
        reason: Why: it overlaps another slot's location on the same backend (so its objects may be
            that slot's), or it lies inside a location already listed.
    """

    location: StorageLocation
    reason: str


@dataclass(frozen=True, slots=True)
class GarbageCollectionProgress:
    """How far a run has got; passed to the ``progress`` callback every thousand items or so.

    Attributes:
        phase: ``"references"`` while the references are read, then ``"objects"`` while the slot is
            listed (and orphans deleted).
        references: References read so far, of every slot.
        scanned: Objects listed so far.
        orphaned: Orphans found so far.
        deleted: Orphans deleted so far (always 0 in a dry run).
    """

    phase: Literal["references", "objects"]
    references: int
    scanned: int
    orphaned: int
    deleted: int


@dataclass(frozen=True, slots=True)
class GarbageCollectionReport:
    """What one run of :meth:`StorageGarbageCollector.collect` found and did.

    Every object listed is counted once: ``scanned == referenced + skipped_too_young + orphaned``.

    Attributes:
        storage_key: The slot collected.
        backend: The name of the slot's backend (of its current location).
        prefix: The key prefix of its current location (the slot's namespace in its backend).
        dry_run: Whether this was a dry run (nothing deleted).
        min_age (datetime.timedelta): The grace period applied: younger objects were kept whatever
            else held.
        started_at: When the run started (UTC); the age of objects is measured from it.
        duration (datetime.timedelta): How long the run took.
        references: References read that belong to this slot (their location protects the object).
        ignored_references: References of other slots, or pointing outside the locations listed:
            they neither protect nor condemn anything here.
        scanned: Objects listed, in every location listed.
        referenced: Objects kept because a reference points at them.
        skipped_too_young: Unreferenced objects kept because they are younger than ``min_age``.
        orphaned: Unreferenced objects older than ``min_age``: deleted, or in a dry run, what would be.
        deleted: Orphans actually deleted (0 in a dry run).
        failed: Orphans whose deletion failed (they are still stored).
        orphan_sample: The first orphan keys found, at most ``sample_size`` of them.
        failures: The first failures, at most ``sample_size`` of them.
        incomplete_uploads_removed: How many leftovers of interrupted uploads were removed, or
            ``None`` if that was not asked for.
        invalid_references: Rows that could not be loaded (an
            :class:`~granite_storage.InvalidStoredObjectRef`, e.g. a ``created_at`` out of range).
            Whatever slot they name, such a row's location, where it lies in a location listed,
            keeps its object: the collector errs on keeping.
        locations: The locations listed, the current one first.
        skipped_locations: Previous locations asked for but not listed, with why.
    """

    storage_key: str
    backend: str
    prefix: str
    dry_run: bool
    min_age: timedelta
    started_at: datetime
    duration: timedelta
    references: int
    ignored_references: int
    scanned: int
    referenced: int
    skipped_too_young: int
    orphaned: int
    deleted: int
    failed: int
    orphan_sample: tuple[str, ...]
    failures: tuple[GarbageCollectionFailure, ...]
    incomplete_uploads_removed: int | None = None
    invalid_references: int = 0
    locations: tuple[StorageLocation, ...] = ()
    skipped_locations: tuple[SkippedLocation, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every deletion attempted succeeded (a dry run attempts none)."""
        return self.failed == 0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-serialisable values (durations in seconds, times in ISO 8601)."""
        return {
            "storage_key": self.storage_key,
            "backend": self.backend,
            "prefix": self.prefix,
            "dry_run": self.dry_run,
            "min_age_seconds": self.min_age.total_seconds(),
            "started_at": self.started_at.isoformat(),
            "duration_seconds": self.duration.total_seconds(),
            "references": self.references,
            "ignored_references": self.ignored_references,
            "scanned": self.scanned,
            "referenced": self.referenced,
            "skipped_too_young": self.skipped_too_young,
            "orphaned": self.orphaned,
            "deleted": self.deleted,
            "failed": self.failed,
            "orphan_sample": list(self.orphan_sample),
            "failures": [{"key": failure.key, "error": failure.error} for failure in self.failures],
            "incomplete_uploads_removed": self.incomplete_uploads_removed,
            "invalid_references": self.invalid_references,
            "locations": [{"backend": loc.backend, "prefix": loc.prefix} for loc in self.locations],
            "skipped_locations": [
                {"backend": skip.location.backend, "prefix": skip.location.prefix, "reason": skip.reason}
                for skip in self.skipped_locations
            ],
        }


class StorageGarbageCollector:
    """Finds, and on request deletes, the objects of a slot that no reference points at.

    Args:
        manager: The manager whose slots are collected.
        iter_references: One callable, or several, each returning an iterable of references, e.g.
            ``lambda: iter_model_storage_refs(session, Document, "_file_ref")``. Each is called once per
            run and consumed to the end before any object is listed. Give every model and field that
            may reference the slot; references of other slots are ignored, so one list of sources can
            serve every slot. Several sources must read one snapshot of the database, in a
            transaction begun for the run (``REPEATABLE READ``): read in separate ones, a reference
            moved from one source to another meanwhile can be in neither.
        min_age (datetime.timedelta): The grace period: an object younger than this is never
            deleted, so that an upload whose transaction has not committed yet survives a concurrent
            run. Choose it longer than the longest time from the start of an upload to its commit
            (Amazon S3 dates a multipart upload's object from its initiation), plus the clock skew
            between this machine and the storage. ``timedelta(0)`` turns it off.
        batch_size: Keys per batch delete.
        sample_size: How many orphan keys and failures a report lists.
        progress: Called with a :class:`GarbageCollectionProgress` as the run advances.
        clock: Returns the current time as a timezone-aware :class:`~datetime.datetime`; by default
            the system clock in UTC. A run calls it once, when it starts: the result is the report's
            ``started_at``, and objects last modified before ``started_at - min_age`` are old enough
            to be orphans. A test passes a clock set ahead to age objects on any backend (an S3
            object's ``LastModified`` cannot be set back); an application has no reason to. It does not
            age incomplete uploads: :meth:`~granite_storage.StorageBackend.remove_incomplete_uploads`
            measures those on the backend's own clock.

    Which references protect an object of slot ``S`` in a location listed (prefix ``P``): those
    whose ``storage_key`` is ``S`` and whose location lies inside ``P``, whatever backend name they
    carry (a backend renamed in the configuration must not make its files look orphaned); for the
    same reason, those of a ``storage_key`` the manager no longer knows, if their location lies
    inside ``P``; and every row that could not be loaded whose location lies inside ``P``. A
    reference of another configured slot neither protects nor condemns anything in ``S``'s current
    location; in a previous location, where slots may once have shared a prefix, it protects.
    The 0.1.0 area that a slot without ``key_prefix`` reads is never listed.
    """

    def __init__(
        self,
        manager: StorageManager,
        iter_references: ReferenceSource | Sequence[ReferenceSource],
        *,
        min_age: timedelta = DEFAULT_MIN_AGE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        sample_size: int = DEFAULT_SAMPLE_SIZE,
        progress: Callable[[GarbageCollectionProgress], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not isinstance(manager, StorageManager):
            raise TypeError(f"manager must be a StorageManager, got {type(manager).__name__}")
        sources = [iter_references] if callable(iter_references) else list(iter_references)
        if not sources or not all(callable(source) for source in sources):
            raise TypeError("iter_references must be a callable returning references, or a sequence of them")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 0:
            raise ValueError(f"sample_size must be a non-negative integer, got {sample_size!r}")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning a datetime, got {type(clock).__name__}")
        self.manager = manager
        self.sources: tuple[ReferenceSource, ...] = tuple(sources)
        self.min_age = _check_min_age(min_age)
        self.batch_size = batch_size
        self.sample_size = sample_size
        self.progress = progress
        self.clock = clock

    def collect(
        self,
        storage_key: str,
        *,
        dry_run: bool = True,
        min_age: timedelta | None = None,
        remove_incomplete_uploads: bool = False,
        previous_locations: bool = False,
    ) -> GarbageCollectionReport:
        """Collect the slot ``storage_key``: report its orphans, and unless ``dry_run``, delete them.

        Args:
            storage_key: The slot to collect.
            dry_run: Only report what would be deleted (the default). Pass ``False`` to delete.
            min_age (datetime.timedelta | None): The grace period for this run; by default the
                collector's.
            remove_incomplete_uploads: Also remove what interrupted uploads into this slot left in
                its backend (:meth:`~granite_storage.StorageBackend.remove_incomplete_uploads`
                under the slot's prefix), if older than ``min_age``: an upload into this slot
                running longer than ``min_age`` is aborted. Ignored in a dry run.
            previous_locations: Also list the slot's previous locations and collect their orphans.
                A previous location that overlaps another slot's location (current or previous) on
                the same backend is skipped, and said so in ``report.skipped_locations``: its
                objects may be the other slot's. Referenced objects are kept wherever they live.

        A failure to delete one object is recorded in the report and the run goes on. Anything that
        makes the run's picture unreliable raises before a single object is deleted, or stops the
        run where it is (a listing that fails part-way).

        Raises:
            ConfigurationError: ``storage_key`` has no policy, or its prefix overlaps another slot's
                on the same backend (refused when the manager is built, or when a plugin resolves
                the policy, or when a reference of the other slot shows it); nothing was deleted.
            InvalidReferenceError: a source yielded a row that is not a reference.
            TypeError: a source yielded something other than a :class:`StoredObjectRef`.
            StorageError: listing the slot failed.
            ValueError: ``min_age`` is negative, or the clock returned a naive datetime.
        """
        grace = self.min_age if min_age is None else _check_min_age(min_age)
        # Ages are measured from before the references are read, not from when an object is listed:
        # an object older than the grace period then was stored that long before the database
        # snapshot the references come from, however long reading them takes.
        started_at = _check_now(self.clock())
        clock = time.perf_counter()
        policy = self.manager.policy(storage_key)  # checks the slot does not overlap another one
        backend = self.manager.backend(policy.backend_key)
        run = _Run(self, policy, previous_locations=previous_locations)
        run.read_references()
        for location in run.listed_locations():
            run.scan(location, cutoff=started_at - grace, dry_run=dry_run)
        removed = None
        if remove_incomplete_uploads and not dry_run:
            removed = backend.remove_incomplete_uploads(older_than=grace, prefix=policy.prefix)
        report = GarbageCollectionReport(
            storage_key=storage_key,
            backend=policy.backend_key,
            prefix=policy.prefix,
            dry_run=dry_run,
            min_age=grace,
            started_at=started_at,
            duration=timedelta(seconds=time.perf_counter() - clock),
            references=run.references,
            ignored_references=run.ignored_references,
            scanned=run.scanned,
            referenced=run.referenced,
            skipped_too_young=run.too_young,
            orphaned=run.orphaned,
            deleted=run.deleted,
            failed=run.failed,
            orphan_sample=tuple(run.orphan_sample),
            failures=tuple(run.failures),
            incomplete_uploads_removed=removed,
            invalid_references=run.invalid_references,
            locations=tuple(run.listed),
            skipped_locations=tuple(run.skipped.values()),
        )
        logger.info(
            "garbage collection of %r (%s): %d scanned, %d referenced, %d too young, %d orphaned, "
            "%d deleted, %d failed",
            storage_key,
            "dry run" if dry_run else "deleting",
            report.scanned,
            report.referenced,
            report.skipped_too_young,
            report.orphaned,
            report.deleted,
            report.failed,
        )
        return report


class _Run:
    """The state of one collection: counters, the referenced keys, the pending batch."""

    def __init__(
        self, collector: StorageGarbageCollector, policy: StoragePolicy, *, previous_locations: bool
    ) -> None:
        self.collector = collector
        self.policy = policy
        self.storage_key = policy.storage_key
        self.candidates = policy.locations if previous_locations else (policy.location,)
        self._folded = [_folded_prefix(location) for location in self.candidates]
        self.keys = _KeyDigests()
        self.references = self.ignored_references = self.invalid_references = self.read = 0
        self.scanned = self.referenced = self.too_young = self.orphaned = 0
        self.deleted = self.failed = 0
        self.orphan_sample: list[str] = []
        self.failures: list[GarbageCollectionFailure] = []
        self.listed: list[StorageLocation] = []
        self.skipped: dict[StorageLocation, SkippedLocation] = {}
        self._policies: dict[str, StoragePolicy | None] = {policy.storage_key: policy}
        for other in collector.manager.policies.values():
            if other.storage_key != self.storage_key:
                self._skip_overlaps(other)

    def read_references(self) -> None:
        for source in self.collector.sources:
            for ref in source():
                self.read += 1
                if isinstance(ref, InvalidStoredObjectRef):
                    self.invalid_references += 1
                    if self._within(ref.location):  # err on keeping what it may name
                        self.keys.add(ref.location)
                elif self._protects(ref):
                    self.keys.add(ref.location)
                    self.references += 1
                else:
                    self.ignored_references += 1
                if self.read % _PROGRESS_EVERY == 0:
                    self.report_progress("references")
        self.keys.freeze()
        self.report_progress("references")

    def listed_locations(self) -> list[StorageLocation]:
        """The locations to list, in order; a previous one inside one listed before is skipped."""
        for location in self.candidates:
            if location in self.skipped:
                continue
            covering = next(
                (
                    earlier
                    for earlier in self.listed
                    if earlier.backend == location.backend and _within_location(location, earlier)
                ),
                None,
            )
            if covering is not None:
                reason = f"it lies inside {covering.backend!r} / {covering.prefix!r}, listed already"
                self.skipped[location] = SkippedLocation(location, reason)
                continue
            self.listed.append(location)
        return self.listed

    def scan(self, location: StorageLocation, *, cutoff: datetime, dry_run: bool) -> None:
        backend = self.collector.manager.backend(location.backend)
        prefix = _prefix(location)
        # Keys of a location listed before, which this one contains, were judged there already.
        earlier = [
            _prefix(other)
            for other in self.listed[: self.listed.index(location)]
            if other.backend == location.backend
        ]
        batch: list[str] = []
        for info in backend.list(prefix):
            key = info.key
            if not is_within_prefix(key, prefix):
                # A backend that matches prefixes by characters, not segments, would list "docs2/x"
                # for "docs"; such a key is never this slot's to delete.
                logger.warning("backend %r listed %r under the prefix %r; skipped", backend, key, prefix)
                continue
            if any(is_within_prefix(key, other) for other in earlier):
                continue
            self.scanned += 1
            if key in self.keys:
                self.referenced += 1
            elif info.last_modified > cutoff:  # young, or stamped in the future by a skewed clock
                self.too_young += 1
            else:
                self.orphaned += 1
                if len(self.orphan_sample) < self.collector.sample_size:
                    self.orphan_sample.append(key)
                if not dry_run:
                    batch.append(key)
                    if len(batch) >= self.collector.batch_size:
                        self.delete(backend, batch)
                        batch = []
            if self.scanned % _PROGRESS_EVERY == 0:
                self.report_progress("objects")
        if batch:
            self.delete(backend, batch)
        self.report_progress("objects")

    def delete(self, backend: StorageBackend, batch: list[str]) -> None:
        try:
            failures = backend.delete_many(batch)
        except Exception as exc:  # a backend's batch delete broke its contract: fail the batch
            failures = dict.fromkeys(batch, exc)
        for key, error in failures.items():
            logger.warning("could not delete orphan %r: %s", key, error)
            if len(self.failures) < self.collector.sample_size:
                self.failures.append(GarbageCollectionFailure(key, f"{type(error).__name__}: {error}"))
        self.failed += len(failures)
        self.deleted += len(batch) - len(failures)

    def report_progress(self, phase: Literal["references", "objects"]) -> None:
        if self.collector.progress is not None:
            self.collector.progress(
                GarbageCollectionProgress(phase, self.read, self.scanned, self.orphaned, self.deleted)
            )

    def _within(self, location: str) -> list[int]:
        """The indexes of the candidate locations ``location`` lies in (case-insensitively).

        Keys are compared whatever backend a reference names (see the collector's docstring), so a
        location may lie in several.
        """
        folded = fold_key(location)
        return [index for index, prefix in enumerate(self._folded) if is_within_prefix(folded, prefix)]

    def _protects(self, ref: StoredObjectRef) -> bool:
        """Whether ``ref`` keeps an object of this slot alive (see the collector's docstring)."""
        if not isinstance(ref, StoredObjectRef):
            raise TypeError(f"a reference source yielded {type(ref).__name__}, not a StoredObjectRef")
        # Not validate_key(): an unsafe location can never equal a listed key, and the backend
        # validates every key it is asked to delete (a million calls would cost seconds).
        indexes = self._within(ref.location)  # (folded, as keys are matched: see _KeyDigests)
        if not indexes:
            return False
        if ref.storage_key == self.storage_key:
            return True
        other = self._policy_of(ref.storage_key)
        if other is None:
            return True  # a slot the manager no longer knows: keep what it may still own
        # The manager refuses overlapping static slots, and a plugin's slot that overlaps a static
        # one; two slots a plugin resolves are only found out here, by their rows.
        self._skip_overlaps(other)
        # A row of another slot pointing here: tampered with in the slot's own namespace, where it
        # neither keeps nor condemns; in a previous location, once perhaps shared, it keeps.
        return indexes[-1] > 0

    def _skip_overlaps(self, other: StoragePolicy) -> None:
        """Skip each previous location overlapping a location of ``other``; refuse if the current one does."""
        for index, location in enumerate(self.candidates):
            for theirs in other.locations:
                if theirs.backend != location.backend or not prefixes_overlap(
                    _prefix(theirs), _prefix(location)
                ):
                    continue
                if index == 0:
                    raise ConfigurationError(
                        f"storage keys {self.storage_key!r} and {other.storage_key!r} share backend "
                        f"{location.backend!r} with overlapping key prefixes {location.prefix!r} and "
                        f"{theirs.prefix!r}; collecting one could delete the other's objects, so nothing "
                        "was deleted"
                    )
                if location not in self.skipped:
                    reason = (
                        f"it overlaps {theirs.backend!r} / {theirs.prefix!r}, a location of storage key "
                        f"{other.storage_key!r}"
                    )
                    self.skipped[location] = SkippedLocation(location, reason)
                    logger.warning("not collecting %r / %r: %s", location.backend, location.prefix, reason)

    def _policy_of(self, storage_key: str) -> StoragePolicy | None:
        if storage_key not in self._policies:
            try:
                self._policies[storage_key] = self.collector.manager.policy(storage_key)
            except ConfigurationError:
                logger.warning(
                    "references name the storage key %r, which has no policy; those inside the "
                    "locations of %r keep their objects",
                    storage_key,
                    self.storage_key,
                )
                self._policies[storage_key] = None
        return self._policies[storage_key]


def _prefix(location: StorageLocation) -> str:
    assert location.prefix is not None, "policy.locations resolves every prefix"
    return location.prefix


def _folded_prefix(location: StorageLocation) -> str:
    return fold_key(_prefix(location))


def _within_location(inner: StorageLocation, outer: StorageLocation) -> bool:
    return _prefix(inner) == _prefix(outer) or is_within_prefix(_prefix(inner), _prefix(outer))


class _KeyDigests:
    """A set of keys kept as 64-bit BLAKE2b digests in 256 sorted arrays: 8 bytes a key.

    A Python ``set`` of the keys themselves costs well over 100 bytes a key, a set of the digests as
    ints about 70 (see the garbage-collection chapter of the docs for the measurements); a million
    references fit in 8 MiB here. Digests are bucketed by their top byte so that sorting, done once
    when reading ends, holds only one bucket's worth of Python ints at a time.

    Keys are digested case-folded and NFC-normalised, so that a key listed in another letter case
    or normalisation than its reference (a case-insensitive file system) is still found. A digest
    collision, like such a fold, can only make an unreferenced key look referenced, so the object
    is kept: never the other way round. A false match among a million keys and a million objects
    has odds of about one in 18 million.
    """

    _BUCKETS = 256

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(self._BUCKETS)]

    def add(self, key: str) -> None:
        digest = _digest(key)
        self._buckets[digest >> 56].append(digest)

    def freeze(self) -> None:
        """Sort every bucket; call once, after the last :meth:`add` and before any lookup."""
        for index, bucket in enumerate(self._buckets):
            self._buckets[index] = array("Q", sorted(bucket))

    def insert(self, key: str) -> None:
        """Add ``key`` after :meth:`freeze`, keeping its bucket sorted (a shift of 1/256 of the set)."""
        digest = _digest(key)
        insort(self._buckets[digest >> 56], digest)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        digest = _digest(key)
        bucket = self._buckets[digest >> 56]
        position = bisect_left(bucket, digest)
        return position < len(bucket) and bucket[position] == digest


def _digest(key: str) -> int:
    # Keys are compared as a case- and normalisation-insensitive file system does (macOS, Windows):
    # there, an upload for "alice" lands in the directory "Alice/" created before it, and the
    # listing returns "Alice/". A case-sensitive store can only see an orphan kept this way, one
    # whose key differs from a live one in letter case alone: never a live file condemned.
    folded = fold_key(key)
    return int.from_bytes(hashlib.blake2b(folded.encode("utf-8", "surrogatepass"), digest_size=8).digest())


def _check_now(now: datetime) -> datetime:
    if not isinstance(now, datetime):
        raise TypeError(f"the collector's clock must return a datetime, got {type(now).__name__}")
    if now.utcoffset() is None:
        raise ValueError(f"the collector's clock must return a timezone-aware datetime, got {now!r}")
    return now.astimezone(UTC)


def _check_min_age(min_age: timedelta) -> timedelta:
    if not isinstance(min_age, timedelta):
        raise TypeError(f"min_age must be a timedelta, got {type(min_age).__name__}")
    if min_age < timedelta(0):
        raise ValueError(f"min_age must not be negative, got {min_age}")
    return min_age
