"""What the S3 backend does beyond the conformance suite, on moto and on a real S3 server."""

from __future__ import annotations

import base64
import dataclasses
import io
import mmap
import os
import secrets
import socket
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from granite_storage import (
    BackendUnavailableError,
    ConfigurationError,
    ContentTooLargeError,
    InvalidKeyError,
    ObjectNotFoundError,
    PluginHost,
    StorageError,
    StorageManager,
    StoragePermissionError,
    StoragePolicy,
    StoredObjectRef,
)
from granite_storage.headers import content_disposition
from granite_storage.testing import FailingStream
from granite_storage_s3 import S3StorageBackend
from granite_storage_s3.backend import MIN_PART_SIZE
from granite_storage_s3.testing import SESSION, S3Server, free_ports

MIB = 1024 * 1024


class ShortReads(io.RawIOBase):
    """A non-seekable stream of unknown length that returns at most 64 KiB per read, like a socket."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.remaining = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.remaining, 65_536)
        buffer[:count] = b"z" * count
        self.remaining -= count
        return count


class RepeatingBlock:
    """A non-seekable stream of ``size`` bytes of unknown length, read at most 1 MiB at a time."""

    BLOCK = os.urandom(MIB)

    def __init__(self, size: int) -> None:
        self.remaining = size

    def read(self, size: int = -1, /) -> bytes:
        count = min(size, self.remaining, MIB)
        self.remaining -= count
        return self.BLOCK if count == MIB else self.BLOCK[:count]


class OverlongReads:
    """A stream of ``content`` that returns up to 1000 bytes more than each ``read(n)`` asks for."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.position = 0

    def read(self, size: int = -1, /) -> bytes:
        end = len(self.content) if size < 0 else self.position + size + 1000
        chunk = self.content[self.position : end]
        self.position += len(chunk)
        return chunk


class NothingReadyYet:
    """A non-blocking stream: ``good_bytes`` of content, then ``None`` (no data ready) for ever."""

    def __init__(self, good_bytes: int) -> None:
        self.remaining = good_bytes

    def read(self, size: int = -1, /) -> bytes | None:
        count = min(size, self.remaining, 65_536)
        self.remaining -= count
        return b"n" * count if count else None


def traced_peak(action: Any) -> int:
    """The peak of the memory Python allocates (in any thread) while ``action()`` runs, in bytes."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class CountedMap(mmap.mmap):
    """An anonymous memory map that counts the bytes of all maps not closed yet, and their peak.

    tracemalloc does not see memory maps, which is where the S3 backend keeps whole parts; a map
    that is dropped without ``close()`` stays counted, as a leak should.
    """

    lock = threading.Lock()
    held = peak = 0

    def __new__(cls, fileno: int, length: int, *args: Any, **kwargs: Any) -> CountedMap:
        created = super().__new__(cls, fileno, length, *args, **kwargs)
        with cls.lock:
            cls.held += length
            cls.peak = max(cls.peak, cls.held)
        return created

    def close(self) -> None:
        if not self.closed:
            with self.lock:
                CountedMap.held -= len(self)
        super().close()


def parts_peak(monkeypatch: pytest.MonkeyPatch, action: Any) -> int:
    """The peak of the memory ``action()`` holds (in any thread): Python's allocations and memory maps."""
    monkeypatch.setattr(mmap, "mmap", CountedMap)
    CountedMap.held = CountedMap.peak = 0
    traced = traced_peak(action)
    assert CountedMap.held == 0, "a part's map was not released"
    return traced + CountedMap.peak


def built_backend(s3: S3Server, monkeypatch: pytest.MonkeyPatch, **options: Any) -> S3StorageBackend:
    """A backend on ``s3`` that builds its own client, with credentials from the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    options.setdefault("prefix", f"test-{secrets.token_hex(6)}")
    return S3StorageBackend(s3.bucket, endpoint_url=s3.endpoint_url, region_name=s3.region, **options)


def manager_on(backend: S3StorageBackend, max_size: int | None = None) -> StorageManager:
    return StorageManager(
        backends={"s3": backend},
        policies={"files": StoragePolicy("files", backend_key="s3", max_size=max_size)},
        plugins=PluginHost(disabled=()),
    )


def store(manager: StorageManager, stream: Any, filename: str | None = None) -> StoredObjectRef:
    return manager.put_stream(
        storage_key="files",
        model_name="doc",
        entity_id="1",
        field_name="file",
        stream=stream,
        original_filename=filename,
    )


@pytest.fixture
def calls() -> list[tuple[str, dict[str, Any]]]:
    """Every S3 operation a recording backend's client sends, with its parameters."""
    return []


def recording_backend(
    s3: S3Server, calls: list[tuple[str, dict[str, Any]]], **options: Any
) -> S3StorageBackend:
    backend = s3.backend(**options)
    lock = threading.Lock()

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        with lock:
            calls.append((model.name, dict(params)))

    backend.client.meta.events.register("provide-client-params.s3.*", record)
    return backend


def operations(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in calls]


def in_progress_uploads(s3: S3Server) -> list[str]:
    return [
        upload["Key"] for upload in s3.client().list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    ]


