"""Content rules over real HTTP: a slot that takes images answers 415 to anything else, storing nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from granite_storage import PluginHost, StorageManager, StoragePolicy
from granite_storage_local import LocalStorageBackend

from ..conftest import files_under
from ..samples import HTML, jpeg, png
from .conftest import serve
from .service import Service, build_service

# Content rules read types with libmagic, which pip cannot install: skipped where it is missing.
pytestmark = pytest.mark.usefixtures("libmagic")


@pytest.fixture
def service(local_backend: LocalStorageBackend, empty_host: PluginHost) -> Service:
    policy = StoragePolicy("files", backend_key="local", allowed_types=["image/jpeg", "image/png"])
    manager = StorageManager(
        backends={"local": local_backend}, policies={"files": policy}, plugins=empty_host
    )
    return build_service(manager)


@pytest.fixture
def base_url(service: Service) -> Iterator[str]:
    with serve(service.app) as url:
        yield url


def test_an_upload_of_an_allowed_type_is_stored_and_served_with_the_type_its_bytes_have(
    base_url: str, service: Service
) -> None:
    content = png() + bytes(200_000)  # more than the head that is sniffed
    response = httpx.post(f"{base_url}/uploads/me", files={"file": ("me.png", content, "image/png")})
    assert response.status_code == 201, response.text
    assert service.refs["me"].content_type == "image/png"
    download = httpx.get(f"{base_url}/objects/me", params={"inline": True})
    assert download.content == content
    assert download.headers["content-type"] == "image/png"
    assert download.headers["content-disposition"].startswith("inline;")


@pytest.mark.parametrize(
    ("content", "filename", "content_type", "detail"),
    [
        (
            HTML,
            "me.png",
            "image/png",
            "content of type text/html is not accepted here; accepted: image/jpeg, image/png",
        ),
        (png(), "me.png", "image/jpeg", "the content is image/png, not the image/jpeg it was declared as"),
        (jpeg(), "me.html", "image/jpeg", "the content is image/jpeg, not the text/html its filename says"),
    ],
    ids=["a-page-as-an-image", "png-as-jpeg", "html-filename"],
)
def test_an_upload_of_another_type_is_refused_with_415_and_leaves_nothing(
    base_url: str,
    service: Service,
    storage_root: Path,
    content: bytes,
    filename: str,
    content_type: str,
    detail: str,
) -> None:
    response = httpx.post(f"{base_url}/uploads/me", files={"file": (filename, content, content_type)})
    assert response.status_code == 415
    assert response.json() == {"detail": detail}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "me" not in service.refs
    assert files_under(storage_root) == []


def test_a_request_body_is_sniffed_too(base_url: str, service: Service, storage_root: Path) -> None:
    refused = httpx.put(f"{base_url}/bodies/page", content=HTML, headers={"content-type": "image/png"})
    assert refused.status_code == 415
    assert files_under(storage_root) == []
    content = jpeg() + bytes(300_000)
    stored = httpx.put(f"{base_url}/bodies/photo", content=content, headers={"content-type": "image/jpeg"})
    assert stored.status_code == 201, stored.text
    ref = service.refs["photo"]
    assert (ref.content_type, ref.size) == ("image/jpeg", len(content))
    assert ref.sha256 == hashlib.sha256(content).hexdigest()
