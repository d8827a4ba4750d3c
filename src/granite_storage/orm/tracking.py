"""Session tracking: storage that follows the database transaction, SAVEPOINTs included.

Objects are stored before the row that points at them is committed, so a transaction that rolls back
would leave them behind. :func:`track_storage` installs session event listeners that make storage
follow the transaction exactly:

* an object stored while a transaction or SAVEPOINT is open belongs to it: if that transaction
  certainly rolls back, the object is deleted; if it commits, the object is handed to the enclosing
  transaction, and kept for good when the outermost transaction commits;
* only a certain rollback deletes: ``rollback()``, a failed flush, an exception or ``close()`` before
  the COMMIT was sent. When the COMMIT itself fails (the connection dropped, and the database may have
  committed before it did), the outcome is unknown: nothing the transaction stored or released is
  deleted, a warning names the objects, and :class:`~granite_storage.StorageGarbageCollector`
  decides later;
* ownership follows the instance. An object stored for an instance in no session belongs to the
  instance until it joins a tracked session (``add()``); then that session's transaction decides. An
  instance that joins another session, or a reference copied into an instance of another session
  (``merge()``, an assignment), while its object is undecided makes that transaction an owner too:
  the object is deleted only once every owner has certainly rolled back, and kept once one commits;
* an instance still pointing at an object that a rollback deleted (SQLAlchemy keeps the attributes
  of a row that a rollback made transient again, and of an instance expunged or detached before the
  rollback) cannot write that reference: flushing it raises
  :class:`~granite_storage.ObjectNotFoundError` before the row is written;
* an object the database stops pointing at (a reference replaced or cleared, its row deleted) is
  deleted after the outermost commit, never before, when its policy's ``delete_replaced`` (see
  :class:`~granite_storage.StoragePolicy`) or the call asks for it, no row the session wrote in that
  transaction points at it any more, and no other open transaction holds it; a rollback keeps it;
* a failure while cleaning up never raises out of ``commit()`` or ``rollback()``: it is logged and
  reported through :func:`~granite_storage.hookspecs.granite_storage_cleanup_failed`, and the object
  stays in storage.

A session joined to a transaction it does not own (bound to a ``Connection`` whose transaction is
already open, the usual test-fixture pattern) cannot commit for real: its commit only ends a
SAVEPOINT. Its decisions then wait for that connection's own ``COMMIT`` or ``ROLLBACK``; objects
released there are deleted once that COMMIT is known to have succeeded (the connection begins again
or goes back to its pool), and kept if it fails.

Sessions without tracking keep the seed's behaviour: nothing is deleted implicitly.

Only changes the session sees are followed: the model API, assignments to a
:class:`~granite_storage.StoredObjectRefType` attribute, and deleted rows whose reference was
loaded (``session.delete()`` loads it; a delete-orphan cascade of an unloaded row does not). A bulk
``UPDATE``/``DELETE`` statement is invisible, and a reference shared with a row the transaction did
not touch is assumed not to exist: enable ``delete_replaced`` only for slots whose objects belong to
one row each. Objects left behind are never deleted by tracking;
:class:`~granite_storage.StorageGarbageCollector` is the tool for them.

How a COMMIT is seen: SQLAlchemy's ``commit`` connection event fires just before the COMMIT is sent,
and the session's ``after_commit`` only once it succeeded. A root transaction that saw the first
without the second failed during its COMMIT. To see it, tracking listens on each engine its sessions
use (``begin``, ``commit``, ``rollback`` and their two-phase and SAVEPOINT forms, ``handle_error``,
and the pool's ``checkin``), once per engine.

Cleanup runs inside ``commit()`` and ``rollback()``; with an ``AsyncSession`` it runs on the event
loop's thread, one backend call per object.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, Engine, event, inspect, select
from sqlalchemy.orm import (
    NO_VALUE,
    InstanceState,
    Mapper,
    Session,
    SessionTransaction,
    object_session,
    sessionmaker,
)

from granite_storage.errors import ObjectNotFoundError, StorageError
from granite_storage.manager import StorageManager
from granite_storage.orm.types import StoredObjectRefType
from granite_storage.refs import StoredObjectRef

if TYPE_CHECKING:
    # Imported for the signatures only: sqlalchemy.ext.asyncio needs greenlet, which a synchronous
    # application need not install.
    from sqlalchemy.engine import ExceptionContext
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["register_stored_object", "track_storage"]

logger = logging.getLogger(__name__)

_STATE_KEY = "granite_storage.tracking"
#: In a pooled connection's ``info``: what a COMMIT that tracking did not issue decided, unconfirmed.
_UNCONFIRMED_KEY = "granite_storage.tracking.unconfirmed"

#: Targets :func:`track_storage` was installed on: sessions, and Session classes (a sessionmaker's own).
_TRACKED: weakref.WeakSet[object] = weakref.WeakSet()

_ObjectId = tuple[str, str, str]  # (storage_key, backend, location): one stored object
_Reason = Literal["rollback", "replaced"]


def _object_id(ref: StoredObjectRef) -> _ObjectId:
    return (ref.storage_key, ref.backend, ref.location)


# -- who may still decide an object's fate ----------------------------------------------------------


@dataclass(eq=False)
class _Stake:
    """An object stored for a transaction that has not decided yet, and who may still decide it.

    ``holders`` are what could still write a row pointing at the object: the open transactions and
    SAVEPOINTs it was stored in or handed to (their :class:`_Pending`), and the instances in no session
    that hold it (their ``InstanceState``). A certain rollback of a holder removes it; the object is
    deleted when no holder is left. A commit, or a COMMIT whose outcome is unknown, decides it for
    good: kept. ``instances`` are the instances whose reference attribute was set to the object.
    """

    manager: StorageManager
    ref: StoredObjectRef
    holders: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    instances: weakref.WeakSet[InstanceState[Any]] = field(default_factory=weakref.WeakSet)
    decided: bool = False

    def held_by_others(self, holder: object) -> bool:
        """Whether anything but ``holder`` could still write a row pointing at the object."""
        return len(self.holders) > (1 if holder in self.holders else 0)


#: The undecided objects, by id: a stake lives as long as one of its holders.
_STAKES: weakref.WeakValueDictionary[_ObjectId, _Stake] = weakref.WeakValueDictionary()
#: What instances in no session hold, and what a rollback deleted under instances that still point at it.
_HELD: weakref.WeakKeyDictionary[InstanceState[Any], dict[_ObjectId, _Stake]] = weakref.WeakKeyDictionary()
_DELETED: weakref.WeakKeyDictionary[InstanceState[Any], set[_ObjectId]] = weakref.WeakKeyDictionary()


def _undecided(ref: StoredObjectRef) -> _Stake | None:
    stake = _STAKES.get(_object_id(ref))
    return None if stake is None or stake.decided else stake


def _stake(manager: StorageManager, ref: StoredObjectRef) -> _Stake:
    """The undecided stake in ``ref``'s object, new if it has none."""
    stake = _undecided(ref)
    if stake is None:
        stake = _STAKES[_object_id(ref)] = _Stake(manager, ref)
    return stake


