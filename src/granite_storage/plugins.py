"""Plugin discovery and the registry of backend types.

:class:`PluginHost` wraps a :class:`pluggy.PluginManager` with typed methods for each hook (pluggy
returns ``Any``). Managers share one host per process (:func:`default_plugin_host`), created and
loaded the first time a manager is built; tests and applications that want their own set of plugins
build a :class:`PluginHost` and pass it as ``plugins=``.

Operators can act on discovery through the environment:

``GRANITE_STORAGE_DISABLE_PLUGINS``
    Comma-separated entry-point names that are never loaded (e.g. ``"acme,legacy"``).
``GRANITE_STORAGE_STRICT_PLUGINS``
    When ``1``/``true``/``yes``/``on``, a plugin that fails to load raises at once instead of being
    recorded.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pluggy

from granite_storage import _builtin_hooks, hookspecs
from granite_storage._markers import PROJECT_NAME
from granite_storage.backend import StorageBackend
from granite_storage.errors import ConfigurationError, InvalidKeyError, PluginError, StorageError
from granite_storage.keys import ObjectKeyRequest, is_within_prefix, validate_key
from granite_storage.policy import StoragePolicy

if TYPE_CHECKING:
    from granite_storage.manager import StorageManager
    from granite_storage.refs import StoredObjectRef

__all__ = [
    "DISABLE_ENV",
    "S3_INSTALL_HINT",
    "STRICT_ENV",
    "BackendType",
    "PluginHost",
    "PluginLoadFailure",
    "default_plugin_host",
]

logger = logging.getLogger(__name__)

#: The environment variable naming entry points never to load (comma-separated).
DISABLE_ENV = "GRANITE_STORAGE_DISABLE_PLUGINS"
#: The environment variable that turns on strict plugin loading.
STRICT_ENV = "GRANITE_STORAGE_STRICT_PLUGINS"

#: How to get the S3 backend, said wherever it is missing.
S3_INSTALL_HINT = 'the granite-storage-s3 plugin: pip install "granite-storage[s3]"'

#: Where the backend types the project knows of come from, for the hint in "unknown type" errors.
_KNOWN_PROVIDERS = {
    "local": "pip install granite-storage-local",
    "s3": S3_INSTALL_HINT,
}


@dataclass(frozen=True, slots=True)
class BackendType:
    """A backend type registered by a plugin.

    Attributes:
        name: The type name configs use, e.g. ``"local"``.
        target: The backend class, or the lazy ``"module:Class"`` string it was registered as.
        plugin: The name of the plugin that registered it (its entry-point name).
        distribution: The distribution that ships the plugin, when known.
        version: That distribution's version, when known.
    """

    name: str
    target: type[StorageBackend] | str
    plugin: str
    distribution: str | None = None
    version: str | None = None

    def load(self) -> type[StorageBackend]:
        """Return the backend class, importing a lazy target on first use.

        Raises:
            PluginError: the target cannot be imported or is not a ``StorageBackend`` subclass;
                chained to the import failure.
        """
        target = self.target
        if isinstance(target, str):
            module_name, _, attribute = target.partition(":")
            try:
                target = getattr(importlib.import_module(module_name), attribute)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # ImportError, AttributeError, or a plugin's SystemExit
                raise PluginError(
                    f"backend type {self.name!r} from plugin {self.plugin!r} could not be loaded "
                    f"from {self.target!r}: {exc}"
                ) from exc
        if not _is_backend_class(target):
            raise PluginError(
                f"backend type {self.name!r} from plugin {self.plugin!r} is {target!r}, "
                "not a StorageBackend subclass"
            )
        return target


@dataclass(frozen=True, slots=True)
class PluginLoadFailure:
    """A plugin set aside: its entry point could not be loaded, or its registration hook failed.

    Attributes:
        name: The plugin's name (its entry-point name).
        value: What failed: the entry point's target (``"module"`` or ``"module:attr"``), or the
            hook (``"<plugin>.granite_storage_register_backends"``).
        distribution: The distribution that ships the plugin, when known.
        error: The exception raised.
    """

    name: str
    value: str
    distribution: str | None
    error: BaseException


class PluginHost:
    """The plugins one or more managers use, and the backend types they register.

    Args:
        strict: Raise :class:`PluginError` as soon as an entry point fails to load, instead of
            recording the failure. Defaults to the ``GRANITE_STORAGE_STRICT_PLUGINS`` variable.
        disabled: Entry-point names never to load. Defaults to ``GRANITE_STORAGE_DISABLE_PLUGINS``.
    """

    def __init__(self, *, strict: bool | None = None, disabled: Iterable[str] | None = None) -> None:
        #: Whether a plugin that fails to load raises at once.
        self.strict = _env_flag(STRICT_ENV) if strict is None else strict
        #: Entry-point names that are never loaded.
        self.disabled = frozenset(_env_list(DISABLE_ENV) if disabled is None else disabled)
        self._pm = pluggy.PluginManager(PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._pm.register(_builtin_hooks, name=_builtin_hooks.BUILTIN_PLUGIN_NAME)
        self._failures: dict[str, PluginLoadFailure] = {}
        self._distributions: dict[str, tuple[str, str]] = {}
        self._registry: _Registry | None = None

    @property
    def failures(self) -> Mapping[str, PluginLoadFailure]:
        """Plugins that failed to load or to register their backends, by plugin name."""
        return MappingProxyType({**self._failures, **self._collect().failures})

    def load_entry_points(self) -> None:
        """Load every plugin in the ``granite_storage`` entry-point group not yet loaded.

        Each entry point is loaded on its own, rather than with pluggy's
        ``load_setuptools_entrypoints``, which stops at the first plugin that fails to import: here a
        broken plugin is recorded in :attr:`failures` (or raised when :attr:`strict`) and the others
        still load.
        """
        by_name: dict[str, list[importlib.metadata.EntryPoint]] = {}
        for entry_point in importlib.metadata.entry_points(group=PROJECT_NAME):
            by_name.setdefault(entry_point.name, []).append(entry_point)
        for name, entry_points in by_name.items():
            if name in self.disabled or name in self._failures:
                continue
            entry_point = entry_points[0]
            distribution = _distribution_name(entry_point)
            providers = {*map(_distribution_name, entry_points)}
            if name in self._distributions:  # loaded from an entry point by an earlier call
                providers.add(self._distributions[name][0])
            if len(providers) > 1:
                self._refuse_name_clash(name, entry_points, sorted(map(str, providers)))
                continue
            if self._pm.has_plugin(name):
                if name not in self._distributions:
                    logger.warning(
                        "entry point %r of %s is ignored: a plugin of that name is registered",
                        name,
                        distribution,
                    )
                continue
            try:
                plugin = entry_point.load()
                self._pm.register(plugin, name=name)
                self._check_hook_names(name)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a plugin's SystemExit must not end the host
                self._record_failure(PluginLoadFailure(name, entry_point.value, distribution, exc))
                continue
            if entry_point.dist is not None:
                self._distributions[name] = (entry_point.dist.name, entry_point.dist.version)
        self._registry = None

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object directly (an application's own hooks, a test's); return its name.

        Raises:
            PluginError: the name or the object is registered already, or the plugin implements a
                ``granite_storage_*`` hook that does not exist (a misspelt hook would otherwise be
                ignored silently).
        """
        try:
            registered = self._pm.register(plugin, name=name)
        except ValueError as exc:  # the name or the object is registered already
            raise PluginError(f"cannot register plugin {name!r}: {exc}") from exc
        self._registry = None
        assert registered is not None, "PluginHost never blocks names"
        self._check_hook_names(registered)
        return registered

    def unregister(self, name: str) -> None:
        """Remove the plugin registered under ``name``."""
        self._pm.unregister(name=name)
        self._registry = None

    def backend_types(self) -> Mapping[str, BackendType]:
        """Every backend type registered by exactly one plugin, by name.

        A name claimed by two plugins is left out (asking for it with :meth:`backend_type` raises an
        error naming both), and a plugin whose hook raises registers nothing (it is listed in
        :attr:`failures`); neither affects the other types. In :attr:`strict` mode both raise
        :class:`PluginError` here instead.
        """
        return MappingProxyType(self._collect().types)

    def backend_type(self, name: str) -> BackendType:
        """The backend type registered as ``name``.

        Raises:
            ConfigurationError: no plugin registered it; the message names the installed types and
                the package that would provide it (or says that its plugin is disabled).
            PluginError: two plugins claim the name (the message names both); or no plugin
                registered it while some plugin failed, which may explain the absence: the message
                lists the failures, and the error is chained to the one named like the type, else
                to the first.
        """
        registry = self._collect()
        types = registry.types
        if name in types:
            return types[name]
        if name in registry.clashes:
            raise PluginError(registry.clashes[name])
        installed = ", ".join(
            f"{t.name} ({t.distribution or t.plugin})" for t in sorted(types.values(), key=_by_name)
        )
        hint = _KNOWN_PROVIDERS.get(
            name, f"install the plugin package that provides it (e.g. granite-storage-{name})"
        )
        if name in self.disabled:
            hint = f"the plugin {name!r} is disabled ({DISABLE_ENV} or PluginHost(disabled=...))"
        elif close := difflib.get_close_matches(name, types, n=1):
            hint = f"did you mean {close[0]!r}? Else {hint}"
        message = f"unknown backend type {name!r}; installed types: {installed or 'none'}. To use it: {hint}"
        failures = self.failures
        failure = failures.get(name) or next(iter(failures.values()), None)
        if failure is None:
            raise ConfigurationError(message)
        failed = "; ".join(_describe_failure(f) for f in failures.values())
        raise PluginError(f"{message}. {failed}") from failure.error

    def create_backend(self, type_name: str, options: Mapping[str, Any]) -> StorageBackend:
        """Build a backend of the registered type ``type_name`` with ``options`` as keyword arguments.

        Raises:
            ConfigurationError: the type is unknown or rejects the options.
            PluginError: the type's class cannot be imported.
        """
        backend_class = self.backend_type(type_name).load()
        try:
            return backend_class(**options)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"backend type {type_name!r} ({backend_class.__qualname__}) refused its options: {exc} "
                f"(given: {sorted(options)})"
            ) from exc

    def type_name_of(self, backend: StorageBackend) -> str | None:
        """The registered type name of ``backend``'s class (``"local"``, ``"s3"``), or ``None``.

        A type matches when it was registered as exactly that class, or lazily as the string
        ``"module:Class"`` naming it. Nothing is imported to find out: a lazy target whose module is
        not imported yet cannot be the class of an existing instance under that name. A subclass of
        a registered class is not of that type.
        """
        cls = type(backend)
        for backend_type in self.backend_types().values():
            target = backend_type.target
            if target is cls:
                return backend_type.name
            if isinstance(target, str):
                module_name, _, attribute = target.partition(":")
                module = sys.modules.get(module_name)
                if module is not None and getattr(module, attribute, None) is cls:
                    return backend_type.name
        return None

    def resolve_policy(self, storage_key: str, manager: StorageManager) -> StoragePolicy | None:
        """Ask plugins for the policy of ``storage_key``; the first non-None answer wins."""
        arguments = {"storage_key": storage_key, "manager": manager}
        for impl in _implementations(self._pm.hook.granite_storage_resolve_policy):
            try:
                result = _call(impl, arguments)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed to resolve the policy of {storage_key!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if result is None:
                continue
            if not isinstance(result, StoragePolicy):
                raise PluginError(
                    f"plugin {impl.plugin_name!r} resolved {storage_key!r} to {result!r}, "
                    "not a StoragePolicy or None"
                )
            return result
        return None

    def object_key(self, request: ObjectKeyRequest) -> str:
        """The key of a new object: the first key a plugin names, else the policy's key layout.

        The key is checked before it is returned: it must be a valid key inside the slot's prefix.

        Raises:
            PluginError: an implementation raised something other than a
                :class:`~granite_storage.StorageError`, or returned something other than a valid key
                inside ``request.prefix`` or ``None``; the message names the plugin.
            StorageError: what an implementation raised, as it is (e.g.
                :class:`~granite_storage.UnsavedEntityError` from the ``"entity"`` layout).
        """
        for impl in _implementations(self._pm.hook.granite_storage_object_key):
            try:
                key = _call(impl, {"request": request})
            except (KeyboardInterrupt, StorageError):
                raise
            except BaseException as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed to name a key in {request.storage_key!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if key is None:
                continue
            try:
                validate_key(key)
                if not is_within_prefix(key, request.prefix):
                    raise InvalidKeyError(key, f"it lies outside the slot's prefix {request.prefix!r}")
            except InvalidKeyError as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} named an invalid key for storage key "
                    f"{request.storage_key!r}: {exc}"
                ) from exc
            return str(key)
        raise PluginError(f"no plugin named a key for storage key {request.storage_key!r}")

    def report_cleanup_failure(self, ref: StoredObjectRef, error: Exception, reason: str) -> None:
        """Tell every plugin that ``ref`` could not be cleaned up; never raises (failures are logged).

        Each implementation is called on its own, as pluggy would call it, so that one that raises
        neither stops the others nor reaches the commit that triggered the cleanup.
        """
        arguments = {"ref": ref, "error": error, "reason": reason}
        for impl in _implementations(self._pm.hook.granite_storage_cleanup_failed):
            try:
                _call(impl, arguments)
            except KeyboardInterrupt:
                raise
            except BaseException:
                logger.exception("plugin %r raised in granite_storage_cleanup_failed", impl.plugin_name)

    def _check_hook_names(self, name: str) -> None:
        """Unregister plugin ``name`` and raise if it implements a hook no spec defines."""
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(name=name)
            raise PluginError(f"plugin {name!r} implements an unknown hook: {exc}") from exc

    def _record_failure(self, failure: PluginLoadFailure) -> None:
        """Set a plugin aside as failed, or raise at once in strict mode."""
        if self.strict:
            raise PluginError(_describe_failure(failure)) from failure.error
        logger.warning("%s", _describe_failure(failure), exc_info=failure.error)
        self._failures[failure.name] = failure

    def _refuse_name_clash(
        self, name: str, entry_points: list[importlib.metadata.EntryPoint], providers: list[str]
    ) -> None:
        """Load neither of two distributions' plugins of one name: either could replace the other."""
        if self._pm.has_plugin(name):
            self._pm.unregister(name=name)
            self._distributions.pop(name, None)
        error = PluginError(
            f"the plugin name {name!r} is claimed by several distributions: {' and '.join(providers)}; "
            f"neither is loaded (uninstall one, or disable the name with {DISABLE_ENV})"
        )
        values = ", ".join(entry_point.value for entry_point in entry_points)
        self._record_failure(PluginLoadFailure(name, values, " and ".join(providers), error))

    def _collect(self) -> _Registry:
        """Ask every plugin for its backend types (once until plugins change) and sort them out."""
        if self._registry is not None:
            return self._registry
        registry = _Registry()
        caller = self._pm.hook.granite_storage_register_backends
        # Each implementation is called on its own, so that a registration is tied to its plugin
        # (a clash can name both, in the order they were registered) and a plugin whose hook raises
        # is set aside alone.
        for impl in reversed(_implementations(caller)):
            plugin = impl.plugin_name
            distribution, version = self._distributions.get(plugin, (None, None))
            registered: list[BackendType] = []

            def register(
                name: str,
                target: type[StorageBackend] | str,
                /,
                *,
                _plugin: str = plugin,
                _dist: str | None = distribution,
                _version: str | None = version,
                _into: list[BackendType] = registered,
            ) -> None:
                _check_target(name, target, _plugin)
                _into.append(BackendType(name, target, _plugin, _dist, _version))

            try:
                _call(impl, {"register": register})
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a plugin's SystemExit must not end the host
                hook = f"{plugin}.{caller.name}"
                failure = PluginLoadFailure(plugin, hook, distribution, exc)
                if self.strict:
                    raise PluginError(_describe_failure(failure)) from exc
                logger.warning("%s", _describe_failure(failure), exc_info=exc)
                registry.failures[plugin] = failure
                continue
            for backend_type in registered:
                registry.add(backend_type, strict=self.strict)
        self._registry = registry
        return registry


