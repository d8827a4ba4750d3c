"""Session tracking: storage that follows the database transaction, SAVEPOINTs included.

Objects are stored before the row that points at them is committed (the flow is *flush, store,
commit*), so a transaction that rolls back would leave them behind. :func:`track_storage` installs
session event listeners that make storage follow the transaction exactly:

* an object stored while a transaction or SAVEPOINT is open belongs to it: if that transaction rolls
  back, the object is deleted; if it commits, the object is handed to the enclosing transaction, and
  kept for good when the outermost transaction commits. An instance whose row another session
  flushes (``merge``, or ``expunge`` then ``add``) takes its object along to that session;
* an object the database stops pointing at (a reference replaced or cleared, its row deleted) is
  deleted after the outermost commit, never before, when its policy's ``delete_replaced`` (see
  :class:`~granite_storage.StoragePolicy`) or the call asks for it, and no row the session wrote in
  that transaction points at it any more; a rollback keeps it;
* a failure while cleaning up never raises out of ``commit()`` or ``rollback()``: it is logged and
  reported through :func:`~granite_storage.hookspecs.granite_storage_cleanup_failed`, and the object
  stays in storage.

A session joined to a transaction it does not own (bound to a ``Connection`` whose transaction is
already open, the usual test-fixture pattern) cannot commit for real: its commit only ends a
SAVEPOINT. Its decisions then wait for that connection's own ``COMMIT`` or ``ROLLBACK``.

Sessions without tracking keep the seed's behaviour: nothing is deleted implicitly.

Only changes the session sees are followed: the model API, assignments to a
:class:`~granite_storage.StoredObjectRefType` attribute, and deleted rows whose reference was
loaded (``session.delete()`` loads it; a delete-orphan cascade of an unloaded row does not). A bulk
``UPDATE``/``DELETE`` statement is invisible, and a reference shared with a row the transaction did
not touch is assumed not to exist: enable ``delete_replaced`` only for slots whose objects belong to
one row each. Objects left behind are never deleted by tracking;
:class:`~granite_storage.StorageGarbageCollector` is the tool for them.

Cleanup runs inside ``commit()`` and ``rollback()``; with an ``AsyncSession`` it runs on the event
loop's thread, one backend call per object.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, event, inspect, select
from sqlalchemy.orm import NO_VALUE, Mapper, Session, SessionTransaction, object_session, sessionmaker

from granite_storage.errors import StorageError
from granite_storage.manager import StorageManager
from granite_storage.orm.types import StoredObjectRefType
from granite_storage.refs import StoredObjectRef

if TYPE_CHECKING:
    # Imported for the signature only: sqlalchemy.ext.asyncio needs greenlet, which a synchronous
    # application need not install.
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["register_stored_object", "track_storage"]

logger = logging.getLogger(__name__)

_STATE_KEY = "granite_storage.tracking"

#: Targets :func:`track_storage` was installed on: sessions, and Session classes (a sessionmaker's own).
_TRACKED: weakref.WeakSet[object] = weakref.WeakSet()

_ObjectId = tuple[str, str, str]  # (storage_key, backend, location): one stored object
_Reason = Literal["rollback", "replaced"]


def _object_id(ref: StoredObjectRef) -> _ObjectId:
    return (ref.storage_key, ref.backend, ref.location)


@dataclass
class _Release:
    """An object the database may have stopped pointing at, and whether to delete it then."""

    manager: StorageManager
    ref: StoredObjectRef
    delete: bool | None  # None: as its policy says


@dataclass
class _Pending:
    """What happened to storage inside one transaction or SAVEPOINT that has not ended yet.

    ``rows`` counts, per object, how many more rows point at it than before the transaction: each
    flushed assignment adds one, each flushed replacement or row deletion takes one away.
    """

    stored: dict[_ObjectId, tuple[StorageManager, StoredObjectRef]] = field(default_factory=dict)
    released: dict[_ObjectId, _Release] = field(default_factory=dict)
    rows: Counter[_ObjectId] = field(default_factory=Counter)

    def absorb(self, child: _Pending) -> None:
        """Take over what a committed SAVEPOINT did; its decisions are the later ones."""
        self.stored.update(child.stored)
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
    """One tracked session's bookkeeping, kept in ``session.info``."""

    pending: dict[SessionTransaction, _Pending] = field(default_factory=dict)
    committed: set[SessionTransaction] = field(default_factory=set)


