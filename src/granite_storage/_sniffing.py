"""Content rules: the type of an upload read from its first bytes, checked before anything is stored.

A slot whose policy has ``allowed_types`` gets its content's type from libmagic (through
python-magic), not from the client. The manager reads :data:`SNIFF_BYTES` of the stream, decides with
:func:`checked_content_type`, and then stores the head and the rest of the stream as one
(:class:`HeadThenRest`), so memory stays flat whatever the content's size.
"""

from __future__ import annotations

import functools
import logging
import mimetypes
from collections.abc import Iterable
from typing import TYPE_CHECKING

from granite_storage.errors import ConfigurationError, ContentTypeNotAllowedError, InvalidMetadataError
from granite_storage.headers import OCTET_STREAM, MediaType, parse_content_type

if TYPE_CHECKING:
    from magic import Magic

    from granite_storage.streams import Readable

logger = logging.getLogger(__name__)

#: How much of an upload is read to tell its type: enough for libmagic to see inside the ZIP of an
#: office document (2 KiB is not, for a spreadsheet openpyxl writes), and a constant to hold.
SNIFF_BYTES = 64 * 1024

#: The pip command that installs what sniffing needs (besides the system's libmagic).
INSTALL_HINT = 'pip install "granite-storage[sniff]" (python-magic; libmagic itself is libmagic1 on Debian)'

# Other names of one type, as clients send them and as libmagic answers: each to the registered one.
_ALIASES = {
    "application/javascript": "text/javascript",
    "application/x-javascript": "text/javascript",
    "application/x-pdf": "application/pdf",
    "application/x-zip": "application/zip",
    "application/x-zip-compressed": "application/zip",
    "audio/mp3": "audio/mpeg",
    "audio/vnd.wave": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/x-flac": "audio/flac",
    "audio/x-m4a": "audio/mp4",
    "audio/x-wav": "audio/wav",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-bmp": "image/bmp",
    "image/x-icon": "image/vnd.microsoft.icon",
    "image/x-ms-bmp": "image/bmp",
    "image/x-png": "image/png",
    "text/xml": "application/xml",
}
# Container formats that are ZIP archives inside, besides the "+zip" types (application/epub+zip).
_ZIP_BASED_PREFIXES = (
    "application/vnd.openxmlformats-officedocument.",
    "application/vnd.oasis.opendocument.",
)
_ZIP_BASED = frozenset({"application/java-archive", "application/vnd.android.package-archive"})


def canonical_type(essence: str) -> str:
    """The registered name of the media type ``essence`` (``type/subtype``, lower case).

    Other spellings of one type are mapped to it (``image/jpg`` to ``image/jpeg``), and libmagic's
    guesses at the language of a text (``text/x-c``, ``text/x-shellscript``) to ``text/plain``: to a
    browser, and to the slot, such a text is plain text.
    """
    essence = _ALIASES.get(essence, essence)
    if essence.startswith("text/x-"):
        return "text/plain"
    return essence


def allowed_type_patterns(allowed_types: Iterable[str]) -> tuple[str, ...]:
    """``allowed_types`` normalised: canonical ``type/subtype`` or ``type/*``, without repeats.

    Raises:
        ConfigurationError: an entry is not a media type or a ``type/*`` pattern, has parameters,
            or is ``*/*``; or there is no entry (``None``, not an empty list, accepts any type).
    """
    if isinstance(allowed_types, str) or not isinstance(allowed_types, Iterable):
        raise ConfigurationError(
            f"allowed_types must be a list of media types such as ['image/png'], got {allowed_types!r}"
        )
    patterns: list[str] = []
    for entry in allowed_types:
        try:
            parsed = parse_content_type(entry) if isinstance(entry, str) else None
        except InvalidMetadataError:
            parsed = None
        if parsed is None or parsed.charset is not None or ";" in entry or parsed.type == "*":
            raise ConfigurationError(
                f"allowed_types: {entry!r} is not a media type ('image/png') or a pattern ('image/*')"
            )
        pattern = parsed.essence if parsed.subtype == "*" else canonical_type(parsed.essence)
        if pattern not in patterns:
            patterns.append(pattern)
    if not patterns:
        raise ConfigurationError(
            "allowed_types is empty, which would refuse every upload; None accepts any type"
        )
    return tuple(patterns)


def require_sniffer() -> None:
    """Check that content can be sniffed here.

    Raises:
        ConfigurationError: python-magic or the system's libmagic is missing; the message says what
            to install.
    """
    _magic()


