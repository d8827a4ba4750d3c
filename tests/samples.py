"""Small files of the common upload types, built in code, as a sniffer sees them (their first bytes)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
SCRIPT = "document.cookie = 'script_ran=1; path=/'; localStorage.setItem('script_ran', location.pathname);"
HTML = f"<!doctype html><title>inert</title><script>{SCRIPT}</script>".encode()
SVG = f'<svg xmlns="http://www.w3.org/2000/svg"><script>{SCRIPT}</script></svg>'.encode()
TEXT = b"Shopping list\n- eggs\n- milk\n\nCall Bob at five.\n"


def png() -> bytes:
    """A 1x1 PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0\0\0\0")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def jpeg() -> bytes:
    """The start of a JFIF JPEG image: start of image, the JFIF header, end of image."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


def gif() -> bytes:
    """A 1x1 GIF image."""
    return bytes.fromhex(
        "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
    )


def webp() -> bytes:
    """A 1x1 lossless WebP image."""
    vp8l = bytes.fromhex("2f00000010071011118888fe0700")
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pdf() -> bytes:
    """A PDF document's start and end."""
    return (
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
        b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )


def mp4() -> bytes:
    """The boxes an MP4 video starts with (``ftyp``, then ``free`` and ``mdat``)."""

    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    return box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2avc1mp41") + box(b"free", b"") + box(b"mdat", bytes(64))


def docx() -> bytes:
    """A Word document: a ZIP archive whose first entries are those Word writes first."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.wordprocessingml.document.main+xml"/></Types>',
        )
        archive.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships/>')
        archive.writestr("word/document.xml", '<?xml version="1.0"?><w:document/>')
    return buffer.getvalue()


def zip_archive() -> bytes:
    """A plain ZIP archive of one text file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", TEXT)
    return buffer.getvalue()