# -- uploads --------------------------------------------------------------------------------------


def test_a_small_object_goes_up_in_one_put(s3: S3Server, calls: list[tuple[str, dict[str, Any]]]) -> None:
    backend = recording_backend(s3, calls, part_size=MIN_PART_SIZE)
    store(manager_on(backend), ShortReads(MIN_PART_SIZE - 1))
    assert operations(calls) == ["PutObject"]


def test_a_stream_of_unknown_length_goes_up_in_full_parts_even_from_short_reads(
    s3: S3Server, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    backend = recording_backend(s3, calls, part_size=MIN_PART_SIZE, max_concurrency=2)
    ref = store(manager_on(backend), ShortReads(3 * MIN_PART_SIZE + 100))
    parts = sorted(
        (params["PartNumber"], len(params["Body"])) for name, params in calls if name == "UploadPart"
    )
    assert parts == [(1, MIN_PART_SIZE), (2, MIN_PART_SIZE), (3, MIN_PART_SIZE), (4, 100)]
    assert operations(calls)[0] == "CreateMultipartUpload"
    assert operations(calls)[-1] == "CompleteMultipartUpload"
    assert backend.stat(ref.location).size == 3 * MIN_PART_SIZE + 100
    assert in_progress_uploads(s3) == []


def test_content_of_exactly_one_part_goes_up_in_one_put(
    s3: S3Server, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    backend = recording_backend(s3, calls, part_size=MIN_PART_SIZE)
    ref = store(manager_on(backend), ShortReads(MIN_PART_SIZE))
    assert operations(calls) == ["PutObject"]
    assert backend.stat(ref.location).size == MIN_PART_SIZE


@pytest.mark.parametrize("max_concurrency", [1, 2, 4])
def test_an_upload_holds_at_most_max_concurrency_parts(
    real_s3: S3Server, monkeypatch: pytest.MonkeyPatch, max_concurrency: int
) -> None:
    # On the real server: moto, in this process, would keep every stored part in traced memory.
    part_size = 16 * MIB
    backend = real_s3.backend(part_size=part_size, max_concurrency=max_concurrency)
    backend.put("doc/warm.bin", RepeatingBlock(2 * part_size + 1))  # botocore loads what it needs
    peak = parts_peak(monkeypatch, lambda: backend.put("doc/big.bin", RepeatingBlock(12 * part_size)))
    assert peak >= part_size, "the parts were not counted"
    assert peak <= max(max_concurrency, 2) * part_size + 2 * MIB, peak / MIB
    assert backend.stat("doc/big.bin").size == 12 * part_size


def test_reads_longer_than_asked_for_are_carried_into_the_next_part(
    s3: S3Server, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    backend = recording_backend(s3, calls, part_size=MIN_PART_SIZE)
    content = os.urandom(2 * MIN_PART_SIZE + 123)
    backend.put("doc/long-reads.bin", OverlongReads(content))
    parts = sorted(
        (params["PartNumber"], len(params["Body"])) for name, params in calls if name == "UploadPart"
    )
    assert parts == [(1, MIN_PART_SIZE), (2, MIN_PART_SIZE), (3, 123)]
    assert backend.get("doc/long-reads.bin") == content


@pytest.mark.parametrize("good_bytes", [100, 2 * MIN_PART_SIZE + 100])
def test_a_non_blocking_stream_with_nothing_ready_is_refused_not_truncated(
    s3: S3Server, good_bytes: int
) -> None:
    backend = s3.backend(part_size=MIN_PART_SIZE)
    with pytest.raises(io.UnsupportedOperation, match="blocking stream"):
        backend.put("doc/partial.bin", NothingReadyYet(good_bytes))  # type: ignore[arg-type]
    assert list(backend.list()) == []
    assert in_progress_uploads(s3) == []


def test_a_small_upload_allocates_what_it_holds_not_a_whole_part(s3: S3Server) -> None:
    backend = s3.backend()  # 8 MiB parts
    backend.put("doc/warm.bin", io.BytesIO(b"warm"))  # botocore loads what it needs
    peak = traced_peak(lambda: backend.put("doc/small.bin", io.BytesIO(b"s" * 100)))
    assert peak < backend.part_size // 8, peak
    assert backend.get("doc/small.bin") == b"s" * 100


def test_passing_max_size_mid_stream_aborts_the_multipart_upload(
    s3: S3Server, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    backend = recording_backend(s3, calls, part_size=MIN_PART_SIZE)
    with pytest.raises(ContentTooLargeError):
        store(manager_on(backend, max_size=3 * MIN_PART_SIZE), ShortReads(5 * MIN_PART_SIZE))
    assert "CreateMultipartUpload" in operations(calls)
    assert "AbortMultipartUpload" in operations(calls)
    assert "CompleteMultipartUpload" not in operations(calls)
    assert list(backend.list()) == []
    assert in_progress_uploads(s3) == []


def test_a_source_failing_mid_stream_aborts_the_upload_and_keeps_the_old_object(s3: S3Server) -> None:
    backend = s3.backend(part_size=MIN_PART_SIZE)
    backend.put("doc/1.bin", io.BytesIO(b"previous"))
    with pytest.raises(OSError, match="connection reset"):
        backend.put("doc/1.bin", FailingStream(good_bytes=2 * MIN_PART_SIZE + 10))
    assert backend.get("doc/1.bin") == b"previous"
    assert [info.key for info in backend.list()] == ["doc/1.bin"]
    assert in_progress_uploads(s3) == []


def test_a_part_refused_by_the_server_aborts_the_upload(s3: S3Server) -> None:
    backend = s3.backend(part_size=MIN_PART_SIZE)

    def refuse_the_third_part(params: dict[str, Any], **_: Any) -> None:
        if params.get("PartNumber") == 3:
            raise EndpointConnectionError(endpoint_url="http://refused.invalid")

    backend.client.meta.events.register("provide-client-params.s3.UploadPart", refuse_the_third_part)
    with pytest.raises(BackendUnavailableError) as raised:
        backend.put("doc/2.bin", ShortReads(4 * MIN_PART_SIZE))
    assert isinstance(raised.value.__cause__, EndpointConnectionError)
    assert list(backend.list()) == []
    assert in_progress_uploads(s3) == []


def test_metadata_carries_content_type_and_any_original_filename(s3: S3Server) -> None:
    backend = s3.backend()
    name = "Résumé «final» 日本.pdf"
    ref = manager_on(backend).put_bytes(
        storage_key="files",
        model_name="doc",
        entity_id="1",
        field_name="file",
        content=b"%PDF-1.7",
        original_filename=name,
    )
    head = s3.client().head_object(Bucket=s3.bucket, Key=f"{backend.prefix}/{ref.location}")
    assert head["ContentType"] == "application/pdf"
    assert unquote(head["Metadata"]["original-filename"]) == name
    assert head["ContentDisposition"] == content_disposition(name)


def test_a_very_long_filename_is_cut_to_fit_the_metadata(s3: S3Server) -> None:
    backend = s3.backend()
    backend.put("doc/long.pdf", io.BytesIO(b"x"), original_filename="é" * 3000 + ".pdf")
    head = s3.client().head_object(Bucket=s3.bucket, Key=f"{backend.prefix}/doc/long.pdf")
    stored = head["Metadata"]["original-filename"]
    assert len(stored) <= 1024
    assert unquote(stored).endswith("éé.pdf")


# -- checksums ------------------------------------------------------------------------------------


def test_the_server_stores_the_same_sha256_as_the_reference(s3: S3Server) -> None:
    backend = s3.backend()
    content = os.urandom(100_000)
    ref = manager_on(backend).put_bytes(
        storage_key="files", model_name="doc", entity_id="1", field_name="file", content=content
    )
    head = s3.client().head_object(
        Bucket=s3.bucket, Key=f"{backend.prefix}/{ref.location}", ChecksumMode="ENABLED"
    )
    assert ref.sha256 is not None
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == ref.sha256


def test_every_part_carries_a_sha256_checksum(s3: S3Server, calls: list[tuple[str, dict[str, Any]]]) -> None:
    backend = recording_backend(s3, calls, part_size=MIN_PART_SIZE)
    backend.put("doc/parts.bin", ShortReads(2 * MIN_PART_SIZE + 1))
    created = [params for name, params in calls if name == "CreateMultipartUpload"]
    uploaded = [params for name, params in calls if name == "UploadPart"]
    completed = [params for name, params in calls if name == "CompleteMultipartUpload"]
    assert created[0]["ChecksumAlgorithm"] == "SHA256"
    assert [params["ChecksumAlgorithm"] for params in uploaded] == ["SHA256"] * 3
    assert all("ChecksumSHA256" in part for part in completed[0]["MultipartUpload"]["Parts"])


def sent_checksums(backend: S3StorageBackend) -> list[tuple[str, set[str]]]:
    """For every request the backend's client sends: its method and the checksums it carries.

    A checksum goes in a header (``x-amz-checksum-sha256``) or, for a streamed body over HTTPS, in a
    trailer that ``x-amz-trailer`` announces; ``x-amz-sdk-checksum-algorithm`` names the algorithm.
    """
    sent: list[tuple[str, set[str]]] = []

    def record(request: Any, **_: Any) -> None:
        names = {name.lower() for name in request.headers if name.lower().startswith("x-amz-checksum-")}
        names.update(request.headers.get("x-amz-trailer", b"").decode().lower().split(","))
        names.update(
            f"algorithm:{value.decode()}"
            for value in [request.headers.get("x-amz-sdk-checksum-algorithm")]
            if value
        )
        sent.append((request.method, names - {""}))

    backend.client.meta.events.register("before-send.s3.*", record)
    return sent


def test_a_built_client_sends_no_checksum_when_checksums_are_off(
    real_s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the real server only: botocore then sends the part's bytearray as it is, which moto's
    # request parsing (werkzeug) takes for form data and fails on.
    backend = built_backend(real_s3, monkeypatch, checksums=False, part_size=MIN_PART_SIZE)
    sent = sent_checksums(backend)
    backend.put("doc/small.bin", io.BytesIO(b"small"))
    backend.put("doc/large.bin", ShortReads(MIN_PART_SIZE + 1))
    assert [method for method, _ in sent] == ["PUT", "POST", "PUT", "PUT", "POST"]
    assert [names for _, names in sent] == [set()] * 5
    assert backend.get("doc/large.bin") == b"z" * (MIN_PART_SIZE + 1)


def test_a_built_client_sends_sha256_checksums_when_checksums_are_on(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = built_backend(s3, monkeypatch, part_size=MIN_PART_SIZE)
    sent = sent_checksums(backend)
    backend.put("doc/small.bin", io.BytesIO(b"small"))
    backend.put("doc/large.bin", ShortReads(MIN_PART_SIZE + 1))
    uploads = [names for method, names in sent if method == "PUT"]
    assert len(uploads) == 3
    assert all("x-amz-checksum-sha256" in names for names in uploads), sent
    assert not any("x-amz-checksum-crc32" in names for _, names in sent), sent


@pytest.mark.parametrize("checksums", ["false", 0, None])
def test_checksums_must_be_a_bool(checksums: object) -> None:
    with pytest.raises(ValueError, match="checksums"):
        S3StorageBackend("bucket", region_name="us-east-1", checksums=checksums)  # type: ignore[arg-type]


# botocore before 1.36 (which has no request_checksum_calculation option) sends a body without a
# checksum as the bytearray it was given, and moto's in-process request parsing (werkzeug) cannot read
# a bytearray: "'bytearray' object has no attribute 'items'". A real server reads it; SeaweedFS checks.
MOTO_READS_UNCHECKSUMMED_BYTEARRAYS = "request_checksum_calculation" in Config.OPTION_DEFAULTS


def test_checksums_can_be_turned_off(s3: S3Server, calls: list[tuple[str, dict[str, Any]]]) -> None:
    if s3.name == "moto" and not MOTO_READS_UNCHECKSUMMED_BYTEARRAYS:
        pytest.skip(
            "moto cannot parse the bytearray body that botocore < 1.36 sends without a checksum "
            "('bytearray' object has no attribute 'items' in werkzeug); the seaweedfs variant runs"
        )
    backend = recording_backend(s3, calls, checksums=False)
    backend.put("doc/plain.bin", io.BytesIO(b"plain"))
    assert "ChecksumAlgorithm" not in calls[0][1]


def test_a_changed_object_fails_verification(s3: S3Server) -> None:
    backend = s3.backend()
    manager = manager_on(backend)
    ref = store(manager, io.BytesIO(b"the original"))
    assert manager.verify(ref)
    s3.client().put_object(Bucket=s3.bucket, Key=f"{backend.prefix}/{ref.location}", Body=b"the forgery!")
    assert not manager.verify(ref)


# -- reading --------------------------------------------------------------------------------------


def test_a_range_read_asks_the_server_for_that_range_only(
    s3: S3Server, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    backend = recording_backend(s3, calls)
    backend.put("doc/r.bin", io.BytesIO(bytes(range(256))))
    calls.clear()
    with backend.open_range("doc/r.bin", 16, 32) as stream:
        assert stream.read() == bytes(range(16, 32))
    assert calls == [
        ("GetObject", {"Bucket": s3.bucket, "Key": f"{backend.prefix}/doc/r.bin", "Range": "bytes=16-31"})
    ]


def test_a_range_the_server_ignores_is_cut_from_the_whole_object(s3: S3Server) -> None:
    backend = s3.backend()
    content = os.urandom(3000)
    backend.put("doc/r.bin", io.BytesIO(content))

    def drop_range(request: Any, **_: Any) -> None:
        if "Range" in request.headers:
            del request.headers["Range"]

    backend.client.meta.events.register("before-sign.s3.GetObject", drop_range)
    ignored = backend.client.get_object(
        Bucket=s3.bucket, Key=f"{backend.prefix}/doc/r.bin", Range="bytes=1-2"
    )
    assert "ContentRange" not in ignored  # the server sends it all
    assert ignored["Body"].read() == content
    for start, end in [(16, 32), (1000, None), (5, 5000), (2999, 3000), (3000, None), (4000, None)]:
        with backend.open_range("doc/r.bin", start, end) as stream:
            assert stream.read() == content[start:end], (start, end)


def test_open_streams_and_closes_the_connection(s3: S3Server) -> None:
    backend = s3.backend()
    content = os.urandom(3 * MIB)
    backend.put("doc/big.bin", io.BytesIO(content))
    with backend.open("doc/big.bin") as stream:
        assert stream.read(10) == content[:10]
        assert stream.read(1000) == content[10:1010]
    assert stream.closed


# -- presigned URLs (a plain HTTP client against the real server) --------------------------------


def test_a_presigned_url_downloads_with_the_original_filename(real_s3: S3Server) -> None:
    manager = manager_on(real_s3.backend())
    ref = manager.put_bytes(
        storage_key="files",
        model_name="doc",
        entity_id="1",
        field_name="file",
        content=b"a,b\n1,2\n",
        original_filename="Übersicht 2024.csv",
    )
    url = manager.url(ref, expires_in=timedelta(minutes=5))
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"a,b\n1,2\n"
        assert response.headers["Content-Type"] == "text/csv"
        disposition = response.headers["Content-Disposition"]
    assert (
        disposition
        == "attachment; filename=\"Ubersicht 2024.csv\"; filename*=UTF-8''%C3%9Cbersicht%202024.csv"
    )


def test_a_presigned_url_offers_the_given_filename_inline(real_s3: S3Server) -> None:
    manager = manager_on(real_s3.backend())
    ref = store(manager, io.BytesIO(b"%PDF-1.7"), filename="report.pdf")
    url = manager.url(ref, expires_in=timedelta(minutes=1), filename="other.pdf", disposition="inline")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Disposition"].startswith('inline; filename="other.pdf"')


def test_a_presigned_url_offers_a_page_that_can_run_scripts_only_as_an_attachment(real_s3: S3Server) -> None:
    manager = manager_on(real_s3.backend())
    ref = store(manager, io.BytesIO(b"<p>hi</p>"), filename="page.html")
    url = manager.url(ref, expires_in=timedelta(minutes=1), disposition="inline")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "text/html"
        assert response.headers["Content-Disposition"].startswith('attachment; filename="page.html"')


def test_a_presigned_url_stops_working_when_it_expires(real_s3: S3Server) -> None:
    manager = manager_on(real_s3.backend())
    ref = store(manager, io.BytesIO(b"short-lived"))
    url = manager.url(ref, expires_in=timedelta(seconds=1))
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(url, timeout=10)
    assert raised.value.code == 403
    raised.value.close()


def test_a_presigned_url_cannot_be_pointed_at_another_object(real_s3: S3Server) -> None:
    backend = real_s3.backend()
    manager = manager_on(backend)
    ref = store(manager, io.BytesIO(b"mine"))
    other = store(manager, io.BytesIO(b"someone else's"))
    url = manager.url(ref)
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(url.replace(ref.location, other.location), timeout=10)
    assert raised.value.code == 403
    raised.value.close()


def test_a_presigned_url_signs_an_invalid_stored_content_type_as_an_octet_stream_attachment(
    s3: S3Server,
) -> None:
    manager = manager_on(s3.backend())
    ref = store(manager, io.BytesIO(b"plain"), filename="a.txt")
    edited = dataclasses.replace(ref, content_type="text/plain\r\nSet-Cookie: x=1")
    query = parse_qs(urlsplit(manager.url(edited, disposition="inline")).query)
    assert query["response-content-type"] == ["application/octet-stream"]
    assert query["response-content-disposition"][0].startswith("attachment;")
    query = parse_qs(urlsplit(manager.url(ref, disposition="inline")).query)
    assert query["response-content-type"] == ["text/plain"]
    assert query["response-content-disposition"][0].startswith("inline;")


def test_a_presigned_url_overrides_the_type_an_older_release_stored_on_the_object(
    real_s3: S3Server,
) -> None:
    # Objects stored before content types were parsed carry the client's type as S3 metadata; the
    # URL must not let S3 serve it: it always signs the type and disposition of its own.
    backend = real_s3.backend()
    manager = manager_on(backend)
    ref = store(manager, io.BytesIO(b"<script>document.title='x'</script>"), filename="a.png")
    hostile = "image/png; x=y, text/html"
    backend.put(ref.location, io.BytesIO(b"<script>document.title='x'</script>"), content_type=hostile)
    legacy = dataclasses.replace(ref, content_type=hostile)
    with urllib.request.urlopen(manager.url(legacy, disposition="inline"), timeout=10) as response:
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Content-Disposition"].startswith("attachment;")


def test_a_presigned_url_offers_a_very_long_filename_cut(real_s3: S3Server) -> None:
    manager = manager_on(real_s3.backend())
    ref = store(manager, io.BytesIO(b"long"), filename="é" * 3000 + ".pdf")
    url = manager.url(ref)
    assert len(url) < 4 * 1024
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"long"
        disposition = response.headers["Content-Disposition"]
    assert unquote(disposition.split("filename*=UTF-8''")[1]).endswith("éé.pdf")


@pytest.mark.parametrize("expires_in", [timedelta(milliseconds=500), timedelta(days=7, seconds=1)])
def test_url_expiry_must_fit_what_s3_signs(moto_s3: S3Server, expires_in: timedelta) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        moto_s3.backend().url("doc/a.bin", expires_in=expires_in)


# -- errors ---------------------------------------------------------------------------------------


def test_a_missing_bucket_is_a_configuration_error(s3: S3Server) -> None:
    backend = S3StorageBackend("granite-no-such-bucket", client=s3.client())
    with pytest.raises(ConfigurationError, match="does not exist") as raised:
        backend.put("doc/a.bin", io.BytesIO(b"x"))
    assert isinstance(raised.value.__cause__, ClientError)
    with pytest.raises(ConfigurationError):
        list(backend.list())


def test_stat_and_exists_in_a_missing_bucket_are_a_configuration_error(s3: S3Server) -> None:
    # HEAD answers a bare 404 for a missing bucket as for a missing object.
    backend = S3StorageBackend("granite-no-such-bucket", client=s3.client())
    for operation in (backend.stat, backend.exists, lambda key: backend.open_range(key, 3, 3)):
        with pytest.raises(ConfigurationError, match="'granite-no-such-bucket' does not exist") as raised:
            operation("doc/a.bin")
        assert isinstance(raised.value.__cause__, ClientError)


def test_a_found_bucket_is_looked_up_once(s3: S3Server, calls: list[tuple[str, dict[str, Any]]]) -> None:
    backend = recording_backend(s3, calls)
    assert not backend.exists("doc/missing.bin")
    with pytest.raises(ObjectNotFoundError):
        backend.stat("doc/missing.bin")
    assert operations(calls) == ["HeadObject", "HeadBucket", "HeadObject"]


def test_a_missing_object_is_not_found_chained_to_botocore(s3: S3Server) -> None:
    backend = s3.backend()
    for operation in (backend.open, backend.stat, backend.get):
        with pytest.raises(ObjectNotFoundError) as raised:
            operation("doc/missing.bin")
        assert raised.value.key == "doc/missing.bin"
        assert isinstance(raised.value, FileNotFoundError)
        assert isinstance(raised.value.__cause__, ClientError)


def test_a_wrong_secret_is_a_permission_error(real_s3: S3Server) -> None:
    client = SESSION.client(
        "s3",
        endpoint_url=real_s3.endpoint_url,
        aws_access_key_id=real_s3.access_key,
        aws_secret_access_key="not-the-secret",
        region_name=real_s3.region,
        config=Config(retries={"max_attempts": 1}),
    )
    backend = S3StorageBackend(real_s3.bucket, client=client)
    for operation in (lambda: backend.put("a/b", io.BytesIO(b"x")), lambda: backend.stat("a/b")):
        with pytest.raises(StoragePermissionError) as raised:
            operation()
        assert isinstance(raised.value, PermissionError)
        assert isinstance(raised.value.__cause__, ClientError)


def test_an_unreachable_endpoint_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    (port,) = free_ports(1)  # nothing listens there
    client = SESSION.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    backend = S3StorageBackend("bucket", client=client)
    with pytest.raises(BackendUnavailableError) as raised:
        backend.stat("a/b")
    assert isinstance(raised.value, ConnectionError)
    assert isinstance(raised.value.__cause__, EndpointConnectionError)


@pytest.mark.parametrize("max_attempts", [1, 2])
def test_a_stalled_endpoint_is_given_up_on_after_the_read_timeout(
    monkeypatch: pytest.MonkeyPatch, max_attempts: int
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with socket.socket() as listener:
        # Connections complete in the listen backlog, but nothing ever reads or answers them.
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        backend = S3StorageBackend(
            "bucket",
            endpoint_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
            region_name="us-east-1",
            connect_timeout=0.5,
            read_timeout=0.5,
            max_attempts=max_attempts,
        )
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as raised:
            backend.stat("a/b")
        elapsed = time.monotonic() - started
    assert isinstance(raised.value.__cause__, ReadTimeoutError)
    assert max_attempts * 0.5 <= elapsed < 10


def test_a_built_client_has_bounded_timeouts_and_retries_by_default(moto_s3: S3Server) -> None:
    config: Any = S3StorageBackend(
        moto_s3.bucket, region_name="us-east-1", max_concurrency=16
    ).client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (5, 30)
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert config.max_pool_connections == 18


def test_missing_credentials_are_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (port,) = free_ports(1)
    backend = S3StorageBackend("bucket", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
    with pytest.raises(ConfigurationError, match="credentials"):
        backend.stat("a/b")


class _Answer(BaseHTTPRequestHandler):
    """Answers every request with the status and S3 error code in the server's ``answer``."""

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def _answer(self) -> None:
        status, code = self.server.answer  # type: ignore[attr-defined]
        body = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (503, "SlowDown", BackendUnavailableError),
        (500, "InternalError", BackendUnavailableError),
        (403, "AccessDenied", StoragePermissionError),
        (400, "InvalidArgument", StorageError),
    ],
)
def test_server_errors_map_to_the_most_specific_error(
    monkeypatch: pytest.MonkeyPatch, status: int, code: str, error: type[StorageError]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.answer = (status, code)  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        backend = S3StorageBackend(
            "bucket",
            prefix="tenant",
            client=SESSION.client(
                "s3",
                endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
                region_name="us-east-1",
                config=Config(retries={"mode": "standard", "max_attempts": 2}),
            ),
        )
        with pytest.raises(error) as raised:
            backend.put("a/b.bin", io.BytesIO(b"x"))
        assert type(raised.value) is error
        assert isinstance(raised.value.__cause__, ClientError)
        # The key as it is in the bucket, prefix included: what an operator looks for.
        assert "'tenant/a/b.bin' in S3 bucket 'bucket'" in str(raised.value)
    finally:
        server.shutdown()
        server.server_close()


# -- confinement ----------------------------------------------------------------------------------


def test_the_backend_sees_only_its_prefix_of_the_bucket(s3: S3Server) -> None:
    client = s3.client()
    backend = s3.backend(prefix="production")
    # (A store with directories, like SeaweedFS, keeps no "dir/" marker object, but S3 and moto do.)
    outside = ("production2/x.bin", "other/y.bin", "production.bin", "production/dir/")
    for key in outside:
        client.put_object(Bucket=s3.bucket, Key=key, Body=b"" if key.endswith("/") else b"not ours")
    try:
        backend.put("docs/a.bin", io.BytesIO(b"ours"))
        assert [info.key for info in backend.list()] == ["docs/a.bin"]
        assert [info.key for info in backend.list("docs")] == ["docs/a.bin"]
        assert client.get_object(Bucket=s3.bucket, Key="production/docs/a.bin")["Body"].read() == b"ours"
        for key in ("../production2/x.bin", "../other/y.bin", "/other/y.bin"):
            with pytest.raises(InvalidKeyError):
                backend.get(key)
    finally:
        for key in outside:
            client.delete_object(Bucket=s3.bucket, Key=key)
        client.delete_object(Bucket=s3.bucket, Key="production/docs/a.bin")


def test_a_key_too_long_for_s3_under_the_prefix_is_refused_before_any_request(
    moto_s3: S3Server, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    backend = recording_backend(moto_s3, calls, prefix="p" * 100)
    fits = "doc/" + "a" * (1024 - 101 - 4)
    backend.put(fits, io.BytesIO(b"x"))
    assert backend.get(fits) == b"x"
    calls.clear()
    for operation in (
        lambda key: backend.put(key, io.BytesIO(b"x")),
        backend.stat,
        backend.open,
        backend.delete,
        lambda key: backend.url(key, expires_in=timedelta(minutes=1)),
    ):
        with pytest.raises(InvalidKeyError, match="longer than S3's 1024 bytes"):
            operation(fits + "a")
    assert calls == []


@pytest.mark.parametrize("prefix", ["../up", "a/../b", "a//b", ".hidden", "a\\b"])
def test_an_unsafe_backend_prefix_is_refused(moto_s3: S3Server, prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        S3StorageBackend(moto_s3.bucket, prefix=prefix, client=moto_s3.client())


def test_incomplete_uploads_under_the_prefix_are_aborted(s3: S3Server) -> None:
    client = s3.client()
    backend = s3.backend()
    client.create_multipart_upload(Bucket=s3.bucket, Key=f"{backend.prefix}/doc/killed.bin")
    theirs = client.create_multipart_upload(Bucket=s3.bucket, Key=f"{backend.prefix}x/doc/other.bin")
    try:
        assert backend.remove_incomplete_uploads(older_than=timedelta(0)) == 1
        assert in_progress_uploads(s3) == [f"{backend.prefix}x/doc/other.bin"]
    finally:
        client.abort_multipart_upload(Bucket=s3.bucket, Key=theirs["Key"], UploadId=theirs["UploadId"])


def test_incomplete_uploads_are_aborted_only_under_the_prefix_asked_for(s3: S3Server) -> None:
    client = s3.client()
    backend = s3.backend()
    for key in ("docs/a/killed.bin", "docs2/a/other.bin"):
        client.create_multipart_upload(Bucket=s3.bucket, Key=f"{backend.prefix}/{key}")
    assert backend.remove_incomplete_uploads(older_than=timedelta(0), prefix="docs") == 1
    assert in_progress_uploads(s3) == [f"{backend.prefix}/docs2/a/other.bin"]
    assert backend.remove_incomplete_uploads(older_than=timedelta(0)) == 1
    assert in_progress_uploads(s3) == []


def test_incomplete_uploads_younger_than_the_limit_are_kept(real_s3: S3Server) -> None:
    # On the real server only: moto reports every upload as started in 2010.
    backend = real_s3.backend()
    key = f"{backend.prefix}/doc/running.bin"
    real_s3.client().create_multipart_upload(Bucket=real_s3.bucket, Key=key)
    assert backend.remove_incomplete_uploads(older_than=timedelta(hours=1)) == 0
    assert in_progress_uploads(real_s3) == [key]
    assert backend.remove_incomplete_uploads(older_than=timedelta(0)) == 1
    assert in_progress_uploads(real_s3) == []


# -- configuration --------------------------------------------------------------------------------


def test_a_manager_from_config_stores_on_the_real_server(
    real_s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", real_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", real_s3.secret_key)
    manager = StorageManager.from_config(
        {
            "backends": {
                "files": {
                    "type": "s3",
                    "bucket": real_s3.bucket,
                    "prefix": "from-config",
                    "region_name": real_s3.region,
                    "endpoint_url": real_s3.endpoint_url,
                    "addressing_style": "path",
                    "part_size": "16MB",
                    "max_concurrency": 2,
                    "connect_timeout": 2,
                    "read_timeout": 20.5,
                    "max_attempts": 2,
                    "max_pool_connections": 4,
                    "checksums": False,
                }
            },
            "policies": {"files": {"backend": "files", "max_size": "1MB"}},
        },
    )
    backend = manager.backend("files")
    assert isinstance(backend, S3StorageBackend)
    assert (backend.part_size, backend.max_concurrency, backend.checksums) == (16 * MIB, 2, False)
    config: Any = backend.client.meta.config  # the stubs list none of its options
    assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (2, 20.5, 4)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    ref = store(manager, io.BytesIO(b"configured"), filename="c.txt")
    assert manager.get(ref) == b"configured"
    assert manager.verify(ref)
    manager.delete(ref)


@pytest.mark.parametrize("part_size", ["1MB", "-1", "8 MiBB", 6 * 1024**3, 8.5 * MIB, True])
def test_any_bad_part_size_is_a_value_error(part_size: object) -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3StorageBackend("bucket", region_name="us-east-1", part_size=part_size)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"part_size": "1MB"},
        {"part_size": 6 * 1024**3},
        {"max_concurrency": 0},
        {"connect_timeout": 0},
        {"read_timeout": "30"},
        {"read_timeout": float("nan")},
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"max_pool_connections": True},
        {"checksums": "false"},
        {"addressing_style": "sideways"},
        {"bucket": "a/b"},
        {"client": object(), "endpoint_url": "http://127.0.0.1:1"},
        {"client": object(), "read_timeout": 10},
    ],
)
def test_bad_options_are_a_configuration_error(options: dict[str, Any]) -> None:
    host = PluginHost(disabled=())
    host.load_entry_points()
    with pytest.raises(ConfigurationError):
        host.create_backend("s3", {"bucket": "b", "region_name": "us-east-1", **options})


# -- batch deletes --------------------------------------------------------------------------------


def test_delete_many_sends_a_thousand_keys_per_request(
    s3: S3Server, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    backend = recording_backend(s3, calls)
    stored = [f"batch/{n}.bin" for n in range(0, 2_001, 400)]
    for key in stored:
        backend.put(key, io.BytesIO(b"x"))
    kept = "kept/a.bin"
    backend.put(kept, io.BytesIO(b"k"))
    calls.clear()
    keys = [f"batch/{n}.bin" for n in range(2_001)]  # most were never stored: not a failure
    assert dict(backend.delete_many(keys)) == {}
    assert operations(calls) == ["DeleteObjects"] * 3
    sizes = [len(params["Delete"]["Objects"]) for _, params in calls]
    assert sizes == [1000, 1000, 1]
    sent = [item["Key"] for _, params in calls for item in params["Delete"]["Objects"]]
    assert sent == [f"{backend.prefix}/{key}" for key in keys]
    assert [info.key for info in backend.list()] == [kept]


def test_delete_many_reports_the_keys_s3_refused_and_deletes_the_rest(s3: S3Server) -> None:
    """S3 answers a batch with per-key errors (e.g. AccessDenied under a bucket policy). Neither moto
    nor SeaweedFS can be made to refuse a single key, so the server's real answer is amended with one
    such error entry, as S3 would send it, before the backend reads it."""
    backend = s3.backend()
    keys = [f"batch/{n}.bin" for n in range(3)]
    for key in keys:
        backend.put(key, io.BytesIO(b"x"))
    refused = f"{backend.prefix}/{keys[1]}"

    def refuse_one_key(parsed: dict[str, Any], **_: Any) -> None:
        parsed.setdefault("Errors", []).append(
            {"Key": refused, "Code": "AccessDenied", "Message": "Access Denied"}
        )

    backend.client.meta.events.register("after-call.s3.DeleteObjects", refuse_one_key)
    failures = backend.delete_many(keys)
    assert list(failures) == [keys[1]]
    assert isinstance(failures[keys[1]], StoragePermissionError)
    assert refused in str(failures[keys[1]])


def test_delete_many_in_a_missing_bucket_fails_every_key_without_raising(s3: S3Server) -> None:
    backend = S3StorageBackend("granite-no-such-bucket", client=s3.client())
    failures = backend.delete_many(["a/1.bin", "a/2.bin"])
    assert sorted(failures) == ["a/1.bin", "a/2.bin"]
    assert all(isinstance(error, ConfigurationError) for error in failures.values())


@pytest.mark.parametrize(
    ("first", "second"), [("", ""), ("", "production"), ("app", "app/v2"), ("app", "app")]
)
def test_two_backend_names_over_one_bucket_with_nested_prefixes_are_refused(
    s3: S3Server, first: str, second: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"backends 'files' and 'thumbs' write into one store \(s3:"):
        StorageManager(
            backends={
                "files": S3StorageBackend(bucket=s3.bucket, prefix=first, client=s3.client()),
                "thumbs": S3StorageBackend(bucket=s3.bucket, prefix=second, client=s3.client()),
            },
            policies={
                "docs": StoragePolicy("docs", backend_key="files", key_prefix="docs"),
                "avatars": StoragePolicy("avatars", backend_key="thumbs", key_prefix="avatars"),
            },
        )


def test_backends_under_side_by_side_prefixes_of_one_bucket_are_separate_stores(s3: S3Server) -> None:
    manager = StorageManager(
        backends={
            "files": S3StorageBackend(bucket=s3.bucket, prefix="app", client=s3.client()),
            "archive": S3StorageBackend(bucket=s3.bucket, prefix="app2", client=s3.client()),
        },
        policies={
            "docs": StoragePolicy("docs", backend_key="files"),
            "old": StoragePolicy("old", backend_key="archive", key_prefix="docs"),
        },
    )
    ref = manager.put_bytes(storage_key="old", model_name="m", entity_id="1", field_name="f", content=b"x")
    assert manager.get(ref) == b"x"
