"""The storage manager: one entry point that routes every slot to its backend under its policy."""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import mimetypes
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, BinaryIO, Literal

from granite_storage._sniffing import HeadThenRest, checked_content_type, read_head, require_sniffer
from granite_storage.backend import ObjectInfo, StorageBackend, check_range
from granite_storage.config import ConfigSource, build_backends, build_policies, read_config
from granite_storage.errors import (
    ConfigurationError,
    ContentTooLargeError,
    IncompleteUploadError,
    InvalidKeyError,
    InvalidReferenceError,
)
from granite_storage.headers import download_headers, parse_content_type
from granite_storage.keys import build_object_key, is_within_prefix, prefixes_overlap, validate_key
from granite_storage.plugins import PluginHost, default_plugin_host
from granite_storage.policy import StoragePolicy
from granite_storage.refs import StoredObjectRef
from granite_storage.streams import DEFAULT_CHUNK_SIZE, HashingReader, Readable, SizeLimitedStream

__all__ = ["StorageManager"]

logger = logging.getLogger(__name__)


class StorageManager:
    """Stores and retrieves objects for every storage slot, each under its :class:`StoragePolicy`.

    Application code names a slot (``storage_key``) and never a backend, so swapping local disk for S3
    is a configuration change. Building a manager discovers installed plugins (once per process).

    Every reference passed to :meth:`get`, :meth:`open`, :meth:`stat`, :meth:`exists`,
    :meth:`delete`, :meth:`url` or :meth:`verify` is checked first: its location must be a valid key
    inside the key prefix of its slot (else :class:`~granite_storage.InvalidKeyError`) and its backend
    the slot's backend (else :class:`~granite_storage.InvalidReferenceError`). A slot's prefix and
    backend are therefore part of its stored data: changing either for a slot that holds objects makes
    its existing references refused.

    Args:
        backends: Backend instances by name; policies refer to them by that name.
        policies: Policies by storage key (each key must equal its policy's ``storage_key``).
        plugins: The plugin host to use; by default the process-wide one, loaded from entry points.

    Raises:
        ConfigurationError: a policy names a backend that is not configured, a mapping key differs
            from its policy's ``storage_key``, or two slots on one backend share a key prefix.
    """

    def __init__(
        self,
        *,
        backends: Mapping[str, StorageBackend],
        policies: Mapping[str, StoragePolicy],
        plugins: PluginHost | None = None,
    ) -> None:
        self._plugins = plugins if plugins is not None else default_plugin_host()
        self._backends = MappingProxyType(dict(backends))
        self._policies = MappingProxyType(dict(policies))
        for name, backend in self._backends.items():
            if not isinstance(backend, StorageBackend):
                raise ConfigurationError(
                    f"backend {name!r} is {type(backend).__name__}, not a StorageBackend"
                )
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

    def put_stream(
        self,
        *,
        storage_key: str,
        model_name: str,
        entity_id: str,
        field_name: str,
        stream: Readable,
        content_type: str | None = None,
        original_filename: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> StoredObjectRef:
        """Stream ``stream`` into the slot ``storage_key`` and return its reference.

        The content is read once, in chunks: its size is enforced against the policy's ``max_size``
        and its sha256 computed on the way to the backend, so memory stays flat whatever its size. The
        key is built from sanitised ``model_name``, ``entity_id`` and ``field_name``, a random token
        and the extension of ``original_filename``; no caller value can move it out of the slot's
        prefix. ``content_type`` is stored normalised (see
        :func:`granite_storage.headers.parse_content_type`), or guessed from ``original_filename``
        when not given. In a slot with ``allowed_types``, the type is read from the content's first
        bytes instead, checked, and stored. ``extra`` is recorded on the reference as it is (it must
        be JSON-serialisable to live in a database row).

        Raises:
            ContentTooLargeError: the content passed ``max_size``; nothing was stored.
            InvalidMetadataError: ``content_type`` is not one valid media type; nothing was stored.
            ContentTypeNotAllowedError: the slot has ``allowed_types`` and the content's type is not
                among them, or is not the type declared (by ``content_type`` or the filename's
                extension); nothing was stored.
            ConfigurationError: ``storage_key`` has no policy.
            StorageError: the backend failed; nothing was stored.
        """
        return self._store(
            self.policy(storage_key),
            model_name=model_name,
            entity_id=entity_id,
            field_name=field_name,
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
        entity_id: str,
        field_name: str,
        content: bytes | bytearray | memoryview,
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
            policy,
            model_name=model_name,
            entity_id=entity_id,
            field_name=field_name,
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
            InvalidReferenceError: the reference names a backend other than its slot's.
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
        this finds an object that was truncated, replaced or corrupted after it was stored.

        Raises:
            ObjectNotFoundError: the object does not exist (also a ``FileNotFoundError``).
            InvalidReferenceError: the reference carries no sha256 checksum to compare with.
        """
        expected = ref.sha256
        if expected is None:
            raise InvalidReferenceError(
                f"the reference to {ref.location!r} has no sha256 checksum to verify against "
                f"(checksum: {ref.checksum!r})"
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
        policy: StoragePolicy,
        *,
        model_name: str,
        entity_id: str,
        field_name: str,
        stream: Readable,
        content_type: str | None,
        original_filename: str | None,
        extra: Mapping[str, Any] | None,
    ) -> StoredObjectRef:
        backend = self.backend(policy.backend_key)
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
        key = build_object_key(
            policy.prefix,
            model_name=model_name,
            entity_id=entity_id,
            field_name=field_name,
            original_filename=original_filename,
        )
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
        """Validate a reference (it may come from a tampered row) and find its backend.

        The location must be a valid key inside the prefix of the reference's own slot, in that slot's
        backend, so a row of one slot can never read or delete another slot's objects.
        """
        if not isinstance(ref, StoredObjectRef):
            raise TypeError(f"expected a StoredObjectRef, got {type(ref).__name__}")
        key = validate_key(ref.location)
        policy = self.policy(ref.storage_key)
        if ref.backend != policy.backend_key:
            raise InvalidReferenceError(
                f"reference to {key!r} names backend {ref.backend!r}, but storage key "
                f"{ref.storage_key!r} is stored in {policy.backend_key!r}"
            )
        if not is_within_prefix(key, policy.prefix):
            raise InvalidKeyError(
                key, f"it lies outside the prefix {policy.prefix!r} of storage key {ref.storage_key!r}"
            )
        return self.backend(ref.backend), key

    def _check_policy(self, policy: StoragePolicy) -> None:
        self.backend(policy.backend_key)
        if policy.allowed_types is not None:
            require_sniffer()
        for other in self._policies.values():
            if other.storage_key == policy.storage_key or other.backend_key != policy.backend_key:
                continue
            if prefixes_overlap(policy.prefix, other.prefix):
                raise ConfigurationError(
                    f"storage keys {other.storage_key!r} and {policy.storage_key!r} share backend "
                    f"{policy.backend_key!r} with overlapping key prefixes {other.prefix!r} and "
                    f"{policy.prefix!r}; give each slot a prefix of its own"
                )


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