def _decide(stake: _Stake) -> None:
    """The object is kept or deleted for good: no holder acts on it any more."""
    stake.decided = True
    object_id = _object_id(stake.ref)
    if _STAKES.get(object_id) is stake:
        del _STAKES[object_id]


def _hold_by_instance(instance_state: InstanceState[Any], stake: _Stake) -> None:
    _HELD.setdefault(instance_state, {})[_object_id(stake.ref)] = stake
    stake.holders.add(instance_state)


@dataclass
class _Release:
    """An object the database may have stopped pointing at, and whether to delete it then."""

    manager: StorageManager
    ref: StoredObjectRef
    delete: bool | None  # None: as its policy says


@dataclass(eq=False)
class _Pending:
    """What happened to storage inside one transaction or SAVEPOINT that has not ended yet.

    ``stored`` holds the undecided objects it has a stake in: stored in it, or handed to it by an
    instance or a reference that joined its session. ``rows`` counts, per object, how many more rows
    point at it than before the transaction: each flushed assignment adds one, each flushed
    replacement or row deletion takes one away.
    """

    stored: dict[_ObjectId, _Stake] = field(default_factory=dict)
    released: dict[_ObjectId, _Release] = field(default_factory=dict)
    rows: Counter[_ObjectId] = field(default_factory=Counter)

    def hold(self, stake: _Stake) -> None:
        """Take a stake in an undecided object."""
        if not stake.decided:
            self.stored[_object_id(stake.ref)] = stake
            stake.holders.add(self)

    def absorb(self, child: _Pending) -> None:
        """Take over what a committed SAVEPOINT did; its decisions are the later ones."""
        for stake in child.stored.values():
            stake.holders.discard(child)
            self.hold(stake)
        self.released.update(child.released)
        self.rows.update(child.rows)

    def unreferenced(self) -> Iterator[_Release]:
        """The released objects that no row points at once this (outermost) transaction commits.

        An object stored in this transaction started with no row; any other started with one, the
        row it was released from.
        """
        for object_id, release in self.released.items():
            rows_before = 0 if object_id in self.stored else 1
            if rows_before + self.rows[object_id] <= 0:
                yield release


