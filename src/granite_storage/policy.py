"""Storage policies: what a slot accepts and where its objects go."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass

from granite_storage._sniffing import allowed_type_patterns
from granite_storage.errors import ConfigurationError, InvalidKeyError
from granite_storage.keys import sanitize_segment, validate_key
from granite_storage.streams import is_size_limit

__all__ = ["StoragePolicy", "parse_size"]

_MAX_PREFIX_BYTES = 512
_MAX_SEGMENT_BYTES = 255
_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


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
        allowed_types: The media types the slot accepts (``["image/jpeg", "image/png"]``), where
            ``"image/*"`` accepts every image type; ``None``, the default, accepts any. With it, an
            upload's type is read from its first bytes (by libmagic, ``pip install
            "granite-storage[sniff]"``); content of another type, or of a type other than it was
            declared as, is refused with :class:`~granite_storage.ContentTypeNotAllowedError`
            before anything is stored, and the reference records the type read. Kept as a tuple of
            lower-case names, each type under its registered name (``image/jpg`` is
            ``image/jpeg``).

    Raises:
        ConfigurationError: a value is invalid (empty names, a negative size, an unsafe prefix, an
            entry of ``allowed_types`` that is not a media type).
    """

    storage_key: str
    _: KW_ONLY
    backend_key: str
    max_size: int | None = None
    key_prefix: str | None = None
    delete_replaced: bool = False
    allowed_types: Sequence[str] | None = None

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
            if not isinstance(self.key_prefix, str):
                raise ConfigurationError(
                    f"storage key {self.storage_key!r}: key_prefix must be a string, got {self.key_prefix!r}"
                )
            prefix = self.key_prefix.strip("/")
            try:
                validate_key(prefix)
            except InvalidKeyError as exc:
                raise ConfigurationError(f"storage key {self.storage_key!r}: {exc}") from exc
            # Leave room for the segments and token a built key adds (each at most 64 characters),
            # and keep every segment a valid file name (255 bytes) on common file systems.
            if len(prefix.encode()) > _MAX_PREFIX_BYTES or any(
                len(segment.encode()) > _MAX_SEGMENT_BYTES for segment in prefix.split("/")
            ):
                raise ConfigurationError(
                    f"storage key {self.storage_key!r}: key_prefix is longer than "
                    f"{_MAX_PREFIX_BYTES} bytes, or has a segment longer than {_MAX_SEGMENT_BYTES}"
                )
            object.__setattr__(self, "key_prefix", prefix)
        if self.allowed_types is not None:
            try:
                allowed_types = allowed_type_patterns(self.allowed_types)
            except ConfigurationError as exc:
                raise ConfigurationError(f"storage key {self.storage_key!r}: {exc}") from None
            object.__setattr__(self, "allowed_types", allowed_types)

    @property
    def prefix(self) -> str:
        """The key prefix actually used, ``key_prefix`` or else the sanitised ``storage_key``."""
        return self.key_prefix or sanitize_segment(self.storage_key)


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
