"""Session tracking: storage that follows the database transaction, SAVEPOINTs included.

Objects are stored before the row that points at them is committed (the flow is *flush, store,
commit*), so a transaction that rolls back would leave them behind. :func:`track_storage` installs
session event listeners that make storage follow the transaction exactly:

* an object stored while a transaction or SAVEPOINT is open belongs to it: if that transaction rolls
  back, the object is deleted; if it commits, the object is handed to the enclosing transaction, and
  kept for good when the outermost transaction commits;
* an object the database stops pointing at (a reference replaced or cleared, its row deleted) is
  deleted after the outermost commit, never before, when its policy's
  ``delete_replaced`` (see :class:`~granite_storage.StoragePolicy`) or the call asks for it; a rollback
  keeps it;
* a failure while cleaning up never raises out of ``commit()`` or ``rollback()``: it is logged,
  reported through :func:`~granite_storage.hookspecs.granite_storage_cleanup_failed`, and the object
  is left for the garbage collector.

Sessions without tracking keep the seed's behaviour: nothing is deleted implicitly.

Only changes the session sees are followed. A bulk ``UPDATE``/``DELETE`` statement, or the same
reference copied into two rows, is invisible to it; objects left behind that way are the garbage
collector's to remove, and ``delete_replaced`` should only be enabled for slots whose objects belong
to one row each.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapper, Session, SessionTransaction, object_session, sessionmaker

from granite_storage.errors import StorageError
from granite_storage.manager import StorageManager
from granite_storage.orm.types import StoredObjectRefType
from granite_storage.refs import StoredObjectRef

__all__ = ["register_stored_object", "track_storage"]

logger = logging.getLogger(__name__)

_STATE_KEY = "granite_storage.tracking"

_TRACKED: weakref.WeakSet[object] = weakref.WeakSet()

_ObjectId = tuple[str, str, str]  # (storage_key, backend, location): one stored object


def _object_id(ref: StoredObjectRef) -> _ObjectId:
    return (ref.storage_key, ref.backend, ref.location)


@dataclass
class _Release:
    """An object the database stopped pointing at, and whether to delete it after the commit."""

    manager: StorageManager
    ref: StoredObjectRef
    delete: bool | None  # None: as the policy says


@dataclass
class _Pending:
    """What happened to storage inside one transaction or SAVEPOINT that has not ended yet."""

    stored: dict[_ObjectId, tuple[StorageManager, StoredObjectRef]] = field(default_factory=dict)
    released: dict[_ObjectId, _Release] = field(default_factory=dict)
    assigned: set[_ObjectId] = field(default_factory=set)

    def absorb(self, child: _Pending) -> None:
        """Take over what a committed SAVEPOINT did; its later decisions win."""
        self.stored.update(child.stored)
        for object_id, release in child.released.items():
            self.released[object_id] = release
        self.assigned |= child.assigned


@dataclass
class _SessionState:
    """One tracked session's bookkeeping, kept in ``session.info``."""

    pending: dict[SessionTransaction, _Pending] = field(default_factory=dict)
    committed: set[SessionTransaction] = field(default_factory=set)


def track_storage(
    target: Session | type[Session] | sessionmaker[Any] | AsyncSession | async_sessionmaker[Any],
) -> None:
    """Make storage follow the transactions of the sessions ``target`` makes (opt-in).

    ``target`` is a ``sessionmaker`` or ``async_sessionmaker`` (every session it makes from now on),
    a ``Session`` subclass (every instance), or one ``Session`` or ``AsyncSession``. Installing
    tracking twice on one target is harmless. See the module documentation for what it guarantees.

    For an ``async_sessionmaker`` whose sessions would use the plain ``Session`` class, a subclass is
    configured as its ``sync_session_class``, so that tracking does not reach every ``Session`` of
    the process.

    Raises:
        TypeError: ``target`` is none of the above.
    """
    if isinstance(target, async_sessionmaker):
        sync_class = target.kw.get("sync_session_class", Session)
        if sync_class is Session:
            sync_class = type("TrackedSession", (Session,), {"__module__": __name__})
            target.configure(sync_session_class=sync_class)
        target = sync_class
    elif isinstance(target, AsyncSession):
        target = target.sync_session
    if not isinstance(target, Session | sessionmaker) and not (
        isinstance(target, type) and issubclass(target, Session)
    ):
        raise TypeError(
            "track_storage() takes a sessionmaker, async_sessionmaker, Session subclass, Session or "
            f"AsyncSession, got {target!r}"
        )
    if isinstance(target, sessionmaker):
        target = target.class_  # each sessionmaker makes sessions of a Session subclass of its own
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
    _pending(session, state).stored[_object_id(ref)] = (manager, ref)
    return True


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
            raise StorageError(
                "deleting the previous content after commit needs a session with storage tracking "
                "(granite_storage.orm.track_storage) holding this instance; nothing was deleted"
            )
        return
    _pending(session, state).released[_object_id(ref)] = _Release(manager, ref, delete)


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


