"""The hooks a granite-storage plugin can implement: the plugin author's reference.

A plugin is a module (or object) whose functions carry the :data:`granite_storage.hookimpl` marker and
whose names match the hooks below. A distribution makes its plugin discoverable with an entry point in
the ``granite_storage`` group::

    [project.entry-points.granite_storage]
    acme = "acme_storage.hooks"

Entry points are loaded when a :class:`~granite_storage.StorageManager` is built (never at import),
each on its own: a plugin that fails to import is recorded, and the failure is raised, chained, only
when its backend type is asked for. Hooks are always called with keyword arguments; an implementation
may accept any subset of a hook's arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from granite_storage._markers import hookspec

if TYPE_CHECKING:
    from granite_storage.backend import StorageBackend
    from granite_storage.keys import ObjectKeyRequest
    from granite_storage.manager import StorageManager
    from granite_storage.policy import StoragePolicy
    from granite_storage.refs import StoredObjectRef

__all__ = [
    "RegisterBackend",
    "granite_storage_cleanup_failed",
    "granite_storage_object_key",
    "granite_storage_register_backends",
    "granite_storage_resolve_policy",
]


class RegisterBackend(Protocol):
    """The ``register`` callback handed to :func:`granite_storage_register_backends`."""

    def __call__(self, name: str, target: type[StorageBackend] | str, /) -> None:
        """Register backend type ``name``, built by ``target``.

        Args:
            name: The type name configs use (``{"type": name, ...}``), e.g. ``"s3"``.
            target: The backend class, or a lazy ``"module:Class"`` string imported only when the
                type is first used, which keeps plugin discovery cheap.
        """
        ...


@hookspec
def granite_storage_register_backends(register: RegisterBackend) -> None:
    """Register the backend types this plugin provides.

    Call ``register(name, target)`` once per type. ``target`` is a
    :class:`~granite_storage.StorageBackend` subclass or a ``"module:Class"`` string; when a config
    names the type, the class is called with the config's remaining options as keyword arguments
    (``{"type": "local", "root": "./var"}`` becomes ``LocalStorageBackend(root="./var")``).

    Two plugins registering the same name is an error that names both
    (:class:`~granite_storage.PluginError`), raised when that type is asked for. A hook that raises,
    or registers an empty name or a target that is neither a backend class nor a ``"module:Class"``
    string, sets its plugin aside: it registers nothing and is listed in
    :attr:`PluginHost.failures <granite_storage.PluginHost.failures>`. The return value is ignored.
    """


@hookspec(firstresult=True)
def granite_storage_resolve_policy(storage_key: str, manager: StorageManager) -> StoragePolicy | None:
    """Supply the policy for a storage key that the manager does not define statically.

    Called each time the manager needs the policy of an unknown ``storage_key`` (a tenant's slot,
    policies kept in a database or the environment); results are not cached, so a plugin that is
    expensive to ask should cache on its own. Return a :class:`~granite_storage.StoragePolicy` whose
    ``storage_key`` is the one asked for and whose backend the manager has, or ``None`` to pass.

    The manager checks a resolved policy against its static policies (same backend, overlapping
    prefixes are refused) but cannot check it against other resolved policies, which it does not
    keep: a plugin must give each storage key it resolves a prefix of its own (e.g.
    ``tenants/<id>``), or one slot's references could reach another's objects.

    Stops at the first non-None result. Static policies always win: this hook is not called for a
    storage key the manager was configured with. If an implementation raises, or returns something
    other than a policy or ``None``, the manager raises :class:`~granite_storage.PluginError` (a
    :class:`~granite_storage.ConfigurationError`) naming the plugin, chained to what it raised.
    """


@hookspec(firstresult=True)
def granite_storage_object_key(request: ObjectKeyRequest) -> str | None:
    """Name the key of a new object: return a key, or ``None`` to pass.

    Called once for every object stored (:meth:`StorageManager.put_stream
    <granite_storage.StorageManager.put_stream>`, :meth:`~granite_storage.StorageManager.put_bytes`
    and the model API), before anything is stored. ``request`` (a
    :class:`~granite_storage.keys.ObjectKeyRequest`) describes the object: the slot's policy, the
    model and field names, the entity id if known (``None`` for an instance not flushed yet) and the
    original filename, all as the caller gave them: sanitise what goes into the key
    (:func:`~granite_storage.keys.sanitize_segment`, :func:`~granite_storage.keys.safe_extension`).

    The key must be fresh (an existing object at it would be replaced; include
    :func:`~granite_storage.keys.new_token`), valid (:func:`~granite_storage.keys.validate_key`) and
    inside the slot's prefix (``request.prefix + "/..."``). The manager checks the last two and
    raises :class:`~granite_storage.PluginError` naming the plugin otherwise; nothing is stored then.

    Stops at the first non-None result. The built-in implementation is ``trylast`` (every plugin
    implementation not itself marked ``trylast`` runs before it) and follows the policy's
    ``key_layout`` (``"fanout"`` or ``"entity"``, see
    :mod:`granite_storage.keys`), so a plugin only answers for the slots it wants to name, e.g.
    ``if request.storage_key != "invoices": return None``. A
    :class:`~granite_storage.StorageError` an implementation raises (such as
    :class:`~granite_storage.UnsavedEntityError` for a layout that needs the entity id) reaches the
    caller as it is; any other exception is raised as :class:`~granite_storage.PluginError` naming the
    plugin, chained to it.
    """


@hookspec
def granite_storage_cleanup_failed(ref: StoredObjectRef, error: Exception, reason: str) -> None:
    """Hear that an object which session tracking meant to delete could not be deleted.

    Session tracking (:func:`granite_storage.orm.track_storage`) deletes objects when a transaction
    rolls back and, where asked, replaced objects after a commit. That cleanup runs after the
    database has decided, so a failure must not undo or hide the decision: it is logged (logger
    ``granite_storage.orm.tracking``), reported through this hook, and the object stays in storage.
    Use it to count or alert.

    Args:
        ref: The reference of the object that is still stored.
        error: What deleting it raised.
        reason: ``"rollback"`` (stored in a transaction that rolled back) or ``"replaced"``
            (replaced, cleared or its row deleted, in a transaction that committed).

    Every implementation is called; the return value is ignored. An implementation that raises is
    logged and does not stop the others or the commit.
    """