@dataclass(eq=False)
class _SessionState:
    """One tracked session's bookkeeping, kept in ``session.info``.

    ``connections`` are those the root transaction began on; ``commit_sent`` says whether a COMMIT
    left for one of them (SQLAlchemy's ``commit`` event fires just before it is sent).
    """

    pending: dict[SessionTransaction, _Pending] = field(default_factory=dict)
    committed: set[SessionTransaction] = field(default_factory=set)
    connections: set[Connection] = field(default_factory=set)
    commit_sent: bool = False


#: The tracked session whose root transaction each connection belongs to, while it is open.
_COMMITTERS: weakref.WeakKeyDictionary[Connection, _SessionState] = weakref.WeakKeyDictionary()


def track_storage(
    target: Session | type[Session] | sessionmaker[Any] | AsyncSession | async_sessionmaker[Any],
) -> None:
    """Make storage follow the transactions of the sessions ``target`` makes (opt-in).

    ``target`` is a ``sessionmaker`` or ``async_sessionmaker`` (every session it makes), a
    ``Session`` subclass (every instance), or one ``Session`` or ``AsyncSession``. Installing
    tracking twice on one target is harmless. See the module documentation for what it guarantees.
    Installed on one session whose transaction is already under way, it follows that transaction
    too, except that a failure of its COMMIT is taken for a rollback: tracking learns where a
    COMMIT goes when a transaction begins.

    For an ``async_sessionmaker`` whose sessions would use the plain ``Session`` class, a subclass is
    configured as its ``sync_session_class``, so that tracking does not reach every ``Session`` of
    the process.

    Raises:
        TypeError: ``target`` is none of the above.
    """
    asyncio_ext = sys.modules.get("sqlalchemy.ext.asyncio")  # imported if target is from there
    if asyncio_ext is not None and isinstance(target, asyncio_ext.async_sessionmaker):
        sync_class = target.kw.get("sync_session_class", Session)
        if sync_class is Session:
            sync_class = type("TrackedSession", (Session,), {"__module__": __name__})
            target.configure(sync_session_class=sync_class)
        target = sync_class
    elif asyncio_ext is not None and isinstance(target, asyncio_ext.AsyncSession):
        target = target.sync_session
    elif isinstance(target, sessionmaker):
        target = target.class_  # each sessionmaker makes sessions of a Session subclass of its own
    if not isinstance(target, Session) and not (isinstance(target, type) and issubclass(target, Session)):
        raise TypeError(
            "track_storage() takes a sessionmaker, async_sessionmaker, Session subclass, Session or "
            f"AsyncSession, got {target!r}"
        )
    # Our own record rather than event.contains(), which keys on id() and can mistake a new class
    # for a collected one that had the same address.
    if target in _TRACKED:
        return
    for name, listener in _LISTENERS:
        event.listen(target, name, listener)
    _TRACKED.add(target)


