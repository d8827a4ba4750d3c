"""HTTP header values for serving stored objects, safe whatever filename an uploader chose."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal
from urllib.parse import quote

__all__ = ["content_disposition", "encode_filename"]

# What may stand inside the quoted ASCII fallback: printable ASCII less the quote and the backslash.
_UNQUOTABLE = re.compile(r'[^\x20-\x7e]|["\\]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def content_disposition(
    filename: str | None, *, disposition: Literal["attachment", "inline"] = "attachment"
) -> str:
    r"""A ``Content-Disposition`` value that offers ``filename`` for the download (RFC 6266).

    The name goes in twice: as ``filename*=UTF-8''...`` (RFC 8187 percent-encoding, exact for any
    Unicode name) and as a plain ``filename="..."`` fallback for old clients, in which characters that
    cannot stand in a quoted ASCII string are replaced by ``_``. Only the last path component of
    ``filename`` is used, and control characters (CR and LF included) are dropped, so no filename can
    inject a header or a path. Without a usable filename the value is just the disposition.

    >>> content_disposition("Résumé 2024.pdf")
    'attachment; filename="Resume 2024.pdf"; filename*=UTF-8\'\'R%C3%A9sum%C3%A9%202024.pdf'
    """
    if disposition not in ("attachment", "inline"):
        raise ValueError(f"disposition must be 'attachment' or 'inline', got {disposition!r}")
    name = _CONTROL.sub("", re.split(r"[/\\]", filename or "")[-1]).strip()
    if not name or name in (".", ".."):
        return disposition
    fallback = _ascii_fallback(name)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encode_filename(name)}"


def encode_filename(filename: str) -> str:
    """Percent-encode ``filename`` as UTF-8, leaving RFC 8187's ``attr-char`` as they are.

    For ASCII-only places such as object metadata; :func:`urllib.parse.unquote` turns the result back
    into ``filename``.
    """
    return quote(filename, safe="!#$&+^`|~-._", encoding="utf-8", errors="surrogatepass")


def _ascii_fallback(name: str) -> str:
    """``name`` in printable ASCII: accents dropped where that is all that differs, else ``_``."""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    return _UNQUOTABLE.sub("_", stripped)
