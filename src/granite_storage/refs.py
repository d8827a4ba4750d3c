"""The reference a database row keeps for a stored object.

Loading is tolerant of what earlier releases and other programs wrote, and strict about what could do
harm. :meth:`StoredObjectRef.from_dict` accepts any ``checksum`` string (granite-storage 0.1.0 accepted
``""``; :attr:`StoredObjectRef.sha256` is then ``None`` and verifying says it cannot), any ``extra``
(``null`` or anything that is not a JSON object loads as an empty mapping) and unknown keys (ignored).
It refuses, with :class:`~granite_storage.InvalidReferenceError`, a location that is not a valid key
(``..``, an absolute path), a ``created_at`` that is not an ISO-8601 time or lies outside the years 1 to
9999 once in UTC, a lone surrogate in any string, and values of the wrong type. The column type
(:class:`~granite_storage.StoredObjectRefType`) turns such a row into an
:class:`InvalidStoredObjectRef` instead of raising, so one hostile row fails alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from granite_storage.errors import InvalidKeyError, InvalidReferenceError
from granite_storage.keys import validate_key

__all__ = ["InvalidStoredObjectRef", "StoredObjectRef"]

_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")
_EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True, slots=True)
class StoredObjectRef:
    """An immutable pointer to one stored object, small enough to live in a JSON column.

    The JSON form (:meth:`to_dict`) keeps the field names of granite-storage 0.1.0, so rows written by
    0.1.0 load unchanged.

    Attributes:
        storage_key: The slot (policy name) the object was stored under, e.g. ``"avatars"``.
        backend: The name of the backend, as configured in the manager, that holds the object.
        location: The object's key inside that backend.
        size: Size in bytes.
        checksum: ``"sha256:<hex>"`` of the content, computed while it was stored. Any other string
            (another algorithm, ``""`` as 0.1.0 allowed) is kept as it is, but cannot be verified:
            :attr:`sha256` is ``None``.
        content_type: MIME type given or guessed at upload, if any.
        original_filename: The filename the uploader gave, if any. Never used to build the key.
        created_at: When the object was stored (timezone-aware, UTC).
        extra: Backend- or application-specific facts, JSON-serialisable.
    """

    storage_key: str
    backend: str
    location: str
    size: int
    checksum: str | None = None
    content_type: str | None = None
    original_filename: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.size < 0:
            raise InvalidReferenceError(f"size must not be negative, got {self.size}")
        if self.checksum is not None and not isinstance(self.checksum, str):
            raise InvalidReferenceError(f"checksum must be a string or None, got {self.checksum!r}")
        object.__setattr__(self, "created_at", _in_utc(self.created_at))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def sha256(self) -> str | None:
        """The hex sha256 digest of the content, or ``None`` if the checksum is not ``sha256:<64 hex>``."""
        match = _SHA256.fullmatch(self.checksum or "")
        return match.group(1) if match else None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-serialisable form stored in the database (0.1.0 field names)."""
        return {
            "storage_key": self.storage_key,
            "backend": self.backend,
            "location": self.location,
            "size": self.size,
            "checksum": self.checksum,
            "content_type": self.content_type,
            "original_filename": self.original_filename,
            "created_at": self.created_at.astimezone(UTC).isoformat(),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoredObjectRef:
        """Build a reference from its JSON form, as any release wrote it (see the module's rules).

        Unknown keys are ignored (a newer release may add some); missing optional keys become
        ``None`` (``extra`` an empty mapping, ``created_at`` the Unix epoch, so that such an object
        never looks young). ``checksum`` may be any string; ``extra`` that is not a JSON object
        loads as an empty mapping.

        Raises:
            InvalidReferenceError: a required key is missing, a value has the wrong type, the location
                is not a valid key, ``created_at`` is not a time in range, or a string holds a lone
                surrogate.
        """
        if not isinstance(data, Mapping):
            raise InvalidReferenceError(
                f"a stored reference must be a JSON object, got {type(data).__name__}"
            )
        try:
            storage_key = _require_str(data, "storage_key")
            backend = _require_str(data, "backend")
            location = _require_str(data, "location")
            size = data["size"]
        except KeyError as exc:
            raise InvalidReferenceError(f"stored reference lacks {exc.args[0]!r}") from exc
        if isinstance(size, bool) or not isinstance(size, int):
            raise InvalidReferenceError(f"'size' must be an integer, got {size!r}")
        try:
            validate_key(location)
        except InvalidKeyError as exc:
            raise InvalidReferenceError(f"'location' is not a valid key: {exc}") from exc
        extra = data.get("extra")
        if not isinstance(extra, Mapping):
            extra = {}  # null as 0.1.0 wrote it, or something no release wrote: nothing to keep
        _check_text(extra, "extra")
        return cls(
            storage_key=storage_key,
            backend=backend,
            location=location,
            size=size,
            checksum=_optional_str(data, "checksum"),
            content_type=_optional_str(data, "content_type"),
            original_filename=_optional_str(data, "original_filename"),
            created_at=_parse_created_at(data.get("created_at")),
            extra=extra,
        )


@dataclass(frozen=True, slots=True, eq=False)
class InvalidStoredObjectRef(StoredObjectRef):
    """What a :class:`~granite_storage.StoredObjectRefType` column holds for a row it cannot load.

    Loading a row never raises, so that one hostile row (a location with ``..``, a ``created_at`` out
    of range, a lone surrogate) does not make ``select(Document)``, ``iter_model_storage_refs`` or
    the garbage collector fail for the whole table. Such a row loads as this value instead; every
    use of it by the manager (:meth:`StorageManager.get <granite_storage.StorageManager.get>`,
    ``open``, ``delete``, ``verify``, ``location_of``...) raises the
    :class:`~granite_storage.InvalidReferenceError` that loading it would have raised, and it cannot
    be written back to a row. Test for it with ``isinstance`` to find such rows.

    ``storage_key``, ``backend`` and ``location`` carry the row's values where they are strings
    without lone surrogates (else ``""``), so that the garbage collector can keep an object the row
    still names; ``size`` is 0 and ``created_at`` the Unix epoch.

    Attributes:
        data: The stored JSON, as the database driver returned it.
        reason: Why it cannot be loaded (the message of :attr:`error`).
    """

    data: Any = None
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", MappingProxyType({}))

    @classmethod
    def of(cls, data: Any, reason: str) -> InvalidStoredObjectRef:
        """The value standing for the stored JSON ``data``, which cannot be loaded because of ``reason``."""
        fields = data if isinstance(data, Mapping) else {}
        return cls(
            storage_key=_text_or_empty(fields.get("storage_key")),
            backend=_text_or_empty(fields.get("backend")),
            location=_text_or_empty(fields.get("location")),
            size=0,
            created_at=_EPOCH,
            data=data,
            reason=reason,
        )

    @property
    def error(self) -> InvalidReferenceError:
        """The error every use of this reference raises."""
        return InvalidReferenceError(f"the stored reference cannot be used: {self.reason}")

    def to_dict(self) -> dict[str, Any]:
        """Refuse: an unreadable reference is never written back to a row.

        Raises:
            InvalidReferenceError: always.
        """
        raise self.error


def _require_str(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise InvalidReferenceError(f"{name!r} must be a non-empty string, got {value!r}")
    _check_text(value, name)
    return value


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidReferenceError(f"{name!r} must be a string or null, got {value!r}")
    _check_text(value, name)
    return value


def _check_text(value: object, name: str) -> None:
    """Refuse a lone surrogate in ``value`` or any string inside it: it has no UTF-8 form."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidReferenceError(f"{name!r} holds a lone surrogate: {value!r}") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(key, name)
            _check_text(item, name)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_text(item, name)


def _text_or_empty(value: object) -> str:
    if not isinstance(value, str):
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return ""
    return value


def _in_utc(created_at: datetime) -> datetime:
    # 0.1.0 and hand-written data may carry naive timestamps; they were always UTC.
    created_at = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at
    try:
        return created_at.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 lies before the first instant a datetime holds
        raise InvalidReferenceError(
            f"'created_at' is out of range in UTC: {created_at.isoformat()}"
        ) from None


def _parse_created_at(value: object) -> datetime:
    if value is None:
        # Tolerated for hand-written rows; the epoch makes the garbage collector treat them as old.
        return _EPOCH
    if not isinstance(value, str):
        raise InvalidReferenceError(f"'created_at' must be an ISO-8601 string, got {value!r}")
    _check_text(value, "created_at")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidReferenceError(f"'created_at' is not ISO-8601: {value!r}") from exc
    return _in_utc(parsed)