def register_stored_object(session: Session, ref: StoredObjectRef, *, manager: StorageManager) -> bool:
    """Tie an object stored with ``manager`` to the session's current transaction or SAVEPOINT.

    The model API does this itself; call it for objects stored through the manager directly whose
    references you assign to rows yourself. If the transaction (or an enclosing one) certainly rolls
    back, the object is deleted. Returns whether the session is tracked (if not, nothing is done).
    """
    state = _state(session)
    if state is None:
        return False
    _pending(session, state).hold(_stake(manager, ref))
    return True


def is_tracked(instance: object) -> bool:
    """Whether ``instance`` belongs to a session with storage tracking."""
    session = object_session(instance)
    return session is not None and _state(session) is not None


def record_stored(instance: object, manager: StorageManager, ref: StoredObjectRef) -> None:
    """The model API stored ``ref`` for ``instance``: tie it to the instance's session, if tracked.

    An instance in no session holds the object itself, and hands it to the tracked session it
    joins (``session.add()``); until then nothing decides it, and nothing deletes it.
    """
    session = object_session(instance)
    if session is not None:
        register_stored_object(session, ref, manager=manager)
    else:
        _hold_by_instance(inspect(instance), _stake(manager, ref))


def record_released(
    instance: object, manager: StorageManager, ref: StoredObjectRef, *, delete: bool | None
) -> None:
    """The model API stopped pointing ``instance`` at ``ref``; ``delete`` overrides the policy.

    Raises:
        StorageError: ``delete=True`` was asked for but the instance is not in a tracked session,
            so there is no commit to wait for (deleting now could lose the file on a rollback).
    """
    session = object_session(instance)
    state = _state(session) if session is not None else None
    if session is None or state is None:
        if delete:
            raise_untracked()
        return
    _pending(session, state).released[_object_id(ref)] = _Release(manager, ref, delete)


def raise_untracked() -> None:
    """Refuse ``delete=True`` outside a tracked session."""
    raise StorageError(
        "deleting the previous content after commit needs a session with storage tracking "
        "(granite_storage.orm.track_storage) holding this instance; nothing was changed"
    )


def _state(session: Session) -> _SessionState | None:
    """The session's bookkeeping, or ``None`` if tracking was not installed for it."""
    state = session.info.get(_STATE_KEY)
    if isinstance(state, _SessionState):
        return state
    if session in _TRACKED or any(cls in _TRACKED for cls in type(session).__mro__):
        state = _SessionState()
        session.info[_STATE_KEY] = state
        return state
    return None


def _boundary(session: Session) -> SessionTransaction:
    """The innermost SAVEPOINT, else the root transaction (begun if the session has none yet)."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    return transaction if transaction is not None else session.begin()


def _pending(session: Session, state: _SessionState) -> _Pending:
    return state.pending.setdefault(_boundary(session), _Pending())


def _is_boundary(transaction: SessionTransaction) -> bool:
    """Root transactions and SAVEPOINTs end in COMMIT or ROLLBACK; the ORM's inner markers do not."""
    return transaction.parent is None or transaction.nested


# -- ownership follows the instance and the reference ---------------------------------------------


def _on_ref_set(target: object, value: Any, oldvalue: Any, initiator: Any) -> None:
    """A reference attribute was set (by the model API, an assignment, ``merge()``, a constructor).

    If the object is undecided, whatever now holds ``target`` may write a row pointing at it: the
    tracked session ``target`` is in, or ``target`` itself when it is in no session.
    """
    if not isinstance(value, StoredObjectRef):
        return
    stake = _undecided(value)
    if stake is None:
        return
    instance_state = inspect(target)
    stake.instances.add(instance_state)
    session = object_session(target)
    if session is None:
        _hold_by_instance(instance_state, stake)
    elif (state := _state(session)) is not None:
        _pending(session, state).hold(stake)


