"""HTTP header values for serving stored objects, safe whatever an uploader chose.

Functions on header strings, free of any web framework: the content-type parser used at upload and
download (:func:`parse_content_type`), the allow-list of passive types that may be shown inline
(:data:`PASSIVE_TYPES`), the headers of a download (:func:`download_headers`) and the
``Content-Disposition`` value (:func:`content_disposition`).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from granite_storage.errors import InvalidMetadataError

__all__ = [
    "MAX_ENCODED_FILENAME",
    "OCTET_STREAM",
    "PASSIVE_TYPES",
    "MediaType",
    "check_content_type",
    "content_disposition",
    "download_headers",
    "encode_filename",
    "is_passive",
    "parse_content_type",
    "shorten_filename",
]

logger = logging.getLogger(__name__)

#: The longest filename, percent-encoded, that :func:`shorten_filename` leaves (1 KiB): it fits S3's
#: 2 KiB of object metadata, and keeps a ``Content-Disposition`` header or a presigned URL bounded.
MAX_ENCODED_FILENAME = 1024

#: The type a download is served as when its stored type is missing or cannot be parsed.
OCTET_STREAM = "application/octet-stream"

#: The media types a download may show inline, because a browser displays them in a viewer that runs
#: no script of the file's with the application's origin. They are raster images (not SVG, a document
#: that can run scripts), audio, video, PDF (browsers show it in a viewer isolated from the page's
#: origin) and plain text (shown as text, since downloads carry ``X-Content-Type-Options:
#: nosniff``). Every other type is served as an attachment, and so are other spellings of these
#: types (``image/jpg``).
PASSIVE_TYPES = frozenset(
    {
        "image/apng",
        "image/avif",
        "image/bmp",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/vnd.microsoft.icon",
        "image/webp",
        "audio/aac",
        "audio/flac",
        "audio/mp4",
        "audio/mpeg",
        "audio/ogg",
        "audio/wav",
        "audio/webm",
        "video/mp4",
        "video/ogg",
        "video/quicktime",
        "video/webm",
        "application/pdf",
        "text/plain",
    }
)

# What may stand inside the quoted ASCII fallback: printable ASCII less the quote and the backslash.
_UNQUOTABLE = re.compile(r'[^\x20-\x7e]|["\\]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 9110 5.6.2 token, 5.6.4 quoted-string (without obs-text: only ASCII is accepted), 5.6.3 OWS.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED_STRING = r'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e]|\\[\t\x20-\x7e])*"'
_MEDIA_TYPE = re.compile(rf"({_TCHARS})/({_TCHARS})")
# RFC 9110 8.3.1: parameters = *( OWS ";" OWS [ parameter ] ); a parameter is name=value.
_PARAMETER = re.compile(rf"[ \t]*;[ \t]*(?:({_TCHARS})=({_TCHARS}|{_QUOTED_STRING}))?")
_QUOTED_PAIR = re.compile(r"\\(.)")
# RFC 6838 4.2: type and subtype names are at most 127 characters.
_MAX_NAME = 127


@dataclass(frozen=True, slots=True)
class MediaType:
    """A parsed ``Content-Type``: its type and subtype in lower case, and its ``charset`` if it had one.

    ``str()`` of it is the normalised header value, ``type/subtype`` or ``type/subtype; charset=x``:
    what the library stores and serves.

    >>> str(parse_content_type('Text/HTML; Charset="UTF-8"; boundary=x'))
    'text/html; charset=utf-8'
    """

    type: str
    subtype: str
    charset: str | None = None

    @property
    def essence(self) -> str:
        """``type/subtype``, without parameters."""
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        return self.essence if self.charset is None else f"{self.essence}; charset={self.charset}"


def parse_content_type(content_type: str) -> MediaType:
    """Parse one media type as RFC 9110 (8.3.1) writes it: ``type/subtype``, then parameters.

    Spaces and tabs around the value and around each ``;`` are allowed, names are compared in lower
    case, and a quoted parameter value may hold escaped characters. Of the parameters only
    ``charset`` is kept (in lower case, unquoted: RFC 9110 8.3.2 makes it case-insensitive); the
    others (``boundary``, ``x=y``) are dropped, so what is kept reads the same to every client.

    Raises:
        InvalidMetadataError: ``content_type`` is not exactly one media type: a list
            (``image/png, text/html``), a quote that does not close, a control character (CR and LF
            included), a non-ASCII character, a name longer than 127 characters, two ``charset``
            parameters, or a ``charset`` that is not a token.
    """
    value = content_type.strip(" \t") if isinstance(content_type, str) else ""
    match = _MEDIA_TYPE.match(value)
    if match is None or max(len(match[1]), len(match[2])) > _MAX_NAME:
        raise _invalid(content_type)
    charsets = []
    position = match.end()
    while position < len(value):
        parameter = _PARAMETER.match(value, position)
        if parameter is None:
            raise _invalid(content_type)
        position = parameter.end()
        name, parameter_value = parameter.groups()
        if name is not None and name.lower() == "charset":
            charsets.append(_unquote(parameter_value))
    if len(charsets) > 1 or any(not re.fullmatch(_TCHARS, c) or len(c) > _MAX_NAME for c in charsets):
        raise _invalid(content_type)
    return MediaType(match[1].lower(), match[2].lower(), charsets[0].lower() if charsets else None)


def check_content_type(content_type: str) -> str:
    """``content_type`` parsed by :func:`parse_content_type` and written back normalised.

    >>> check_content_type(" Text/Plain;charset=UTF-8; format=flowed ")
    'text/plain; charset=utf-8'

    Raises:
        InvalidMetadataError: ``content_type`` is not one valid media type.
    """
    return str(parse_content_type(content_type))


def is_passive(content_type: str | None) -> bool:
    """Whether ``content_type`` parses to one of the :data:`PASSIVE_TYPES`, which may be shown inline."""
    try:
        return content_type is not None and parse_content_type(content_type).essence in PASSIVE_TYPES
    except InvalidMetadataError:
        return False


def download_headers(
    content_type: str | None,
    *,
    filename: str | None,
    disposition: Literal["attachment", "inline"] = "attachment",
) -> dict[str, str]:
    """The headers that serve stored content safely from the application's own origin.

    ``content_type`` is the stored type, which may be anything (a row written by an older release, or
    edited): it is parsed again, and a missing or unparseable one is served as
    :data:`OCTET_STREAM`. The result has

    * ``Content-Type``: the parsed type, normalised (``type/subtype``, with its ``charset``);
    * ``Content-Disposition``: ``disposition`` with ``filename`` (see :func:`content_disposition`),
      where ``inline`` is granted only to the :data:`PASSIVE_TYPES`: everything else is an
      ``attachment``;
    * ``X-Content-Type-Options: nosniff``, so no browser reads the bytes as another type;
    * ``Content-Security-Policy: sandbox`` for every type that is not passive, so that a document
      that can run scripts (HTML, SVG, XML) runs none with the application's origin even where a
      browser displays it after all.
    """
    media_type = _served_type(content_type)
    passive = media_type.essence in PASSIVE_TYPES
    headers = {
        "Content-Type": str(media_type),
        "Content-Disposition": content_disposition(
            filename, disposition=disposition if passive else "attachment"
        ),
        "X-Content-Type-Options": "nosniff",
    }
    if not passive:
        headers["Content-Security-Policy"] = "sandbox"
    return headers


def _served_type(content_type: str | None) -> MediaType:
    if content_type is not None:
        try:
            return parse_content_type(content_type)
        except InvalidMetadataError:
            logger.warning("serving the invalid stored content type %r as %s", content_type, OCTET_STREAM)
    return MediaType("application", "octet-stream")


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value


def _invalid(content_type: object) -> InvalidMetadataError:
    return InvalidMetadataError(
        f"not a valid content type: {content_type!r} (expected one type/subtype, optionally with "
        "parameters such as '; charset=utf-8')"
    )


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