# -- session events ---------------------------------------------------------------------------------


def _on_before_flush(session: Session, flush_context: Any, instances: Iterable[object] | None) -> None:
    """Note which references this flush writes and which it removes from the database."""
    state = _state(session)
    if state is None:
        return
    pending = _pending(session, state)
    for instance in [*session.new, *session.dirty]:
        for key in _ref_attributes(inspect(instance).mapper):
            history = inspect(instance).attrs[key].history
            pending.assigned.update(_object_id(ref) for ref in history.added if ref is not None)
            _release(pending, instance, history.deleted)
    for instance in session.deleted:
        for key in _ref_attributes(inspect(instance).mapper):
            # Read before the DELETE runs; this loads the column if it was expired.
            _release(pending, instance, [getattr(instance, key)])


def _release(pending: _Pending, instance: object, refs: Iterable[Any]) -> None:
    manager = getattr(type(instance), "__storage_manager__", None)
    if not isinstance(manager, StorageManager):
        return  # no manager to delete with; the garbage collector is the backstop
    for ref in refs:
        if isinstance(ref, StoredObjectRef):
            pending.released.setdefault(_object_id(ref), _Release(manager, ref, None))


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
        # Rolled back (or closed without a commit): what it stored is referenced by nothing.
        for manager, ref in pending.stored.values():
            _delete_quietly(manager, ref, reason="rollback")
    elif transaction.nested:
        parent = transaction.parent
        while parent is not None and not _is_boundary(parent):
            parent = parent.parent
        if parent is not None:
            state.pending.setdefault(parent, _Pending()).absorb(pending)
    else:
        for object_id, release in pending.released.items():
            if object_id not in pending.assigned and _should_delete(release):
                _delete_quietly(release.manager, release.ref, reason="replaced")


def _should_delete(release: _Release) -> bool:
    if release.delete is not None:
        return release.delete
    try:
        return release.manager.policy(release.ref.storage_key).delete_replaced
    except StorageError:
        logger.warning("no policy for %r; keeping %s", release.ref.storage_key, release.ref.location)
        return False


def _delete_quietly(manager: StorageManager, ref: StoredObjectRef, *, reason: str) -> None:
    """Delete after the database has decided: a failure is logged and reported, never raised."""
    try:
        manager.delete(ref)
    except Exception as exc:
        logger.warning(
            "could not delete %s from %r after a %s; the garbage collector will remove it",
            ref.location,
            ref.backend,
            "rollback" if reason == "rollback" else "commit",
            exc_info=exc,
        )
        manager.plugins.report_cleanup_failure(ref, exc, reason)
    else:
        logger.debug("deleted %s from %r (%s)", ref.location, ref.backend, reason)


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


@event.listens_for(Mapper, "mapper_configured")
def _load_replaced_values(mapper: Mapper[Any], class_: type) -> None:
    """Make assigning to a reference column load the value it replaces, if it was not loaded.

    Without this, ``doc.file_ref = None`` on an expired instance would not tell the flush which
    reference it removed, and ``delete_replaced`` could not act on it. Costs one ``SELECT`` of the
    column in that case only.
    """
    for key in _ref_attributes(mapper):
        event.listen(getattr(class_, key), "set", _ignore_set, active_history=True)


def _ignore_set(target: object, value: Any, oldvalue: Any, initiator: Any) -> None:
    return None


_LISTENERS = (
    ("before_flush", _on_before_flush),
    ("after_commit", _on_after_commit),
    ("after_transaction_end", _on_transaction_end),
)