def _on_join(session: Session, instance: object) -> None:
    """``instance`` joined a tracked session (``add()``, ``merge()``'s copy, a cascade).

    It hands over what it held in no session, and the session takes a stake in every undecided
    object its references point at: those may still belong to the session it came from.
    """
    state = _state(session)
    if state is None:
        return
    instance_state = inspect(instance)
    stakes = list(_HELD.pop(instance_state, {}).values())
    for key in _ref_attributes(instance_state.mapper):
        ref = instance_state.dict.get(key)
        if isinstance(ref, StoredObjectRef) and (stake := _undecided(ref)) is not None:
            stakes.append(stake)
    if stakes:
        pending = _pending(session, state)
        for stake in stakes:
            stake.holders.discard(instance_state)
            pending.hold(stake)


def _refuse_deleted(mapper: Mapper[Any], connection: Connection, target: object) -> None:
    """Before a row is written: refuse a reference to an object a rollback deleted under it."""
    if not _DELETED:
        return
    instance_state = inspect(target)
    deleted = _DELETED.get(instance_state)
    if not deleted:
        return
    for key in _ref_attributes(mapper):
        ref = instance_state.dict.get(key)
        if isinstance(ref, StoredObjectRef) and _object_id(ref) in deleted:
            raise ObjectNotFoundError(
                f"{type(target).__name__}.{key} points at {ref.location!r} in {ref.backend!r}, which "
                "session tracking deleted when the transaction that stored it rolled back; store the "
                "content again before writing this row (nothing was written)"
            )


def _instrument(mapper: Mapper[Any], class_: type) -> None:
    """Listen to the reference attributes of every mapped class that has some (once configured)."""
    keys = _ref_attributes(mapper)
    if not keys:
        return
    for key in keys:
        attribute = mapper.class_manager[key]  # each mapped class has its own, subclasses too
        if not event.contains(attribute, "set", _on_ref_set):
            event.listen(attribute, "set", _on_ref_set)
    if not event.contains(mapper, "before_insert", _refuse_deleted):
        event.listen(mapper, "before_insert", _refuse_deleted)
        event.listen(mapper, "before_update", _refuse_deleted)


# Installed when the SQLAlchemy integration is imported, which any model with a StoredObjectRefType
# column does before its mapper is configured; without tracking, the listeners find nothing to do.
event.listen(Mapper, "mapper_configured", _instrument)


# -- flushes: which rows point at which objects ---------------------------------------------------


def _on_before_flush(session: Session, flush_context: Any, instances: Iterable[object] | None) -> None:
    state = _state(session)
    if state is None:
        return
    pending = _pending(session, state)
    for instance in [*session.new, *session.dirty]:
        instance_state = inspect(instance)
        for key in _ref_attributes(instance_state.mapper):
            history = instance_state.attrs[key].history
            if not history.added and not history.deleted:
                continue
            removed = list(history.deleted)
            if not removed and instance_state.persistent and _replaced_unloaded(instance_state, key):
                removed = [_value_in_database(session, instance, key)]
            for ref in history.added:
                if isinstance(ref, StoredObjectRef):
                    pending.rows[_object_id(ref)] += 1
            _release(pending, instance, removed)
    for instance in session.deleted:
        for key in _ref_attributes(inspect(instance).mapper):
            getattr(instance, key)  # load it while the row exists; _on_deleted releases it


def _on_deleted(session: Session, instance: object) -> None:
    """A flush deleted ``instance``'s row (``session.delete()`` or a delete-orphan cascade)."""
    state = _state(session)
    if state is None:
        return
    pending = _pending(session, state)
    loaded = inspect(instance).dict
    _release(pending, instance, [loaded.get(key) for key in _ref_attributes(inspect(instance).mapper)])


def _release(pending: _Pending, instance: object, refs: Iterable[Any]) -> None:
    manager = getattr(type(instance), "__storage_manager__", None)
    for ref in refs:
        if not isinstance(ref, StoredObjectRef):
            continue
        object_id = _object_id(ref)
        pending.rows[object_id] -= 1
        if isinstance(manager, StorageManager):  # else nothing could delete it
            pending.released.setdefault(object_id, _Release(manager, ref, None))


