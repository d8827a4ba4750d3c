"""The reference a database row keeps for a stored object."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from granite_storage.errors import InvalidReferenceError

__all__ = ["StoredObjectRef"]

_CHECKSUM = re.compile(r"^[a-z0-9]+:[0-9a-f]+$")


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
        checksum: ``"sha256:<hex>"`` of the content, computed while it was stored.
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
        if self.checksum is not None and not _CHECKSUM.match(self.checksum):
            raise InvalidReferenceError(f"checksum must look like 'sha256:<hex>', got {self.checksum!r}")
        # 0.1.0 and hand-written data may carry naive timestamps; they were always UTC.
        created_at = self.created_at
        created_at = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at
        object.__setattr__(self, "created_at", created_at.astimezone(UTC))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def sha256(self) -> str | None:
        """The hex sha256 digest of the content, or ``None`` if the checksum is of another kind."""
        if self.checksum is None or not self.checksum.startswith("sha256:"):
            return None
        return self.checksum.removeprefix("sha256:")

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
        """Build a reference from its JSON form.

        Unknown keys are ignored (a newer release may add some); missing optional keys become
        ``None`` (``extra`` an empty mapping, ``created_at`` the Unix epoch, so that such an object
        never looks young).

        Raises:
            InvalidReferenceError: a required key is missing or a value has the wrong type.
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
        extra = data.get("extra") or {}
        if not isinstance(extra, Mapping):
            raise InvalidReferenceError(f"'extra' must be a JSON object, got {extra!r}")
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


def _require_str(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise InvalidReferenceError(f"{name!r} must be a non-empty string, got {value!r}")
    return value


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidReferenceError(f"{name!r} must be a string or null, got {value!r}")
    return value


def _parse_created_at(value: object) -> datetime:
    if value is None:
        # Tolerated for hand-written rows; the epoch makes the garbage collector treat them as old.
        return datetime.fromtimestamp(0, UTC)
    if not isinstance(value, str):
        raise InvalidReferenceError(f"'created_at' must be an ISO-8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidReferenceError(f"'created_at' is not ISO-8601: {value!r}") from exc
    return parsed
