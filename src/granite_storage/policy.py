"""Storage policies: what a slot accepts and where its objects go."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field

from granite_storage._sniffing import allowed_type_patterns
from granite_storage.errors import ConfigurationError, InvalidKeyError
from granite_storage.keys import KEY_LAYOUTS, sanitize_segment, validate_key
from granite_storage.streams import is_size_limit

__all__ = ["StorageLocation", "StoragePolicy", "parse_size"]

_MAX_PREFIX_BYTES = 512
_MAX_SEGMENT_BYTES = 255
_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True, slots=True)
class StorageLocation:
    """A place a slot's objects may live: a backend, by its name in the manager, and a key prefix in it.

    A slot has one current location, where new objects go (:attr:`StoragePolicy.location`), and may
    list previous ones (``StoragePolicy(previous_locations=...)``) where its existing references may
    still point: after a move from one backend or prefix to another, before or during a migration.

    Args:
        backend: The name of a backend configured in the manager (not its type).
        prefix: The key prefix inside that backend, one or more ``/``-separated segments (leading and
            trailing ``/`` are dropped). ``None`` means "the slot's own prefix", resolved by the policy
            that lists the location (:attr:`StoragePolicy.locations`).

    Raises:
        ConfigurationError: the backend name is empty, or the prefix is not a safe key prefix (the
            rules of ``key_prefix``).
    """

    backend: str
    prefix: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str) or not self.backend:
            raise ConfigurationError(
                f"StorageLocation.backend must be a non-empty backend name, got {self.backend!r}"
            )
        if self.prefix is not None:
            object.__setattr__(
                self, "prefix", _checked_prefix(self.prefix, f"location in {self.backend!r}", "prefix")
            )


@dataclass(frozen=True, slots=True)
class StoragePolicy:
    """The rules of one storage slot (``"avatars"``, ``"documents"``).

    Args:
        storage_key: The slot's name; models and calls refer to the slot by it.
        backend_key: The name of the manager's backend that stores this slot's objects.
        max_size: The largest object accepted, in bytes; ``None`` accepts any size. Exactly
            ``max_size`` bytes is accepted, one more is refused with
            :class:`~granite_storage.ContentTooLargeError`.
        key_prefix: The key namespace of the slot inside its backend, one or more ``/``-separated
            segments. When omitted the slot uses its own namespace, the sanitised ``storage_key``.
        delete_replaced: Delete an object once the database no longer points at it: when a model's
            reference to it is replaced or cleared, or its row is deleted, the object is deleted
            after the outermost commit (never before; a rollback keeps it). Takes effect in
            sessions with storage tracking (:func:`granite_storage.orm.track_storage`); calls
            can override it. Off by default: such objects stay in storage.
        previous_locations: Where the slot's existing references may still point besides its current
            location (:attr:`location`): the backend and prefix of an earlier configuration. Reads,
            URLs, checks and deletes of such references work as usual; new objects always go to the
            current location. A location without a prefix means the slot's own prefix in that
            backend. The manager refuses one that overlaps another slot's current location on the
            same backend.
        allowed_types: The media types the slot accepts (``["image/jpeg", "image/png"]``), where
            ``"image/*"`` accepts every image type; ``None``, the default, accepts any. With it, an
            upload's type is read from its first bytes (by libmagic, ``pip install
            "granite-storage[sniff]"``); content of another type, or of a type other than it was
            declared as, is refused with :class:`~granite_storage.ContentTypeNotAllowedError`
            before anything is stored, and the reference records the type read. Kept as a tuple of
            lower-case names, each type under its registered name (``image/jpg`` is
            ``image/jpeg``).
        key_layout: How new objects' keys are named (:mod:`granite_storage.keys`): ``"fanout"``,
            the default, ``<prefix>/<model>/<field>/<2 hex digits>/<token><.ext>``, which needs no
            entity id and makes no directory per row; or ``"entity"``,
            ``<prefix>/<model>/<entity id>/<field>/<token><.ext>``, for people who browse their
            buckets by row, which needs the entity id (a model instance must be flushed before its
            content is stored). A plugin's
            :func:`~granite_storage.hookspecs.granite_storage_object_key` can replace both. Only new
            keys follow it: existing references keep their keys.

    Raises:
        ConfigurationError: a value is invalid (empty names, a negative size, an unsafe prefix, an
            entry of ``allowed_types`` that is not a media type, an unknown ``key_layout``), or a
            previous location equals the current one or is listed twice.
    """

    storage_key: str
    # Positional up to key_prefix, in 0.1.0's order: StoragePolicy("avatars", "local", 2048, "av").
    backend_key: str
    max_size: int | None = None
    key_prefix: str | None = None
    _: KW_ONLY
    delete_replaced: bool = False
    previous_locations: Sequence[StorageLocation] = field(default=())
    allowed_types: Sequence[str] | None = None
    key_layout: str = "fanout"

    def __post_init__(self) -> None:
        for name in ("storage_key", "backend_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"StoragePolicy.{name} must be a non-empty string")
        if not isinstance(self.delete_replaced, bool):
            raise ConfigurationError(
                f"StoragePolicy.delete_replaced must be true or false, got {self.delete_replaced!r}"
            )
        if not is_size_limit(self.max_size):
            raise ConfigurationError(
                f"StoragePolicy.max_size must be a non-negative integer or None, got {self.max_size!r}"
            )
        if self.key_prefix is not None:
            object.__setattr__(
                self,
                "key_prefix",
                _checked_prefix(self.key_prefix, f"storage key {self.storage_key!r}", "key_prefix"),
            )
        if self.key_layout not in KEY_LAYOUTS:
            raise ConfigurationError(
                f"storage key {self.storage_key!r}: key_layout must be one of {list(KEY_LAYOUTS)}, "
                f"got {self.key_layout!r}"
            )
        self._check_previous_locations()
        if self.allowed_types is not None:
            try:
                allowed_types = allowed_type_patterns(self.allowed_types)
            except ConfigurationError as exc:
                raise ConfigurationError(f"storage key {self.storage_key!r}: {exc}") from None
            object.__setattr__(self, "allowed_types", allowed_types)

    def _check_previous_locations(self) -> None:
        previous = self.previous_locations
        if isinstance(previous, str | StorageLocation) or not isinstance(previous, Sequence):
            raise ConfigurationError(
                f"storage key {self.storage_key!r}: previous_locations must be a sequence of "
                f"StorageLocation, got {previous!r}"
            )
        previous = tuple(previous)
        object.__setattr__(self, "previous_locations", previous)
        seen = {self.location}
        for location in previous:
            if not isinstance(location, StorageLocation):
                raise ConfigurationError(
                    f"storage key {self.storage_key!r}: previous_locations holds {location!r}, "
                    "not a StorageLocation"
                )
            resolved = self._resolve(location)
            if resolved in seen:
                what = "the current location" if resolved == self.location else "listed twice"
                raise ConfigurationError(
                    f"storage key {self.storage_key!r}: previous location {resolved.backend!r} / "
                    f"{resolved.prefix!r} is {what}"
                )
            seen.add(resolved)

    @property
    def prefix(self) -> str:
        """The key prefix actually used, ``key_prefix`` or else the sanitised ``storage_key``."""
        return self.key_prefix or sanitize_segment(self.storage_key)

    @property
    def location(self) -> StorageLocation:
        """The slot's current location, ``StorageLocation(backend_key, prefix)``; new objects go there."""
        return StorageLocation(self.backend_key, self.prefix)

    @property
    def locations(self) -> tuple[StorageLocation, ...]:
        """Every location of the slot, current first, then the previous ones with prefixes resolved."""
        return (self.location, *(self._resolve(location) for location in self.previous_locations))

    def _resolve(self, location: StorageLocation) -> StorageLocation:
        return location if location.prefix is not None else StorageLocation(location.backend, self.prefix)