def _replaced_unloaded(instance_state: Any, key: str) -> bool:
    """Whether ``key`` was replaced before its value in the database was loaded, so it must be read.

    That is an expired attribute (after a commit or ``expire()``, a ``merge(load=False)``) or a
    deferred one. An attribute that a row was inserted without is unloaded too, but SQLAlchemy
    knows that the row holds NULL there (reading it returns ``None`` without a query), so the
    common flow (add, flush, ``set_content``) costs no query for a value that cannot exist.
    """
    if instance_state.committed_state.get(key, None) is not NO_VALUE:
        return False
    return (
        key in instance_state.expired_attributes
        or key in instance_state.callables
        or instance_state.mapper.attrs[key].deferred
    )


def _value_in_database(session: Session, instance: object, key: str) -> Any:
    mapper = inspect(instance).mapper
    identity = mapper.primary_key_from_instance(instance)
    query = select(getattr(type(instance), key)).where(
        *(column == value for column, value in zip(mapper.primary_key, identity, strict=True))
    )
    with session.no_autoflush:
        return session.execute(query).scalar_one_or_none()


# -- transaction outcomes -------------------------------------------------------------------------


def _on_after_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    """The session's transaction began on ``connection``: watch it for the COMMIT."""
    state = _state(session)
    if state is None:
        return
    _watch(connection.engine)
    state.connections.add(connection)
    _COMMITTERS[connection] = state


def _on_after_commit(session: Session) -> None:
    # Fired for the root transaction once every COMMIT succeeded, and for each SAVEPOINT released,
    # before either is closed.
    state = _state(session)
    if state is None:
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is not None:
        state.committed.add(transaction)


def _on_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    state = _state(session)
    if state is None or not _is_boundary(transaction):
        return
    committed = transaction in state.committed
    state.committed.discard(transaction)
    # A root transaction that sent its COMMIT but never heard it succeed: the COMMIT failed, and the
    # database may have committed all the same. Any other end without a commit is a rollback.
    outcome_unknown = transaction.parent is None and state.commit_sent and not committed
    if transaction.parent is None:
        for connection in state.connections:
            if _COMMITTERS.get(connection) is state:
                del _COMMITTERS[connection]
        state.connections.clear()
        state.commit_sent = False
    pending = state.pending.pop(transaction, None)
    if pending is None:
        return
    if outcome_unknown:
        _warn_unknown(*_settle(pending))
    elif not committed:
        _rolled_back(pending)
    elif transaction.nested:
        parent = transaction.parent
        while parent is not None and not _is_boundary(parent):
            parent = parent.parent
        if parent is not None:
            state.pending.setdefault(parent, _Pending()).absorb(pending)
    elif (outer := _external_transaction(session)) is not None:
        _wait_for(outer, pending)
    else:
        _committed(pending)


def _rolled_back(pending: _Pending) -> None:
    """A certain rollback: what only this transaction held is referenced by nothing, and deleted.

    What it released is referenced again, and kept. An instance that still points at a deleted
    object (a new row SQLAlchemy made transient again) is marked, so that it cannot write it.
    """
    for object_id, stake in pending.stored.items():
        stake.holders.discard(pending)
        if stake.decided or stake.holders:
            continue
        _decide(stake)
        for instance_state in stake.instances:
            _DELETED.setdefault(instance_state, set()).add(object_id)
        _cleanup(stake.manager, stake.ref, reason="rollback")


def _settle(pending: _Pending) -> tuple[list[StoredObjectRef], list[_Release]]:
    """Decide an outermost transaction whose COMMIT was sent: what it stored is kept for good.

    Returns the references kept, and the released objects that no row points at any more: those
    whose deletion the COMMIT's success allows. An object that another open transaction, or an
    instance in no session, may still point a row at is never among them.
    """
    doomed = []
    for release in pending.unreferenced():
        stake = _undecided(release.ref)
        if stake is None or not stake.held_by_others(pending):
            doomed.append(release)
    kept = []
    for stake in pending.stored.values():
        stake.holders.discard(pending)
        if not stake.decided:
            kept.append(stake.ref)
            _decide(stake)
    return kept, doomed


def _committed(pending: _Pending) -> None:
    for release in _settle(pending)[1]:
        _cleanup(release.manager, release.ref, reason="replaced", decision=release.delete)


