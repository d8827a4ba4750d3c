"""The storage manager: one entry point that routes every slot to its backend under its policy."""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import mimetypes
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, BinaryIO, Literal

from granite_storage._compat import BACKEND_PROTOCOL_REPLACEMENT
from granite_storage._sniffing import HeadThenRest, checked_content_type, read_head, require_sniffer
from granite_storage.backend import ObjectInfo, StorageBackend, check_range
from granite_storage.config import ConfigSource, build_backends, build_policies, read_config
from granite_storage.errors import (
    ConfigurationError,
    ContentTooLargeError,
    IncompleteUploadError,
    InvalidKeyError,
    InvalidReferenceError,
    UnverifiableReferenceError,
)
from granite_storage.headers import download_headers, parse_content_type
from granite_storage.keys import ObjectKeyRequest, is_within_prefix, prefixes_overlap, validate_key
from granite_storage.plugins import PluginHost, default_plugin_host
from granite_storage.policy import StorageLocation, StoragePolicy
from granite_storage.refs import InvalidStoredObjectRef, StoredObjectRef
from granite_storage.streams import DEFAULT_CHUNK_SIZE, HashingReader, Readable, SizeLimitedStream

__all__ = ["StorageManager"]

logger = logging.getLogger(__name__)

#: The name granite-storage 0.1.0 gave an object: ``<entity id>-<8 hex digits><suffix>``, where the
#: suffix is the original filename's extension, dot included, or nothing.
_LEGACY_NAME = re.compile(r"[^/]+-[0-9a-f]{8}(?:\.[^/.]+)?")
# The methods by which a backend written for granite-storage 0.1.0 is recognised.
_PROTOCOL_0_1_METHODS = ("put_bytes", "put_stream", "iter_locations")