def _checked_prefix(prefix: object, owner: str, name: str) -> str:
    """``prefix`` stripped of ``/``, if it is a safe key prefix of bounded length."""
    if not isinstance(prefix, str):
        raise ConfigurationError(f"{owner}: {name} must be a string, got {prefix!r}")
    stripped = prefix.strip("/")
    try:
        validate_key(stripped)
    except InvalidKeyError as exc:
        raise ConfigurationError(f"{owner}: {exc}") from exc
    # Leave room for the segments and token a built key adds (each at most 64 characters), and keep
    # every segment a valid file name (255 bytes) on common file systems.
    if len(stripped.encode()) > _MAX_PREFIX_BYTES or any(
        len(segment.encode()) > _MAX_SEGMENT_BYTES for segment in stripped.split("/")
    ):
        raise ConfigurationError(
            f"{owner}: {name} is longer than {_MAX_PREFIX_BYTES} bytes, or has a segment longer "
            f"than {_MAX_SEGMENT_BYTES}"
        )
    return stripped


def parse_size(value: int | str | None) -> int | None:
    """Parse a size from configuration: ``1048576``, ``"512KB"``, ``"10MB"``, ``"10 MiB"``, ``"1G"``.

    Units are binary whichever way they are spelled (``MB`` and ``MiB`` both mean 1024² bytes, as in
    nginx and Spring), so ``"10MB"`` is the ``10 * 1024 * 1024`` used throughout the docs. ``None``
    means unlimited.

    Raises:
        ConfigurationError: the value is not a size.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigurationError(f"a size cannot be negative: {value!r}")
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigurationError(
            f"not a size: {value!r} (use bytes as an integer, or e.g. '512KB', '10MB', '1GiB')"
        )
    number, unit = match.groups()
    return int(number) * _UNITS[(unit or "").lower()]