def _cleanup(
    manager: StorageManager, ref: StoredObjectRef, *, reason: _Reason, decision: bool | None = True
) -> None:
    """Delete after the database has decided: whatever fails is logged and reported, never raised."""
    try:
        if decision is None:
            decision = manager.policy(ref.storage_key).delete_replaced
        if decision:
            manager.delete(ref)
            logger.debug("deleted %s from %r (%s)", ref.location, ref.backend, reason)
    except Exception as exc:
        logger.warning(
            "could not delete %s from %r after a %s; it stays in storage",
            ref.location,
            ref.backend,
            "rollback" if reason == "rollback" else "commit",
            exc_info=exc,
        )
        manager.plugins.report_cleanup_failure(ref, exc, reason)


def _warn_unknown(kept: list[StoredObjectRef], doomed: list[_Release]) -> None:
    """A COMMIT failed after it was sent: name what stays in storage for the garbage collector."""
    replaced = [release.ref for release in doomed if _wants_deletion(release)]
    if not kept and not replaced:
        return
    logger.warning(
        "a COMMIT failed after it was sent, so the database may have committed: session tracking "
        "deletes nothing of that transaction and leaves the garbage collector to decide; kept %d "
        "object(s) it stored: %s; kept %d object(s) it replaced: %s",
        len(kept),
        _names(kept),
        len(replaced),
        _names(replaced),
    )


def _wants_deletion(release: _Release) -> bool:
    if release.delete is not None:
        return release.delete
    try:
        return release.manager.policy(release.ref.storage_key).delete_replaced
    except Exception:  # an unknown slot: nothing would have been deleted
        return False


def _names(refs: list[StoredObjectRef]) -> str:
    return ", ".join(f"{ref.storage_key}:{ref.location}" for ref in refs) or "none"


# -- sessions inside a transaction they do not own ------------------------------------------------


def _external_transaction(session: Session) -> Connection | None:
    """The connection whose transaction is still open after the session "committed", if any.

    A session bound to a ``Connection`` with a transaction already begun (``join_transaction_mode``)
    ends only a SAVEPOINT, or nothing, when it commits.
    """
    bind = session.bind
    if isinstance(bind, Connection) and bind.in_transaction():
        return bind
    return None


@dataclass
class _Waiting:
    """Decisions of committed sessions waiting for their connection's own COMMIT or ROLLBACK."""

    pending: list[_Pending] = field(default_factory=list)
    savepoint_rolled_back: bool = False


@dataclass(eq=False)
class _Unconfirmed:
    """What a connection's own COMMIT decided, until the COMMIT is known to have succeeded.

    SQLAlchemy's ``commit`` event fires before the COMMIT is sent, and no event follows it. Success
    shows when the connection begins its next transaction or goes back to the pool; a failure shows
    as an error on the connection first (``handle_error``), and then nothing is deleted.
    """

    kept: list[StoredObjectRef]
    doomed: list[_Release]
    done: bool = False

    def succeeded(self) -> None:
        if not self.done:
            self.done = True
            for release in self.doomed:
                _cleanup(release.manager, release.ref, reason="replaced", decision=release.delete)

    def failed(self) -> None:
        if not self.done:
            self.done = True
            _warn_unknown(self.kept, self.doomed)


_WAITING: weakref.WeakKeyDictionary[Connection, _Waiting] = weakref.WeakKeyDictionary()
_UNCONFIRMED: weakref.WeakKeyDictionary[Connection, _Unconfirmed] = weakref.WeakKeyDictionary()


def _wait_for(connection: Connection, pending: _Pending) -> None:
    _watch(connection.engine)
    _WAITING.setdefault(connection, _Waiting()).pending.append(pending)


# -- engine events: COMMITs, and the outer transactions sessions join -----------------------------

_WATCHED: weakref.WeakSet[Engine] = weakref.WeakSet()
_WATCH_LOCK = threading.Lock()