#: Which session's state holds each object stored in a transaction that has not ended yet.
_OWNERS: weakref.WeakValueDictionary[_ObjectId, _SessionState] = weakref.WeakValueDictionary()


def track_storage(
    target: Session | type[Session] | sessionmaker[Any] | AsyncSession | async_sessionmaker[Any],
) -> None:
    """Make storage follow the transactions of the sessions ``target`` makes (opt-in).

    ``target`` is a ``sessionmaker`` or ``async_sessionmaker`` (every session it makes), a
    ``Session`` subclass (every instance), or one ``Session`` or ``AsyncSession``. Installing
    tracking twice on one target is harmless. See the module documentation for what it guarantees.

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
    references you assign to rows yourself. If the transaction (or an enclosing one) rolls back, the
    object is deleted. Returns whether the session is tracked (if not, nothing is done).
    """
    state = _state(session)
    if state is None:
        return False
    object_id = _object_id(ref)
    _pending(session, state).stored[object_id] = (manager, ref)
    _OWNERS[object_id] = state
    return True


def is_tracked(instance: object) -> bool:
    """Whether ``instance`` belongs to a session with storage tracking."""
    session = object_session(instance)
    return session is not None and _state(session) is not None


def record_stored(instance: object, manager: StorageManager, ref: StoredObjectRef) -> None:
    """The model API stored ``ref`` for ``instance``: tie it to the instance's session, if tracked."""
    session = object_session(instance)
    if session is not None:
        register_stored_object(session, ref, manager=manager)


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
                    _take_over(session, state, pending, ref)
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


def _take_over(session: Session, state: _SessionState, pending: _Pending, ref: StoredObjectRef) -> None:
    """A row of this session now points at an object another session stored: the object follows it."""
    object_id = _object_id(ref)
    owner = _OWNERS.get(object_id)
    if owner is None or owner is state:
        return
    for other in owner.pending.values():
        stored = other.stored.pop(object_id, None)
        if stored is not None:
            pending.stored[object_id] = stored
            _OWNERS[object_id] = state
            return


# -- transaction outcomes -------------------------------------------------------------------------


def _on_after_commit(session: Session) -> None:
    # Fired for the root transaction and for each SAVEPOINT released, before either is closed.
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
    pending = state.pending.pop(transaction, None)
    if pending is None:
        return
    if not committed:
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
    """What the transaction stored is referenced by nothing; what it released is referenced again."""
    for object_id, (manager, ref) in pending.stored.items():
        _OWNERS.pop(object_id, None)
        _cleanup(manager, ref, reason="rollback")


def _committed(pending: _Pending) -> None:
    for object_id in pending.stored:
        _OWNERS.pop(object_id, None)
    for release in pending.unreferenced():
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


_WAITING: weakref.WeakKeyDictionary[Connection, _Waiting] = weakref.WeakKeyDictionary()
_LISTENING: weakref.WeakSet[Connection] = weakref.WeakSet()


def _wait_for(connection: Connection, pending: _Pending) -> None:
    if connection not in _LISTENING:
        # Left in place once installed: removing a listener while SQLAlchemy runs it is an error,
        # and with nothing waiting they do nothing.
        event.listen(connection, "commit", _on_connection_commit)
        event.listen(connection, "rollback", _on_connection_rollback)
        event.listen(connection, "rollback_savepoint", _on_connection_savepoint_rollback)
        _LISTENING.add(connection)
    _WAITING.setdefault(connection, _Waiting()).pending.append(pending)


def _on_connection_commit(connection: Connection) -> None:
    waiting = _WAITING.pop(connection, _Waiting())
    for pending in waiting.pending:
        if waiting.savepoint_rolled_back:
            # Some of the rows may have been undone by the connection's own SAVEPOINTs: keep every
            # object, which can leave some behind but never a row without its object.
            pending.released.clear()
        _committed(pending)


def _on_connection_rollback(connection: Connection) -> None:
    for pending in _WAITING.pop(connection, _Waiting()).pending:
        _rolled_back(pending)


def _on_connection_savepoint_rollback(connection: Connection, name: str, context: Any) -> None:
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
    ("after_commit", _on_after_commit),
    ("after_transaction_end", _on_transaction_end),
)