class StorageManager:
    """Stores and retrieves objects for every storage slot, each under its :class:`StoragePolicy`.

    Application code names a slot (``storage_key``) and never a backend, so swapping local disk for S3
    is a configuration change. Building a manager discovers installed plugins (once per process).

    Every reference passed to :meth:`get`, :meth:`open`, :meth:`stat`, :meth:`exists`,
    :meth:`delete`, :meth:`url` or :meth:`verify` is checked first (:meth:`location_of`): its location
    must be a valid key inside one of its slot's locations (:attr:`StoragePolicy.locations
    <granite_storage.StoragePolicy.locations>`: the current one, or a previous one), and the backend
    it names that location's backend. A row of one slot therefore never reaches another slot's
    objects. After a slot moves (another backend, another prefix), list where it was in
    ``previous_locations`` and its existing references keep working; new objects always go to the
    current location.

    A slot without ``key_prefix`` may also read the objects granite-storage 0.1.0 stored for it, at
    ``<model>/<entity id>-<8 hex digits><.suffix>`` in its current backend (see
    :meth:`location_of`).

    Args:
        backends: Backend instances by name; policies refer to them by that name.
        policies: Policies by storage key (each key must equal its policy's ``storage_key``).
        plugins: The plugin host to use; by default the process-wide one, loaded from entry points.

    Raises:
        ConfigurationError: a backend is not a :class:`~granite_storage.StorageBackend` (one written
            for granite-storage 0.1.0's backend protocol is named as such, with what replaces it);
            two backend names write into one store (see
            :meth:`~granite_storage.StorageBackend.store_area`); a policy names a backend that is not
            configured (as its own or in a previous location); a mapping key differs from its
            policy's ``storage_key``; two slots on one backend have overlapping key prefixes; or a
            previous location of one slot overlaps another slot's current location on the same
            backend.
    """

    def __init__(
        self,
        backends: Mapping[str, StorageBackend],
        policies: Mapping[str, StoragePolicy],
        *,
        plugins: PluginHost | None = None,
    ) -> None:
        self._plugins = plugins if plugins is not None else default_plugin_host()
        self._type_names: dict[str, str | None] = {}
        self._backends = MappingProxyType(dict(backends))
        self._policies = MappingProxyType(dict(policies))
        for name, backend in self._backends.items():
            if not isinstance(backend, StorageBackend):
                raise ConfigurationError(_not_a_backend(name, backend))
        _check_store_areas(self._backends)
        for storage_key, policy in self._policies.items():
            if storage_key != policy.storage_key:
                raise ConfigurationError(
                    f"policy registered as {storage_key!r} has storage_key {policy.storage_key!r}"
                )
            self._check_policy(policy)

    @classmethod
    def from_config(
        cls, config: ConfigSource, *, section: str | None = None, plugins: PluginHost | None = None
    ) -> StorageManager:
        """Build a manager from a mapping or a TOML file, creating backends by registered type name.

        See :mod:`granite_storage.config` for the format. ``section`` names the table to use inside a
        larger configuration, by dotted path (``"storage"``, ``"tool.myapp.storage"``).

        Raises:
            ConfigurationError: the config is invalid or names an unknown backend type (the message
                names the installed types and the package that would provide it).
        """
        host = plugins if plugins is not None else default_plugin_host()
        mapping = read_config(config, section=section)
        policies = build_policies(mapping)  # first: it has no side effects, backends may create roots
        return cls(backends=build_backends(mapping, host), policies=policies, plugins=host)

    @property
    def backends(self) -> Mapping[str, StorageBackend]:
        """The configured backends, by name (read-only)."""
        return self._backends

    @property
    def policies(self) -> Mapping[str, StoragePolicy]:
        """The statically configured policies, by storage key (read-only)."""
        return self._policies

    @property
    def plugins(self) -> PluginHost:
        """The plugin host this manager consults."""
        return self._plugins

    def policy(self, storage_key: str) -> StoragePolicy:
        """The policy of ``storage_key``: a static one, else the first a plugin resolves.

        Raises:
            ConfigurationError: no policy exists; the message lists the configured storage keys.
        """
        policy = self._policies.get(storage_key)
        if policy is not None:
            return policy
        policy = self._plugins.resolve_policy(storage_key, self)
        if policy is None:
            raise ConfigurationError(
                f"no storage policy for {storage_key!r}; configured: {sorted(self._policies)}"
            )
        if policy.storage_key != storage_key:
            raise ConfigurationError(
                f"a plugin resolved {storage_key!r} to a policy for {policy.storage_key!r}"
            )
        self._check_policy(policy)
        return policy

    def get_policy(self, storage_key: str) -> StoragePolicy:
        """The policy of ``storage_key``, as :meth:`policy` (the name granite-storage 0.1.0 gave it).

        Raises:
            ConfigurationError: no policy exists (a :class:`~granite_storage.StorageError`, as 0.1.0
                raised).
        """
        return self.policy(storage_key)

    def get_backend_for_policy(self, policy: StoragePolicy) -> StorageBackend:
        """The backend that stores ``policy``'s objects (granite-storage 0.1.0's name).

        The backend's methods take keys, not references (0.1.0's took references): read and delete
        referenced objects through the manager (:meth:`get`, :meth:`open`, :meth:`delete`), which
        checks each reference before the backend sees its key.

        Raises:
            ConfigurationError: ``policy`` names a backend that is not configured.
        """
        return self.backend(policy.backend_key)

    def backend(self, name: str) -> StorageBackend:
        """The backend configured as ``name``.

        Raises:
            ConfigurationError: no such backend; the message lists the configured names.
        """
        try:
            return self._backends[name]
        except KeyError:
            raise ConfigurationError(
                f"no storage backend named {name!r}; configured: {sorted(self._backends)}"
            ) from None

    def location_of(self, ref: StoredObjectRef) -> StorageLocation:
        """The location ``ref`` lies in, checked exactly as every read, URL and delete checks it.

        The result is one of the slot's :attr:`~granite_storage.StoragePolicy.locations` (its current
        location, ``manager.policy(ref.storage_key).location``, where new objects go, or a previous
        one), or, for a slot without ``key_prefix``, the granite-storage 0.1.0 area of one model:
        ``StorageLocation(<current backend>, "<model>")``.

        How a reference is matched:

        * Its ``backend`` must name the backend of one of the slot's locations. A name that is no
          configured backend is taken as a backend *type* (``"local"``, ``"s3"``), as 0.1.0 recorded
          it: it stands for the slot's one backend of that registered type, and is refused if the
          slot's locations use none or several such backends.
        * Its ``location`` must be a valid key (:func:`~granite_storage.keys.validate_key`) inside
          the prefix of one of the slot's locations on that backend, the current one first.
        * Else, for a slot without ``key_prefix`` only, in its current backend only: a key of exactly
          0.1.0's shape ``<model>/<entity id>-<8 lower-case hex digits><.suffix>`` (two segments; the
          suffix a dot and characters other than ``/`` and ``.``, or nothing) lies in the 0.1.0 area
          of ``<model>``, unless ``<model>`` lies in, contains or equals a prefix of another static
          slot's location (current or previous) on that backend.

        Raises:
            InvalidKeyError: the location is unsafe, or lies outside every location of its slot
                (e.g. in another slot's namespace).
            InvalidReferenceError: the reference names a backend none of its slot's locations use,
                or a backend type several of them use.
            ConfigurationError: the reference names a slot this manager does not have.
        """
        return self._resolve(ref)[0]

    def put_stream(
        self,
        *,
        storage_key: str,
        model_name: str,
        field_name: str,
        stream: Readable,
        entity_id: str | None = None,
        content_type: str | None = None,
        original_filename: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> StoredObjectRef:
        """Stream ``stream`` into the slot ``storage_key`` and return its reference.

        The content is read once, in chunks: its size is enforced against the policy's ``max_size``
        and its sha256 computed on the way to the backend, so memory stays flat whatever its size. The
        key is a fresh one in the slot's prefix, named by the slot's key layout (or a plugin's
        :func:`~granite_storage.hookspecs.granite_storage_object_key`) from an
        :class:`~granite_storage.keys.ObjectKeyRequest` of ``model_name``, ``field_name``,
        ``entity_id`` (optional: the default layout does not use it) and ``original_filename``
        (its extension); no caller value can move it out of the slot's prefix. ``content_type`` is
        stored normalised (see :func:`granite_storage.headers.parse_content_type`), or guessed from
        ``original_filename`` when not given. In a slot with ``allowed_types``, the type is read from
        the content's first bytes instead, checked, and stored. ``extra`` is recorded on the reference
        as it is (it must be JSON-serialisable to live in a database row).

        Raises:
            ContentTooLargeError: the content passed ``max_size``; nothing was stored.
            InvalidMetadataError: ``content_type`` is not one valid media type; nothing was stored.
            ContentTypeNotAllowedError: the slot has ``allowed_types`` and the content's type is not
                among them, or is not the type declared (by ``content_type`` or the filename's
                extension); nothing was stored.
            UnsavedEntityError: the slot's layout is ``"entity"`` and no ``entity_id`` was given.
            PluginError: a plugin named an invalid key, or one outside the slot's prefix.
            ConfigurationError: ``storage_key`` has no policy.
            StorageError: the backend failed; nothing was stored.
        """
        policy = self.policy(storage_key)
        return self._store(
            ObjectKeyRequest(policy, model_name, field_name, entity_id, original_filename),
            stream=stream,
            content_type=content_type,
            original_filename=original_filename,
            extra=extra,
        )

    def put_bytes(
        self,
        *,
        storage_key: str,
        model_name: str,
        field_name: str,
        content: bytes | bytearray | memoryview,
        entity_id: str | None = None,
        content_type: str | None = None,
        original_filename: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> StoredObjectRef:
        """Store ``content`` in the slot ``storage_key``; otherwise as :meth:`put_stream`.

        Content over the policy's ``max_size`` is refused before the backend is touched.
        """
        policy = self.policy(storage_key)
        if policy.max_size is not None and memoryview(content).nbytes > policy.max_size:
            raise ContentTooLargeError(policy.max_size)
        return self._store(
            ObjectKeyRequest(policy, model_name, field_name, entity_id, original_filename),
            stream=io.BytesIO(content),
            content_type=content_type,
            original_filename=original_filename,
            extra=extra,
        )

    def open(self, ref: StoredObjectRef, *, start: int = 0, end: int | None = None) -> BinaryIO:
        """Open the referenced object for streaming reads; use it as a context manager.

        With ``start`` and/or ``end``, only the bytes ``[start:end]`` are read (``end`` exclusive,
        ``None`` for the end of the object), as slicing would: a range past the end is cut short. The
        backend fetches only that range where it can (an HTTP ``Range`` request, a seek).

        Raises:
            ObjectNotFoundError: the object does not exist (also a ``FileNotFoundError``).
            ValueError: ``start`` is negative or ``end`` is before ``start``.
            InvalidKeyError: the reference's location is unsafe or outside its slot's prefix (e.g.
                tampered with in the database).
            InvalidReferenceError: the reference names a backend none of its slot's locations use, or
                a row that could not be loaded (:class:`~granite_storage.InvalidStoredObjectRef`).
            ConfigurationError: the reference names a slot this manager does not have.
        """
        check_range(start, end)
        backend, key = self._locate(ref)
        if start == 0 and end is None:
            return backend.open(key)
        return backend.open_range(key, start, end)

    def url(
        self,
        ref: StoredObjectRef,
        *,
        expires_in: timedelta = timedelta(hours=1),
        filename: str | None = None,
        disposition: Literal["attachment", "inline"] = "attachment",
    ) -> str:
        """A URL that downloads the referenced object until ``expires_in`` has passed (a presigned URL).

        The download is served with the reference's content type, parsed again
        (``application/octet-stream`` when it is missing or does not parse: a reference is data,
        perhaps edited) and a ``Content-Disposition`` that offers ``filename`` (by default the
        reference's original filename; ``""`` offers none), encoded for any Unicode name and cut to a
        bounded length. ``disposition="inline"`` is granted to passive types only (see
        :func:`granite_storage.headers.download_headers`); everything else is an attachment.
        Anyone holding the URL can download the object until it expires: hand it only to whoever
        may read the object.

        Raises:
            UnsupportedOperationError: the slot's backend cannot hand out URLs (the local backend
                cannot; serve the object with :meth:`open` instead). Also a ``NotImplementedError``.
            ValueError: ``expires_in`` is not positive, or longer than the backend allows.
        """
        if not isinstance(expires_in, timedelta) or expires_in <= timedelta(0):
            raise ValueError(f"expires_in must be a positive timedelta, got {expires_in!r}")
        backend, key = self._locate(ref)
        headers = download_headers(
            ref.content_type,
            filename=ref.original_filename if filename is None else filename,
            disposition=disposition,
        )
        return backend.url(
            key,
            expires_in=expires_in,
            content_type=headers["Content-Type"],
            content_disposition=headers["Content-Disposition"],
        )

    def verify(self, ref: StoredObjectRef) -> bool:
        """Whether the stored object still matches the reference's size and sha256 checksum.

        The object is read in full, in chunks (memory stays flat), and its checksum computed afresh:
        this finds an object that was truncated, replaced or corrupted after it was stored. It never
        answers ``True`` without having compared a sha256.

        Raises:
            ObjectNotFoundError: the object does not exist (also a ``FileNotFoundError``).
            UnverifiableReferenceError: the reference carries no sha256 checksum to compare with
                (``None``, ``""`` as 0.1.0 allowed, another algorithm): the library cannot verify
                it. The object still reads. A subclass of ``InvalidReferenceError``.
            InvalidReferenceError, InvalidKeyError: the reference fails the checks of
                :meth:`location_of`.
        """
        self._resolve(ref)
        expected = ref.sha256
        if expected is None:
            raise UnverifiableReferenceError(
                f"cannot verify the object at {ref.location!r}: its reference has no sha256 checksum "
                f"to compare with (checksum: {ref.checksum!r})"
            )
        digest, size = hashlib.sha256(), 0
        with self.open(ref) as stream:
            while chunk := stream.read(DEFAULT_CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
        matches = size == ref.size and hmac.compare_digest(digest.hexdigest(), expected)
        if not matches:
            logger.warning(
                "stored object %s in %r does not match its reference (%d bytes, sha256 %s; expected "
                "%d bytes, sha256 %s)",
                ref.location,
                ref.backend,
                size,
                digest.hexdigest(),
                ref.size,
                expected,
            )
        return matches

    def get(self, ref: StoredObjectRef) -> bytes:
        """Return the referenced object's content.

        Raises:
            ObjectNotFoundError: the object does not exist (also a ``FileNotFoundError``).
        """
        backend, key = self._locate(ref)
        return backend.get(key)

    def stat(self, ref: StoredObjectRef) -> ObjectInfo:
        """The referenced object's size and modification time, as its backend reports them.

        Raises:
            ObjectNotFoundError: the object does not exist (also a ``FileNotFoundError``).
        """
        backend, key = self._locate(ref)
        return backend.stat(key)

    def exists(self, ref: StoredObjectRef) -> bool:
        """Whether the referenced object exists."""
        backend, key = self._locate(ref)
        return backend.exists(key)

    def delete(self, ref: StoredObjectRef) -> None:
        """Delete the referenced object; deleting a missing object is not an error."""
        backend, key = self._locate(ref)
        backend.delete(key)
        logger.debug("deleted %s from %r", key, ref.backend)

    def _store(
        self,
        request: ObjectKeyRequest,
        *,
        stream: Readable,
        content_type: str | None,
        original_filename: str | None,
        extra: Mapping[str, Any] | None,
    ) -> StoredObjectRef:
        policy = request.policy
        backend = self.backend(policy.backend_key)
        key = self._plugins.object_key(request)  # first: a refused key has read nothing
        declared = None if content_type is None else parse_content_type(content_type)
        source: Readable = SizeLimitedStream(stream, policy.max_size)
        if policy.allowed_types is None:
            content_type = str(declared) if declared is not None else _guessed_type(original_filename)
        else:
            # The type is read from the content, before the backend is touched: a refusal leaves
            # nothing behind. The head read goes to the backend first, then the rest of the stream.
            head = read_head(source)
            content_type = checked_content_type(
                head,
                allowed_types=tuple(policy.allowed_types),
                declared=declared,
                filename=original_filename,
            )
            source = HeadThenRest(head, source)
        reader = HashingReader(source)
        try:
            backend.put(key, reader, content_type=content_type, original_filename=original_filename)
            unread = reader.read(1)
        except BaseException:
            # Backends publish nothing on failure; deleting the fresh, random key anyway keeps that
            # true for one that breaks the contract, and for the stream failing after put returned.
            _discard(backend, key)
            raise
        if unread:
            _discard(backend, key)
            raise IncompleteUploadError(
                f"backend {policy.backend_key!r} returned before reading the whole stream; "
                f"the partial object at {key!r} was deleted"
            )
        logger.debug("stored %s (%d bytes) in %r", key, reader.size, policy.storage_key)
        return StoredObjectRef(
            storage_key=policy.storage_key,
            backend=policy.backend_key,
            location=key,
            size=reader.size,
            checksum=reader.checksum,
            content_type=content_type,
            original_filename=original_filename,
            created_at=datetime.now(UTC),
            extra=extra or {},
        )

    def _locate(self, ref: StoredObjectRef) -> tuple[StorageBackend, str]:
        """Validate a reference (it may come from a tampered row) and find its backend and key."""
        location, key = self._resolve(ref)
        return self.backend(location.backend), key

    def _resolve(self, ref: StoredObjectRef) -> tuple[StorageLocation, str]:
        if not isinstance(ref, StoredObjectRef):
            raise TypeError(f"expected a StoredObjectRef, got {type(ref).__name__}")
        if isinstance(ref, InvalidStoredObjectRef):  # a row that could not be loaded
            raise ref.error
        key = validate_key(ref.location)
        policy = self.policy(ref.storage_key)
        backend = self._backend_of(ref, key, policy)
        prefixes = []
        for location in policy.locations:
            if location.backend == backend:
                assert location.prefix is not None, "policy.locations resolves every prefix"
                if is_within_prefix(key, location.prefix):
                    return location, key
                prefixes.append(location.prefix)
        if backend == policy.backend_key and policy.key_prefix is None:
            legacy = self._legacy_location(policy, key)
            if legacy is not None:
                return legacy, key
        listed = " or ".join(repr(prefix) for prefix in prefixes)
        raise InvalidKeyError(
            key,
            f"it lies outside the prefix {listed} of storage key {ref.storage_key!r} in backend {backend!r}",
        )

    def _backend_of(self, ref: StoredObjectRef, key: str, policy: StoragePolicy) -> str:
        """The name of the backend, among the slot's locations', that ``ref`` names.

        A reference written by granite-storage 0.1.0 names its backend's type (``"local"``,
        ``"s3"``), not the name the manager configured it under: when the name is no configured
        backend, it stands for the one backend of that type among the slot's locations.
        """
        names = sorted({location.backend for location in policy.locations})
        if ref.backend in names:
            return ref.backend
        if ref.backend not in self._backends:
            typed = [name for name in names if self._type_name(name) == ref.backend]
            if len(typed) == 1:
                return typed[0]
            if typed:
                raise InvalidReferenceError(
                    f"reference to {key!r} names the backend type {ref.backend!r}, and storage key "
                    f"{ref.storage_key!r} has several backends of that type ({typed}); it cannot "
                    "tell which holds the object"
                )
        where = repr(policy.backend_key) + (f" (previously also {names})" if len(names) > 1 else "")
        raise InvalidReferenceError(
            f"reference to {key!r} names backend {ref.backend!r}, but storage key "
            f"{ref.storage_key!r} is stored in {where}"
        )

    def _type_name(self, backend_name: str) -> str | None:
        if backend_name not in self._type_names:
            self._type_names[backend_name] = self._plugins.type_name_of(self.backend(backend_name))
        return self._type_names[backend_name]

    def _legacy_location(self, policy: StoragePolicy, key: str) -> StorageLocation | None:
        """The 0.1.0 area ``key`` lies in for ``policy`` (a slot without key_prefix), or ``None``.

        0.1.0 stored a slot without key_prefix at ``<model>/<entity>-<8 hex><.suffix>`` from the
        backend's root, every such slot of a backend in one shared root. Only exactly that shape is
        accepted, and only outside every other slot's namespace (current or previous locations) on
        the backend, so the area reaches no 0.2.0 object of another slot.
        """
        model, _, name = key.partition("/")
        if "/" in name or not _LEGACY_NAME.fullmatch(name):
            return None
        for other in self._policies.values():
            if other.storage_key == policy.storage_key:
                continue
            for location in other.locations:
                assert location.prefix is not None, "policy.locations resolves every prefix"
                if location.backend == policy.backend_key and prefixes_overlap(model, location.prefix):
                    raise InvalidKeyError(
                        key,
                        f"it lies in the namespace {location.prefix!r} of storage key "
                        f"{other.storage_key!r}, not in the 0.1.0 area of {policy.storage_key!r}",
                    )
        return StorageLocation(policy.backend_key, model)

    def _check_policy(self, policy: StoragePolicy) -> None:
        for location in policy.locations:
            self.backend(location.backend)
        if policy.allowed_types is not None:
            require_sniffer()
        for other in self._policies.values():
            if other.storage_key == policy.storage_key:
                continue
            if other.backend_key == policy.backend_key and prefixes_overlap(policy.prefix, other.prefix):
                raise ConfigurationError(
                    f"storage keys {other.storage_key!r} and {policy.storage_key!r} share backend "
                    f"{policy.backend_key!r} with overlapping key prefixes {other.prefix!r} and "
                    f"{policy.prefix!r}; give each slot a prefix of its own"
                )
            for first, second in ((policy, other), (other, policy)):
                for previous in first.locations[1:]:
                    assert previous.prefix is not None, "policy.locations resolves every prefix"
                    if previous.backend == second.backend_key and prefixes_overlap(
                        previous.prefix, second.prefix
                    ):
                        raise ConfigurationError(
                            f"a previous location of storage key {first.storage_key!r}, backend "
                            f"{previous.backend!r} prefix {previous.prefix!r}, overlaps the current "
                            f"location of storage key {second.storage_key!r} (prefix {second.prefix!r});"
                            " a row of one slot must never reach another slot's objects"
                        )


def _check_store_areas(backends: Mapping[str, StorageBackend]) -> None:
    """Refuse two backend names over one store area (see :meth:`StorageBackend.store_area`)."""
    areas = [(name, area) for name, backend in backends.items() if (area := backend.store_area())]
    for index, (name, (store, prefix)) in enumerate(areas):
        for other, (other_store, other_prefix) in areas[index + 1 :]:
            if store == other_store and prefixes_overlap(prefix, other_prefix):
                raise ConfigurationError(
                    f"backends {name!r} and {other!r} write into one store ({store}) under the "
                    f"equal or nested prefixes {prefix!r} and {other_prefix!r}: a slot of one could "
                    "reach, and garbage collection delete, the other's objects; give each backend a "
                    "root directory (or bucket prefix) of its own"
                )


def _not_a_backend(name: str, backend: object) -> str:
    """Why ``backend`` cannot be the backend ``name``: with what replaces 0.1.0's protocol if it is one."""
    message = f"backend {name!r} is {type(backend).__name__}, not a granite_storage.StorageBackend"
    if all(hasattr(backend, method) for method in _PROTOCOL_0_1_METHODS):
        message += (
            f"; it implements granite-storage 0.1.0's backend protocol (put_bytes, put_stream, "
            f"iter_locations, methods taking references), which 0.2.0 no longer calls: "
            f"{BACKEND_PROTOCOL_REPLACEMENT}"
        )
    return message


def _discard(backend: StorageBackend, key: str) -> None:
    """Delete what a failed upload may have left at ``key``; a failure here is logged, not raised."""
    try:
        backend.delete(key)
    except Exception as exc:
        # Usually the failure the upload itself raised (no credentials, no network), and usually
        # nothing was there: backends publish nothing on failure. Worth a line, not a traceback.
        logger.warning("could not delete %r after a failed upload: %s", key, exc)


def _guessed_type(original_filename: str | None) -> str | None:
    """The content type the filename's extension implies, else ``None``."""
    return mimetypes.guess_type(original_filename, strict=False)[0] if original_filename else None