def sniff(head: bytes) -> str:
    """The canonical media type (``type/subtype``) libmagic reads from the first bytes of a content.

    Where libmagic fails, or answers something that is not a media type, the content is
    ``application/octet-stream``: of no type a slot would list by accident.
    """
    magic = _magic()
    try:
        essence = parse_content_type(magic.from_buffer(head)).essence
    except Exception as exc:  # magic.MagicException, InvalidMetadataError: nothing to trust
        logger.warning("libmagic could not read the type of an upload: %s", exc)
        essence = OCTET_STREAM
    return canonical_type(essence)


def checked_content_type(
    head: bytes, *, allowed_types: tuple[str, ...], declared: MediaType | None, filename: str | None
) -> str:
    """The content type to store for content starting with ``head``, in a slot of ``allowed_types``.

    The type is read from ``head`` (:func:`sniff`). It must match one of ``allowed_types``, and agree
    with each claim made for the content: ``declared`` (its ``content_type``), and the type its
    ``filename``'s extension implies, if any (a name's extension decides how other programs treat a
    file). A claim agrees with the type read when it is the same type (under any of its names); when
    it is ``application/octet-stream``, which claims nothing; when the content reads as plain text and
    the claim is a ``text/`` type (libmagic cannot tell Markdown from plain text); when it reads as a
    ZIP archive and the claim is a format made of one (``.docx``, ``.odt``, ``.epub``); and when it
    reads as XML and the claim is an XML format (``+xml``). The type stored is the one read, with the
    ``charset`` of ``declared`` for a text.

    Raises:
        ContentTypeNotAllowedError: the content's type is not allowed, or a claim contradicts it.
    """
    sniffed = sniff(head)
    if not any(_matches(sniffed, pattern) for pattern in allowed_types):
        raise ContentTypeNotAllowedError(sniffed, allowed_types=allowed_types)
    claims = [] if declared is None else [(declared.essence, "it was declared as")]
    guessed = mimetypes.guess_type(filename, strict=False)[0] if filename else None
    if guessed is not None:
        claims.append((guessed.lower(), "its filename says"))
    for claim, said in claims:
        if not _agrees(canonical_type(claim), sniffed):
            raise ContentTypeNotAllowedError(
                sniffed,
                allowed_types=allowed_types,
                declared=claim,
                message=f"the content is {sniffed}, not the {claim} {said}",
            )
    type_, _, subtype = sniffed.partition("/")
    charset = declared.charset if declared is not None and type_ == "text" else None
    return str(MediaType(type_, subtype, charset))


def read_head(stream: Readable, size: int = SNIFF_BYTES) -> bytes:
    """Read up to ``size`` bytes from the start of ``stream``: fewer only at its end."""
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(bytes(chunk))
        remaining -= len(chunks[-1])
    return b"".join(chunks)


class HeadThenRest:
    """A readable that yields ``head`` (bytes already read from ``rest``), then the rest of ``rest``."""

    def __init__(self, head: bytes, rest: Readable) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        """Read up to ``size`` bytes (all that remain if negative); ``b""`` at end of file."""
        if not self._head:
            return self._rest.read(size)
        taken = len(self._head) if size < 0 else min(size, len(self._head))
        data = bytes(self._head[:taken])
        self._head = self._head[taken:]
        if size < 0 or taken < size:
            data += self._rest.read(-1 if size < 0 else size - taken)
        return data


def _matches(essence: str, pattern: str) -> bool:
    if pattern.endswith("/*"):
        return essence.startswith(pattern[:-1])
    return essence == pattern


def _agrees(claim: str, sniffed: str) -> bool:
    if claim in (sniffed, OCTET_STREAM):
        return True
    if sniffed == "text/plain":
        return claim.startswith("text/")
    if sniffed == "application/zip":
        return claim.endswith("+zip") or claim.startswith(_ZIP_BASED_PREFIXES) or claim in _ZIP_BASED
    if sniffed == "application/xml":
        return claim.endswith("+xml")
    return False


@functools.cache
def _magic() -> Magic:
    try:
        import magic

        return magic.Magic(mime=True)
    except (ImportError, AttributeError, OSError) as exc:
        # ImportError: python-magic or libmagic is missing. AttributeError: another package named
        # "magic" (libmagic's own binding, file-magic) is installed instead of python-magic.
        raise ConfigurationError(
            f"content rules (allowed_types) need python-magic and libmagic: {INSTALL_HINT} ({exc})"
        ) from exc
