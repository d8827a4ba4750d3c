"""Content rules on S3 (moto and a real server): the type read from the bytes decides, before any request."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request

import pytest

from granite_storage import (
    ConfigurationError,
    ContentTypeNotAllowedError,
    PluginHost,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
)
from granite_storage_s3 import S3StorageBackend
from granite_storage_s3.backend import MIN_PART_SIZE
from granite_storage_s3.testing import S3Server


@pytest.fixture(autouse=True)
def _libmagic() -> None:
    """Skip where libmagic is missing (pip cannot install it), unless CI requires it."""
    from granite_storage._sniffing import require_sniffer

    try:
        require_sniffer()
    except ConfigurationError as exc:
        if os.environ.get("GRANITE_TEST_REQUIRE_LIBMAGIC") == "1":
            pytest.fail(f"GRANITE_TEST_REQUIRE_LIBMAGIC=1, but {exc}")
        pytest.skip(f"libmagic is not usable here ({exc}); Debian: apt install libmagic1")


# A 1x1 PNG image, and a page that would like to be one.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c49444154789c63606060000000040001f61738550000000049454e44ae426082"
)
HTML = b"<!doctype html><title>x</title><script>document.cookie = 'a=b'</script>"


def manager_on(backend: S3StorageBackend) -> StorageManager:
    policy = StoragePolicy("avatars", backend_key="s3", allowed_types=["image/png", "image/jpeg"])
    return StorageManager(
        backends={"s3": backend}, policies={"avatars": policy}, plugins=PluginHost(disabled=())
    )


def store(manager: StorageManager, content: bytes, content_type: str, filename: str) -> StoredObjectRef:
    return manager.put_stream(
        storage_key="avatars",
        model_name="user",
        entity_id="7",
        field_name="avatar",
        stream=io.BytesIO(content),
        content_type=content_type,
        original_filename=filename,
    )


def test_an_allowed_upload_is_stored_with_the_type_its_bytes_have(s3: S3Server) -> None:
    backend = s3.backend()
    ref = store(manager_on(backend), PNG, "application/octet-stream", "me.png")
    assert ref.content_type == "image/png"
    head = s3.client().head_object(Bucket=s3.bucket, Key=f"{backend.prefix}/{ref.location}")
    assert head["ContentType"] == "image/png"


@pytest.mark.parametrize("size", [len(HTML), 2 * MIN_PART_SIZE + 1])
def test_a_refused_upload_sends_nothing_and_leaves_nothing(s3: S3Server, size: int) -> None:
    backend = s3.backend(part_size=MIN_PART_SIZE)
    content = (HTML * (size // len(HTML) + 1))[:size]
    with pytest.raises(ContentTypeNotAllowedError, match="text/html is not accepted"):
        store(manager_on(backend), content, "image/png", "me.png")
    assert list(backend.list()) == []
    uploads = s3.client().list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert [upload["Key"] for upload in uploads if upload["Key"].startswith(backend.prefix)] == []


def test_sniffed_content_larger_than_a_part_goes_up_whole(s3: S3Server) -> None:
    backend = s3.backend(part_size=MIN_PART_SIZE)
    content = PNG + bytes(range(256)) * (2 * MIN_PART_SIZE // 256)
    manager = manager_on(backend)
    ref = store(manager, content, "image/png", "big.png")
    assert ref.size == len(content)
    assert ref.sha256 == hashlib.sha256(content).hexdigest()
    assert manager.get(ref) == content


def test_a_presigned_url_serves_the_type_the_bytes_have(real_s3: S3Server) -> None:
    manager = manager_on(real_s3.backend())
    ref = store(manager, PNG, "image/png", "me.png")
    with urllib.request.urlopen(manager.url(ref, disposition="inline"), timeout=10) as response:
        assert response.read() == PNG
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["Content-Disposition"].startswith("inline;")