def _watch(engine: Engine) -> None:
    """Install the engine listeners once per engine (left in place: with nothing tracked they do nothing)."""
    if engine in _WATCHED:
        return
    with _WATCH_LOCK:
        if engine not in _WATCHED:
            for name, listener in _ENGINE_LISTENERS:
                event.listen(engine, name, listener)
            _WATCHED.add(engine)


def _on_commit(connection: Connection, *args: Any) -> None:
    """A COMMIT (or two-phase COMMIT) is about to be sent on ``connection``."""
    state = _COMMITTERS.get(connection)
    if state is not None:
        state.commit_sent = True
    waiting = _WAITING.pop(connection, None)
    if waiting is None:
        return
    kept: list[StoredObjectRef] = []
    doomed: list[_Release] = []
    for pending in waiting.pending:
        if waiting.savepoint_rolled_back:
            # Some of the rows may have been undone by the connection's own SAVEPOINTs: keep every
            # object, which can leave some behind but never a row without its object.
            pending.released.clear()
        settled = _settle(pending)
        kept += settled[0]
        doomed += settled[1]
    if kept or doomed:
        unconfirmed = _Unconfirmed(kept, doomed)
        _UNCONFIRMED[connection] = unconfirmed
        connection.info[_UNCONFIRMED_KEY] = unconfirmed  # the pool entry's: seen again at check-in


def _on_begin(connection: Connection) -> None:
    """A new transaction begins: the connection's last COMMIT succeeded."""
    unconfirmed = _UNCONFIRMED.pop(connection, None)
    if unconfirmed is not None:
        unconfirmed.succeeded()


def _on_checkin(dbapi_connection: DBAPIConnection | None, record: ConnectionPoolEntry | None) -> None:
    """The connection went back to the pool after its COMMIT, which therefore succeeded."""
    unconfirmed = record.info.pop(_UNCONFIRMED_KEY, None) if record is not None else None
    if isinstance(unconfirmed, _Unconfirmed):
        unconfirmed.succeeded()


def _on_error(context: ExceptionContext) -> None:
    """An error on a connection whose COMMIT is unconfirmed: that COMMIT failed, outcome unknown."""
    connection = context.connection
    unconfirmed = _UNCONFIRMED.pop(connection, None) if connection is not None else None
    if unconfirmed is not None:
        unconfirmed.failed()


def _on_rollback(connection: Connection) -> None:
    """A ROLLBACK is about to be sent: whatever happens to it, the transaction is rolled back."""
    waiting = _WAITING.pop(connection, None)
    for pending in waiting.pending if waiting is not None else ():
        _rolled_back(pending)


def _on_savepoint_rollback(connection: Connection, name: str, context: Any) -> None:
    waiting = _WAITING.get(connection)
    if waiting is not None:
        waiting.savepoint_rolled_back = True


# -- the mapped attributes that hold references ----------------------------------------------------

_REF_ATTRIBUTES: weakref.WeakKeyDictionary[Mapper[Any], tuple[str, ...]] = weakref.WeakKeyDictionary()


def _ref_attributes(mapper: Mapper[Any]) -> tuple[str, ...]:
    """The attributes of ``mapper`` whose column is a :class:`StoredObjectRefType` (cached)."""
    keys = _REF_ATTRIBUTES.get(mapper)
    if keys is None:
        keys = tuple(
            prop.key
            for prop in mapper.column_attrs
            if any(isinstance(column.type, StoredObjectRefType) for column in prop.columns)
        )
        _REF_ATTRIBUTES[mapper] = keys
    return keys


_LISTENERS = (
    ("before_flush", _on_before_flush),
    ("persistent_to_deleted", _on_deleted),
    ("transient_to_pending", _on_join),
    ("detached_to_persistent", _on_join),
    ("after_begin", _on_after_begin),
    ("after_commit", _on_after_commit),
    ("after_transaction_end", _on_transaction_end),
)
_ENGINE_LISTENERS = (
    ("begin", _on_begin),
    ("commit", _on_commit),
    ("commit_twophase", _on_commit),
    ("rollback", _on_rollback),
    ("rollback_savepoint", _on_savepoint_rollback),
    ("handle_error", _on_error),
    ("checkin", _on_checkin),
)