@dataclass
class _Registry:
    """The outcome of one round of ``granite_storage_register_backends`` calls."""

    types: dict[str, BackendType] = field(default_factory=dict)
    clashes: dict[str, str] = field(default_factory=dict)
    failures: dict[str, PluginLoadFailure] = field(default_factory=dict)
    _claimed: dict[str, BackendType] = field(default_factory=dict)

    def add(self, backend_type: BackendType, *, strict: bool) -> None:
        name = backend_type.name
        first = self._claimed.setdefault(name, backend_type)
        if first is backend_type:
            self.types[name] = backend_type
            return
        message = self.clashes.get(name) or (
            f"backend type {name!r} is registered by two plugins: {_owner(first)}"
        )
        message += f" and {_owner(backend_type)}"
        if strict:
            raise PluginError(message)
        self.types.pop(name, None)
        self.clashes[name] = message


_default_host: PluginHost | None = None
_default_lock = threading.Lock()


def default_plugin_host() -> PluginHost:
    """The process-wide host, created and loaded from entry points on first use."""
    global _default_host
    with _default_lock:
        if _default_host is None:
            host = PluginHost()
            host.load_entry_points()
            _default_host = host
        return _default_host


def _implementations(caller: pluggy.HookCaller) -> list[pluggy.HookImpl]:
    """A hook's implementations in the order pluggy calls them, wrappers left out.

    The host calls implementations one at a time where it must know which plugin answered or
    failed (pluggy's own call names neither); a wrapper has nothing of its own to contribute there.
    """
    return [impl for impl in reversed(caller.get_hookimpls()) if not (impl.hookwrapper or impl.wrapper)]


