"""Byte ranges, URLs and verification through the manager, on the real local backend."""

from __future__ import annotations

import dataclasses
import io
from datetime import timedelta
from urllib.parse import unquote

import pytest

from granite_storage import (
    InvalidReferenceError,
    StorageBackend,
    StorageError,
    StorageManager,
    StoredObjectRef,
    UnsupportedOperationError,
)
from granite_storage.headers import (
    MAX_ENCODED_FILENAME,
    content_disposition,
    encode_filename,
    shorten_filename,
)
from granite_storage.streams import BoundedReader


def put(manager: StorageManager, content: bytes, filename: str | None = None) -> StoredObjectRef:
    return manager.put_bytes(
        storage_key="documents",
        model_name="doc",
        entity_id="1",
        field_name="file",
        content=content,
        original_filename=filename,
    )


def test_a_range_of_a_local_object_is_read_from_its_start(manager: StorageManager) -> None:
    ref = put(manager, bytes(range(256)) * 100)
    with manager.open(ref, start=300, end=310) as stream:
        assert stream.read() == (bytes(range(256)) * 100)[300:310]
    with manager.open(ref, start=25_590) as stream:
        assert stream.read() == bytes(range(246, 256))


def test_the_local_backend_has_no_urls_and_says_so(manager: StorageManager) -> None:
    ref = put(manager, b"x", "a.txt")
    with pytest.raises(UnsupportedOperationError, match="LocalStorageBackend cannot hand out URLs") as raised:
        manager.url(ref)
    assert isinstance(raised.value, NotImplementedError)
    assert isinstance(raised.value, StorageError)


def test_verify_needs_a_sha256_checksum(manager: StorageManager) -> None:
    ref = put(manager, b"content")
    assert manager.verify(ref)
    with pytest.raises(InvalidReferenceError, match="no sha256 checksum"):
        manager.verify(dataclasses.replace(ref, checksum=None))
    assert not manager.verify(dataclasses.replace(ref, size=ref.size + 1))


def test_the_default_range_of_a_backend_skips_to_start(local_backend: StorageBackend) -> None:
    local_backend.put("a/b.bin", io.BytesIO(b"0123456789"))
    with StorageBackend.open_range(local_backend, "a/b.bin", 3, 7) as stream:
        assert stream.read() == b"3456"
    with StorageBackend.open_range(local_backend, "a/b.bin", 20) as stream:
        assert stream.read() == b""


def test_a_bounded_reader_stops_at_its_length_and_closes_its_stream() -> None:
    inner = io.BytesIO(b"abcdef")
    with io.BufferedReader(BoundedReader(inner, 4)) as stream:
        assert stream.read(3) == b"abc"
        assert stream.read() == b"d"
    assert inner.closed
    with pytest.raises(ValueError, match="length"):
        BoundedReader(io.BytesIO(), -1)


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
        ("Résumé.pdf", "attachment; filename=\"Resume.pdf\"; filename*=UTF-8''R%C3%A9sum%C3%A9.pdf"),
        (
            'say "hi"\r\nX-Evil: 1.txt',
            'attachment; filename="say _hi_X-Evil: 1.txt"; '
            "filename*=UTF-8''say%20%22hi%22X-Evil%3A%201.txt",
        ),
        ("../../etc/passwd", "attachment; filename=\"passwd\"; filename*=UTF-8''passwd"),
        ("", "attachment"),
        (None, "attachment"),
    ],
)
def test_content_disposition_offers_any_filename_safely(filename: str | None, expected: str) -> None:
    assert content_disposition(filename) == expected


def test_an_encoded_filename_is_ascii_and_decodes_back() -> None:
    name = "Ünïcödé 日本 «quote» 100%.txt"
    encoded = encode_filename(name)
    assert encoded.isascii()
    assert unquote(encoded) == name


def test_a_very_long_filename_is_offered_cut_with_its_extension() -> None:
    value = content_disposition("dir/" + "é" * 3000 + ".pdf")
    encoded = value.split("filename*=UTF-8''")[1]
    assert len(encoded) <= MAX_ENCODED_FILENAME
    assert unquote(encoded).endswith("éé.pdf")
    assert len(value) < 2 * MAX_ENCODED_FILENAME + 100


@pytest.mark.parametrize("filename", ["a.txt", "é" * 3000 + ".pdf", "x" * 5000, "a." + "b" * 2000])
def test_shortening_a_filename_fits_it_and_is_stable(filename: str) -> None:
    short = shorten_filename(filename)
    assert len(encode_filename(short)) <= MAX_ENCODED_FILENAME
    assert shorten_filename(short) == short
    assert filename.startswith(short) or short.endswith(".pdf")


def test_url_refuses_a_non_positive_expiry(manager: StorageManager) -> None:
    ref = put(manager, b"x")
    with pytest.raises(ValueError, match="expires_in"):
        manager.url(ref, expires_in=timedelta(seconds=-1))
