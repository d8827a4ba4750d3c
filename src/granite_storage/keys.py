"""Object keys: how they are built from caller values, and what makes one safe.

A key is a ``/``-separated relative path such as ``docs/document/file/9f/9f1c...e0.pdf``. Keys the
library builds come from sanitised segments, so no caller value (a model name, an entity id, a filename)
can change their shape. Keys that arrive from elsewhere (a database row, a backend call, a plugin's
:func:`~granite_storage.hookspecs.granite_storage_object_key`) are checked by :func:`validate_key` before
any backend acts on them.

Two layouts are built in, chosen per slot by the ``key_layout`` of its
:class:`~granite_storage.StoragePolicy`:

``"fanout"`` (the default, :func:`fanout_object_key`)
    ``<prefix>/<model>/<field>/<first 2 hex digits of the token>/<token><.ext>``: no entity id, so an
    object can be stored before its row has a primary key, and no directory per row, so that on local
    disk a new object creates no directory once the slot's 256 fan-out directories exist.
``"entity"`` (:func:`entity_object_key`)
    ``<prefix>/<model>/<entity id>/<field>/<token><.ext>``, granite-storage 0.2.0's first layout, for
    people who browse their buckets by row. Storing needs the entity id.

A key is just a key once written: a reference carries its whole key, so keys of any layout (0.1.0's
included) keep reading, deleting and being collected whatever the slot's layout is now.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from granite_storage.errors import InvalidKeyError, UnsavedEntityError

if TYPE_CHECKING:
    from granite_storage.policy import StoragePolicy

__all__ = [
    "FANOUT_DIGITS",
    "KEY_LAYOUTS",
    "MAX_KEY_LENGTH",
    "ObjectKeyRequest",
    "build_object_key",
    "entity_object_key",
    "fanout_object_key",
    "fold_key",
    "is_within_prefix",
    "new_token",
    "prefixes_overlap",
    "safe_extension",
    "sanitize_segment",
    "validate_key",
]

#: The longest key accepted, in UTF-8 bytes (S3's limit, and well inside every file system's).
MAX_KEY_LENGTH = 1024
_SEGMENT_LENGTH = 64
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSION = re.compile(r"[a-z0-9]{1,16}")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN_BYTES = 16  # 128 random bits per object
#: How many leading hex digits of the token name the fan-out directory of the ``"fanout"`` layout:
#: 2 digits, 256 directories per slot field (10 million objects leave about 39,000 in each).
FANOUT_DIGITS = 2
#: Every built-in key layout's name, the default (``"fanout"``) first: the values of a policy's
#: ``key_layout``.
KEY_LAYOUTS: tuple[str, ...] = ("fanout", "entity")
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{number}" for port in ("COM", "LPT") for number in range(1, 10)]
)


def validate_key(key: object) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidKeyError`.

    A safe key is a non-empty string of valid Unicode (no lone surrogate) of at most
    :data:`MAX_KEY_LENGTH` UTF-8 bytes, made of ``/``-separated segments, none of them empty or
    starting with a dot (so no ``.``, ``..`` or hidden names, which backends may use for their own
    bookkeeping), with no leading ``/``, no backslash, no colon and no control character (NUL
    included). Joined to a root directory, such a key cannot name anything outside it. Keys built
    by :func:`build_object_key` always pass.
    """
    if not isinstance(key, str):
        # Imported here: references validate their locations with this module.
        from granite_storage.refs import StoredObjectRef

        if isinstance(key, StoredObjectRef):  # what a 0.1.0 backend method took
            raise InvalidKeyError(
                key,
                "keys are strings; backends take keys, not references, since 0.2.0: pass the "
                "reference to the StorageManager (get, open, delete), which checks it first",
            )
        raise InvalidKeyError(key, "keys are strings")
    if not key:
        raise InvalidKeyError(key, "keys are not empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKeyError(key, "keys are valid Unicode (no lone surrogate)") from None
    if len(encoded) > MAX_KEY_LENGTH:
        raise InvalidKeyError(key, f"keys are at most {MAX_KEY_LENGTH} bytes")
    if _CONTROL_CHARACTER.search(key):
        raise InvalidKeyError(key, "keys contain no control characters")
    if "\\" in key or ":" in key:
        raise InvalidKeyError(key, "keys contain no backslash or colon")
    if key.startswith("/"):
        raise InvalidKeyError(key, "keys are relative")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKeyError(key, "key segments are not empty")
        if segment.startswith("."):
            raise InvalidKeyError(key, "key segments do not start with '.'")
    return key


def sanitize_segment(value: object) -> str:
    """Turn any caller value into one safe key segment.

    Unicode is normalised (NFKC), every run of characters outside ``A-Z a-z 0-9 . _ -`` becomes ``_``,
    leading and trailing dots are dropped (no hidden files, no ``..``), the result is cut to 64
    characters, and a name Windows reserves for a device (``CON``, ``nul.txt``, ``COM1``) gets a
    leading ``_``. An empty result becomes ``_``. The mapping is deliberately lossy: keys are unique
    through their random token, not through these segments.
    """
    text = unicodedata.normalize("NFKC", str(value))
    text = _UNSAFE_RUN.sub("_", text)[:_SEGMENT_LENGTH].strip(".")
    if text.partition(".")[0].upper() in _WINDOWS_DEVICES:
        text = "_" + text[: _SEGMENT_LENGTH - 1]
    return text or "_"


def safe_extension(filename: str | None) -> str:
    """Return the lower-case extension of ``filename`` with its dot (``".jpg"``), or ``""``.

    Only the last component of the name counts, whatever separator it uses, and only an extension of
    1 to 16 ASCII letters and digits is kept; anything else yields ``""``.
    """
    if not filename:
        return ""
    name = re.split(r"[/\\]", filename)[-1]
    stem, dot, extension = name.rpartition(".")
    extension = extension.lower()
    if not dot or not stem.strip(".") or not _EXTENSION.fullmatch(extension):
        return ""
    return "." + extension


@dataclass(frozen=True, slots=True)
class ObjectKeyRequest:
    """What a key is asked for: the object about to be stored, and what it belongs to.

    The one value a key layout (:func:`~granite_storage.hookspecs.granite_storage_object_key`)
    receives. The values are as the caller gave them, not sanitised: a layout passes each through
    :func:`sanitize_segment` before it goes into a key.

    Attributes:
        policy: The policy of the slot the object goes to; the key must lie inside its
            :attr:`~granite_storage.StoragePolicy.prefix`.
        model_name: The model (table) the object belongs to, e.g. ``"document"``.
        field_name: The model's file field, e.g. ``"file"``.
        entity_id: The row's primary key as text, or ``None`` when it is not known yet (a new
            instance stored before its first flush).
        original_filename: The filename the uploader gave, or ``None``; layouts use at most its
            extension (:func:`safe_extension`).
    """

    policy: StoragePolicy
    model_name: str
    field_name: str
    entity_id: str | None = None
    original_filename: str | None = None

    @property
    def storage_key(self) -> str:
        """The slot's name, ``policy.storage_key``."""
        return self.policy.storage_key

    @property
    def prefix(self) -> str:
        """The slot's key prefix, ``policy.prefix``: every key for this request lies inside it."""
        return self.policy.prefix


def new_token(original_filename: str | None = None) -> str:
    """A fresh object name: 32 lower-case hex digits (128 random bits) and the filename's extension."""
    return secrets.token_hex(_TOKEN_BYTES) + safe_extension(original_filename)


def fanout_object_key(request: ObjectKeyRequest) -> str:
    """The default layout: ``<prefix>/<model>/<field>/<tt>/<token><.ext>``, ``tt`` the token's first digits.

    Needs no entity id. The fan-out level (:data:`FANOUT_DIGITS` hex digits, 256 directories) keeps
    every directory of a local backend under about 40,000 entries at 10 million objects per slot field,
    and is made once: in steady state a new object creates no directory.
    """
    model, field = sanitize_segment(request.model_name), sanitize_segment(request.field_name)
    token = new_token(request.original_filename)
    return validate_key("/".join([request.prefix, model, field, token[:FANOUT_DIGITS], token]))


def entity_object_key(request: ObjectKeyRequest) -> str:
    """The opt-in ``"entity"`` layout: ``<prefix>/<model>/<entity id>/<field>/<token><.ext>``.

    Raises:
        UnsavedEntityError: the request has no entity id (an instance stored before it was flushed).
    """
    if request.entity_id is None:
        raise UnsavedEntityError(
            f"storage key {request.storage_key!r} uses the 'entity' key layout, whose keys hold the "
            f"entity id, and this {request.model_name} has no primary key yet: add it to a session "
            "and flush() before storing its content (or use the default 'fanout' layout)"
        )
    return build_object_key(
        request.prefix,
        model_name=request.model_name,
        entity_id=request.entity_id,
        field_name=request.field_name,
        original_filename=request.original_filename,
    )


def build_object_key(
    prefix: str,
    *,
    model_name: str,
    entity_id: str,
    field_name: str,
    original_filename: str | None = None,
) -> str:
    """Build a fresh, unique key ``prefix/model/entity/field/<token><.ext>`` inside ``prefix``.

    The ``"entity"`` layout (:func:`entity_object_key`), from its parts. ``prefix`` must already be
    a valid key (policies validate theirs); every other part is sanitised with
    :func:`sanitize_segment`, and the token carries 128 random bits.
    """
    validate_key(prefix)
    segments = [sanitize_segment(part) for part in (model_name, entity_id, field_name)]
    return validate_key("/".join([prefix, *segments, new_token(original_filename)]))


def is_within_prefix(key: str, prefix: str) -> bool:
    """Whether ``key`` lies under ``prefix`` as whole path segments (``docs`` never matches ``docs2/x``)."""
    return not prefix or key.startswith(prefix.rstrip("/") + "/")


def fold_key(key: str) -> str:
    """The form in which keys and prefixes are compared: Unicode-normalised (NFC) and case-folded.

    On some file systems (macOS, Windows) ``Docs`` and ``docs`` are one directory, and so are the NFC
    and NFD spellings of ``café``; two keys that fold alike may name one object.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", key).casefold())


def prefixes_overlap(first: str, second: str) -> bool:
    """Whether some key could lie under both prefixes: one equals or contains the other.

    Compared as :func:`fold_key` compares keys, regardless of letter case and Unicode normalisation.
    """
    first, second = fold_key(first), fold_key(second)
    return first == second or is_within_prefix(first, second) or is_within_prefix(second, first)