def _call(impl: pluggy.HookImpl, arguments: Mapping[str, object]) -> Any:
    """Call one implementation with the arguments it declares, as pluggy would."""
    return impl.function(*(arguments[name] for name in impl.argnames))


def _distribution_name(entry_point: importlib.metadata.EntryPoint) -> str | None:
    return entry_point.dist.name if entry_point.dist else None


def _check_target(name: object, target: object, plugin: str) -> None:
    if not isinstance(name, str) or not name:
        raise PluginError(f"plugin {plugin!r} registered a backend type with the name {name!r}")
    if isinstance(target, str):
        if ":" not in target:
            raise PluginError(
                f"plugin {plugin!r} registered {name!r} as {target!r}; "
                "a lazy target is written 'module:Class'"
            )
    elif not _is_backend_class(target):
        raise PluginError(
            f"plugin {plugin!r} registered {name!r} as {target!r}, which is neither a "
            "StorageBackend subclass nor a 'module:Class' string"
        )


def _is_backend_class(target: object) -> bool:
    return isinstance(target, type) and issubclass(target, StorageBackend)


def _owner(backend_type: BackendType) -> str:
    distribution = backend_type.distribution
    return f"plugin {backend_type.plugin!r}" + (f" (distribution {distribution})" if distribution else "")


def _by_name(backend_type: BackendType) -> str:
    return backend_type.name


def _describe_failure(failure: PluginLoadFailure) -> str:
    source = f" from distribution {failure.distribution}" if failure.distribution else ""
    return (
        f"plugin {failure.name!r} ({failure.value}{source}) failed to load: "
        f"{type(failure.error).__name__}: {failure.error}"
    )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]
