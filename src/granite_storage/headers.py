"""HTTP header values for serving stored objects, safe whatever filename an uploader chose."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal
from urllib.parse import quote

from granite_storage.errors import InvalidMetadataError

__all__ = [
    "MAX_ENCODED_FILENAME",
    "check_content_type",
    "content_disposition",
    "encode_filename",
    "shorten_filename",
]

#: The longest filename, percent-encoded, that :func:`shorten_filename` leaves (1 KiB): it fits S3's
#: 2 KiB of object metadata, and keeps a ``Content-Disposition`` header or a presigned URL bounded.
MAX_ENCODED_FILENAME = 1024

# What may stand inside the quoted ASCII fallback: printable ASCII less the quote and the backslash.
_UNQUOTABLE = re.compile(r'[^\x20-\x7e]|["\\]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# type "/" subtype [ parameters ]: RFC 6838 token characters, printable ASCII parameters, no CR/LF.
_MIME_NAME = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(rf"{_MIME_NAME}/{_MIME_NAME}([ \t]*;[\x20-\x7e]*)?")


def check_content_type(content_type: str) -> str:
    """``content_type`` without surrounding whitespace, if it is fit for a ``Content-Type`` header.

    That is ``type/subtype`` in RFC 6838 token characters, optionally followed by parameters in
    printable ASCII: no control character (CR and LF included) can get through.

    >>> check_content_type(" text/plain; charset=utf-8 ")
    'text/plain; charset=utf-8'

    Raises:
        InvalidMetadataError: ``content_type`` is not such a value.
    """
    value = content_type.strip()
    if not _CONTENT_TYPE.fullmatch(value):
        raise InvalidMetadataError(f"not a valid content type: {content_type!r}")
    return value


def content_disposition(
    filename: str | None, *, disposition: Literal["attachment", "inline"] = "attachment"
) -> str:
    r"""A ``Content-Disposition`` value that offers ``filename`` for the download (RFC 6266).

    The name goes in twice: as ``filename*=UTF-8''...`` (RFC 8187 percent-encoding, exact for any
    Unicode name) and as a plain ``filename="..."`` fallback for old clients, in which characters that
    cannot stand in a quoted ASCII string are replaced by ``_``. Only the last path component of
    ``filename`` is used, and control characters (CR and LF included) are dropped, so no filename can
    inject a header or a path; a very long name is cut by :func:`shorten_filename`, so the value stays
    under about 2 KiB. Without a usable filename the value is just the disposition.

    >>> content_disposition("Résumé 2024.pdf")
    'attachment; filename="Resume 2024.pdf"; filename*=UTF-8\'\'R%C3%A9sum%C3%A9%202024.pdf'
    """
    if disposition not in ("attachment", "inline"):
        raise ValueError(f"disposition must be 'attachment' or 'inline', got {disposition!r}")
    name = _CONTROL.sub("", re.split(r"[/\\]", filename or "")[-1]).strip()
    if not name or name in (".", ".."):
        return disposition
    name = shorten_filename(name)
    fallback = _ascii_fallback(name)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encode_filename(name)}"


def encode_filename(filename: str) -> str:
    """Percent-encode ``filename`` as UTF-8, leaving RFC 8187's ``attr-char`` as they are.

    For ASCII-only places such as object metadata; :func:`urllib.parse.unquote` turns the result back
    into ``filename``.
    """
    return quote(filename, safe="!#$&+^`|~-._", encoding="utf-8", errors="surrogatepass")


def shorten_filename(filename: str) -> str:
    """``filename``, cut so that :func:`encode_filename` of it is at most :data:`MAX_ENCODED_FILENAME`.

    Characters are dropped from the end of the name's stem, so an extension of up to 16 characters
    (``.pdf``) is kept; a name that fits is returned as it is.
    """
    if len(encode_filename(filename)) <= MAX_ENCODED_FILENAME:
        return filename
    stem, dot, extension = filename.rpartition(".")
    tail = dot + extension if dot and len(extension) <= 16 else ""
    budget = MAX_ENCODED_FILENAME - len(encode_filename(tail))
    kept = []
    for char in stem if tail else filename:
        budget -= len(encode_filename(char))
        if budget < 0:
            break
        kept.append(char)
    return "".join(kept) + tail


def _ascii_fallback(name: str) -> str:
    """``name`` in printable ASCII: accents dropped where that is all that differs, else ``_``."""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    return _UNQUOTABLE.sub("_", stripped)
