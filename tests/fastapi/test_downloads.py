"""Downloads through storage_response, over real HTTP: validators, conditional requests, ranges, HEAD."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from granite_storage import PluginHost, StorageManager, StoragePolicy, StoredObjectRef
from granite_storage.headers import content_disposition
from granite_storage_local import LocalStorageBackend

from .conftest import serve
from .service import Service, build_service

CONTENT = bytes(range(256)) * 40  # 10240 bytes
NAME = 'Ünïcode "quoted" report.pdf'


class RecordingBackend(LocalStorageBackend):
    """The local backend, recording every stream it opens so a test can see it closed."""

    def __init__(self, root: object) -> None:
        super().__init__(root)  # type: ignore[arg-type]
        self.opened: list[BinaryIO] = []
        self.lock = threading.Lock()

    def open(self, key: str) -> BinaryIO:
        stream = super().open(key)
        with self.lock:
            self.opened.append(stream)
        return stream


@pytest.fixture
def backend(storage_root: object) -> RecordingBackend:
    return RecordingBackend(storage_root)


@pytest.fixture
def manager(backend: RecordingBackend, empty_host: PluginHost) -> StorageManager:
    policy = StoragePolicy("files", backend_key="local")
    return StorageManager(backends={"local": backend}, policies={"files": policy}, plugins=empty_host)


@pytest.fixture
def service(manager: StorageManager) -> Service:
    service = build_service(manager)
    service.refs["doc"] = put(manager, CONTENT, NAME, "application/pdf")
    return service


def put(
    manager: StorageManager, content: bytes, filename: str | None, content_type: str | None
) -> StoredObjectRef:
    return manager.put_bytes(
        storage_key="files",
        model_name="test",
        entity_id="1",
        field_name="file",
        content=content,
        original_filename=filename,
        content_type=content_type,
    )


@pytest.fixture
def base_url(service: Service) -> Iterator[str]:
    with serve(service.app) as url:
        yield url


@pytest.fixture
def ref(service: Service) -> StoredObjectRef:
    return service.refs["doc"]


def test_a_download_carries_the_object_and_its_headers(base_url: str, ref: StoredObjectRef) -> None:
    response = httpx.get(f"{base_url}/objects/doc")
    assert response.status_code == 200
    assert response.content == CONTENT
    headers = response.headers
    assert headers["content-type"] == "application/pdf"
    assert headers["content-length"] == str(len(CONTENT))
    assert headers["etag"] == f'"{hashlib.sha256(CONTENT).hexdigest()}"'
    assert parsedate_to_datetime(headers["last-modified"]) == ref.created_at.replace(microsecond=0)
    assert headers["accept-ranges"] == "bytes"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"] == (
        'attachment; filename="Unicode _quoted_ report.pdf"; '
        "filename*=UTF-8''%C3%9Cn%C3%AFcode%20%22quoted%22%20report.pdf"
    )


def test_hostile_filenames_cannot_inject_headers(
    base_url: str, manager: StorageManager, service: Service
) -> None:
    service.refs["evil"] = put(manager, b"x", "../../etc/passwd\r\nSet-Cookie: a=b", "text/plain")
    response = httpx.get(f"{base_url}/objects/evil")
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"passwdSet-Cookie: a=b\"; filename*=UTF-8''passwdSet-Cookie%3A%20a%3Db"
    )


def test_an_inline_disposition_and_extra_headers_are_served(base_url: str) -> None:
    response = httpx.get(
        f"{base_url}/objects/doc", params={"inline": True, "cache_control": "private, max-age=60"}
    )
    assert response.headers["content-disposition"].startswith("inline; filename=")
    assert response.headers["cache-control"] == "private, max-age=60"


def test_an_object_without_content_type_is_served_as_octet_stream(
    base_url: str, manager: StorageManager, service: Service
) -> None:
    service.refs["bare"] = put(manager, b"bare", None, None)
    response = httpx.get(f"{base_url}/objects/bare")
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == "attachment"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("page.html", None),
        ("page.html", "text/html\r\nSet-Cookie: a=b"),
        ("x.bin", "not a type"),
        ("x.png", "image/png; x=y, text/html"),
    ],
    ids=["none-recorded", "header-injection", "malformed", "a-list"],
)
def test_a_missing_or_invalid_recorded_content_type_is_served_as_an_octet_stream_attachment(
    base_url: str, manager: StorageManager, service: Service, name: str, content_type: str | None
) -> None:
    # A row written by another program, an older release, or edited: the type served is the recorded
    # one parsed again, as a presigned URL would sign it, never guessed from the uploader's filename.
    stored = put(manager, b"<script>alert(1)</script>", name, "text/plain")
    service.refs["edited"] = dataclasses.replace(stored, content_type=content_type)
    response = httpx.get(f"{base_url}/objects/edited", params={"inline": True})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-security-policy"] == "sandbox"
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("name", "content_type", "passive"),
    [
        ("page.html", "text/html; charset=utf-8", False),
        ("image.svg", "image/svg+xml", False),
        ("feed.xml", "application/xml", False),
        ("page.xhtml", "application/xhtml+xml", False),
        ("app.js", "text/javascript", False),
        ("report.pdf", "application/pdf", True),
        ("photo.png", "image/png", True),
        ("notes.txt", "text/plain; charset=utf-8", True),
    ],
)
def test_only_passive_types_are_shown_inline_and_anything_else_is_a_sandboxed_attachment(
    base_url: str, manager: StorageManager, service: Service, name: str, content_type: str, passive: bool
) -> None:
    # An uploaded page opened inline from the application's origin would run with its cookies.
    service.refs["active"] = put(manager, b"<script>alert(document.cookie)</script>", name, content_type)
    for method in ("GET", "HEAD"):
        response = httpx.request(method, f"{base_url}/objects/active", params={"inline": True})
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        assert response.headers["x-content-type-options"] == "nosniff"
        disposition = response.headers["content-disposition"]
        assert disposition.startswith("inline;" if passive else "attachment;")
        assert response.headers.get("content-security-policy") == (None if passive else "sandbox")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"range": "bytes=0-9"}, 206),
        ({"range": "bytes=999999-"}, 416),
        ({"if-none-match": "*"}, 304),
    ],
    ids=["whole", "range", "unsatisfiable", "not-modified"],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_every_download_response_carries_nosniff(
    base_url: str, method: str, headers: dict[str, str], status: int
) -> None:
    response = httpx.request(method, f"{base_url}/objects/doc", headers=headers)
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_missing_object_answers_with_nosniff_too(base_url: str) -> None:
    response = httpx.get(f"{base_url}/errors/not-found")
    assert response.status_code == 404
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", '"other", {etag}', "*"],
    ids=["exact", "weak", "in-a-list", "star"],
)
def test_a_matching_if_none_match_answers_304(
    base_url: str, ref: StoredObjectRef, if_none_match: str
) -> None:
    etag = f'"{ref.sha256}"'
    response = httpx.get(
        f"{base_url}/objects/doc", headers={"if-none-match": if_none_match.format(etag=etag)}
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag


def test_an_if_none_match_list_split_over_several_header_lines_is_read_whole(
    base_url: str, ref: StoredObjectRef
) -> None:
    # RFC 9110 5.3: a list-valued field may come as several lines (a proxy may split it so).
    headers = [("if-none-match", '"other"'), ("if-none-match", f'"{ref.sha256}"')]
    assert httpx.get(f"{base_url}/objects/doc", headers=headers).status_code == 304


def test_a_different_etag_gets_the_object(base_url: str) -> None:
    response = httpx.get(f"{base_url}/objects/doc", headers={"if-none-match": '"something-else"'})
    assert response.status_code == 200
    assert response.content == CONTENT


def test_if_modified_since_answers_304_unless_the_object_is_newer(
    base_url: str, ref: StoredObjectRef
) -> None:
    stored = ref.created_at.replace(microsecond=0)
    later = format_datetime(stored, usegmt=True)
    assert httpx.get(f"{base_url}/objects/doc", headers={"if-modified-since": later}).status_code == 304
    earlier = format_datetime(stored.replace(year=stored.year - 1), usegmt=True)
    assert httpx.get(f"{base_url}/objects/doc", headers={"if-modified-since": earlier}).status_code == 200


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=10000-", 10000, 10240),
        ("bytes=-40", 10200, 10240),
        ("bytes=10200-99999", 10200, 10240),
        ("bytes=-99999", 0, 10240),
        ("BYTES = 5 - 5", 5, 6),
    ],
)
def test_a_single_range_answers_206_with_those_bytes(
    base_url: str, backend: RecordingBackend, range_header: str, start: int, end: int
) -> None:
    response = httpx.get(f"{base_url}/objects/doc", headers={"range": range_header})
    assert response.status_code == 206
    assert response.content == CONTENT[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(CONTENT)}"
    assert response.headers["content-length"] == str(end - start)


@pytest.mark.parametrize("range_header", ["bytes=10240-", "bytes=99999-100000", "bytes=-0"])
def test_an_unsatisfiable_range_answers_416(base_url: str, range_header: str) -> None:
    response = httpx.get(f"{base_url}/objects/doc", headers={"range": range_header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(CONTENT)}"


@pytest.mark.parametrize(
    "range_header",
    ["bytes=0-1,5-6", "items=0-1", "bytes=5-1", "bytes=abc", "bytes=-", "bytes=" + "9" * 30 + "-"],
    ids=["several", "other-unit", "reversed", "garbage", "empty", "huge-number"],
)
def test_ranges_the_helper_does_not_serve_get_the_whole_object(base_url: str, range_header: str) -> None:
    response = httpx.get(f"{base_url}/objects/doc", headers={"range": range_header})
    assert response.status_code == 200
    assert response.content == CONTENT


def test_a_range_whose_if_range_no_longer_matches_gets_the_whole_object(
    base_url: str, ref: StoredObjectRef
) -> None:
    stale = httpx.get(f"{base_url}/objects/doc", headers={"range": "bytes=0-9", "if-range": '"stale"'})
    assert (stale.status_code, stale.content) == (200, CONTENT)
    current = httpx.get(
        f"{base_url}/objects/doc", headers={"range": "bytes=0-9", "if-range": f'"{ref.sha256}"'}
    )
    assert (current.status_code, current.content) == (206, CONTENT[:10])


def test_head_sends_the_headers_without_the_body(base_url: str, backend: RecordingBackend) -> None:
    response = httpx.head(f"{base_url}/objects/doc", headers={"range": "bytes=0-9"})
    assert response.status_code == 206
    assert response.headers["content-length"] == "10"
    assert response.content == b""
    assert backend.opened == []  # decided from the reference alone


def test_a_missing_object_answers_404_naming_no_key(
    base_url: str, manager: StorageManager, ref: StoredObjectRef
) -> None:
    manager.delete(ref)
    response = httpx.get(f"{base_url}/objects/doc")
    assert response.status_code == 404
    assert response.json() == {"detail": "stored object not found"}


def test_redirect_falls_back_to_streaming_on_a_backend_without_urls(base_url: str) -> None:
    response = httpx.get(f"{base_url}/objects/doc", params={"redirect": True})
    assert (response.status_code, response.content) == (200, CONTENT)


def test_a_client_that_goes_away_has_its_backend_stream_closed(
    base_url: str, manager: StorageManager, service: Service, backend: RecordingBackend
) -> None:
    service.refs["large"] = put(manager, b"x" * (64 * 1024 * 1024), "large.bin", None)
    with httpx.stream("GET", f"{base_url}/objects/large") as response:
        assert response.status_code == 200
        next(response.iter_raw(65536))
    # The connection is closed with most of the object unsent: the server notices, and closes the
    # stream it had open. Polled, since it happens on the server's own time.
    closed = threading.Event()
    for _ in range(1000):
        if len(backend.opened) == 1 and backend.opened[0].closed:
            closed.set()
            break
        closed.wait(0.01)
    assert closed.is_set(), "the backend stream was left open"


# -- on S3 --------------------------------------------------------------------------------------------


@pytest.fixture
def s3_service(moto_s3: Any, empty_host: PluginHost) -> Service:
    """The same application over moto's in-process S3 (the example's tests use a real S3 server)."""
    policy = StoragePolicy("files", backend_key="s3")
    manager = StorageManager(
        backends={"s3": moto_s3.backend()}, policies={"files": policy}, plugins=empty_host
    )
    service = build_service(manager)
    service.refs["doc"] = put(manager, CONTENT, NAME, "application/pdf")
    return service


def test_an_object_on_s3_is_served_with_ranges_and_validators(s3_service: Service) -> None:
    with serve(s3_service.app) as url:
        whole = httpx.get(f"{url}/objects/doc")
        ranged = httpx.get(f"{url}/objects/doc", headers={"range": "bytes=-40"})
        not_modified = httpx.get(f"{url}/objects/doc", headers={"if-none-match": whole.headers["etag"]})
    assert (whole.status_code, whole.content) == (200, CONTENT)
    assert (ranged.status_code, ranged.content) == (206, CONTENT[-40:])
    assert not_modified.status_code == 304


def test_redirect_sends_an_s3_download_to_a_presigned_url(s3_service: Service) -> None:
    with serve(s3_service.app) as url:
        response = httpx.get(f"{url}/objects/doc", params={"redirect": True})
    assert response.status_code == 307
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    location = parse_qs(urlsplit(response.headers["location"]).query)
    assert "X-Amz-Signature" in location
    assert location["response-content-disposition"] == [content_disposition(NAME)]
    assert location["response-content-type"] == ["application/pdf"]
