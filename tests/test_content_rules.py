"""Content rules on local disk: a slot's allowed_types, decided by the content's first bytes."""

from __future__ import annotations

import hashlib
import io
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from granite_storage import (
    ConfigurationError,
    ContentTooLargeError,
    ContentTypeNotAllowedError,
    PluginHost,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
)
from granite_storage import _sniffing as sniffing
from granite_storage_local import LocalStorageBackend

from .conftest import files_under
from .samples import DOCX, HTML, SVG, TEXT, docx, gif, jpeg, mp4, pdf, png, webp, zip_archive

# Content rules read types with libmagic, which pip cannot install: skipped where it is missing.
pytestmark = pytest.mark.usefixtures("libmagic")

IMAGES = ["image/jpeg", "image/png"]


@pytest.fixture
def manager(local_backend: LocalStorageBackend, empty_host: PluginHost) -> StorageManager:
    """``avatars`` takes JPEG and PNG, ``media`` any image or video, ``docs`` PDF, Word and ZIP, ``notes``
    plain text, ``files`` anything (no rules)."""
    policies = [
        StoragePolicy("avatars", backend_key="local", max_size=64 * 1024, allowed_types=IMAGES),
        StoragePolicy("media", backend_key="local", allowed_types=["image/*", "video/*"]),
        StoragePolicy(
            "docs", backend_key="local", allowed_types=["application/pdf", DOCX, "application/zip"]
        ),
        StoragePolicy("notes", backend_key="local", allowed_types=["text/plain"]),
        StoragePolicy("files", backend_key="local"),
    ]
    return StorageManager(
        backends={"local": local_backend},
        policies={policy.storage_key: policy for policy in policies},
        plugins=empty_host,
    )


def put(
    manager: StorageManager,
    slot: str,
    content: bytes,
    *,
    content_type: str | None = None,
    filename: str | None = None,
) -> StoredObjectRef:
    return manager.put_stream(
        storage_key=slot,
        model_name="user",
        entity_id="7",
        field_name="file",
        stream=io.BytesIO(content),
        content_type=content_type,
        original_filename=filename,
    )


# -- what is accepted, and recorded ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("slot", "make", "content_type", "filename", "recorded"),
    [
        ("avatars", png, "image/png", "me.png", "image/png"),
        ("avatars", jpeg, "image/jpeg", "me.jpg", "image/jpeg"),
        ("avatars", jpeg, "image/jpg", "me.JPEG", "image/jpeg"),  # another name of the same type
        ("avatars", png, "application/octet-stream", "me.png", "image/png"),  # claims nothing
        ("avatars", png, None, None, "image/png"),  # no claim at all
        ("media", gif, "image/gif", "a.gif", "image/gif"),
        ("media", webp, "image/webp", "a.webp", "image/webp"),
        ("media", mp4, "video/mp4", "a.mp4", "video/mp4"),
        ("docs", pdf, "application/pdf", "a.pdf", "application/pdf"),
        ("docs", docx, DOCX, "a.docx", DOCX),
        ("docs", zip_archive, "application/x-zip-compressed", "a.zip", "application/zip"),
        ("notes", lambda: TEXT, "text/plain; charset=UTF-8", "list.txt", "text/plain; charset=utf-8"),
        ("notes", lambda: TEXT, "text/markdown", "list.md", "text/plain"),  # text, as far as bytes tell
    ],
)
def test_content_of_an_allowed_type_is_stored_with_the_type_its_bytes_have(
    manager: StorageManager,
    slot: str,
    make: Callable[[], bytes],
    content_type: str | None,
    filename: str | None,
    recorded: str,
) -> None:
    content = make()
    ref = put(manager, slot, content, content_type=content_type, filename=filename)
    assert ref.content_type == recorded
    assert manager.get(ref) == content
    assert ref.sha256 == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize(
    ("slot", "content", "content_type", "filename", "read_as"),
    [
        ("avatars", HTML, "image/png", "me.png", "text/html"),  # a page dressed as an image
        ("avatars", SVG, "image/svg+xml", "me.svg", "image/svg+xml"),
        ("avatars", gif(), "image/gif", "me.gif", "image/gif"),
        ("avatars", b"", "image/png", "me.png", "application/x-empty"),
        ("media", pdf(), "image/png", "a.png", "application/pdf"),
        ("docs", HTML, "application/pdf", "a.pdf", "text/html"),
        ("notes", HTML, "text/plain", "a.txt", "text/html"),
    ],
)
def test_content_of_another_type_is_refused_and_leaves_nothing(
    manager: StorageManager,
    storage_root: Path,
    slot: str,
    content: bytes,
    content_type: str,
    filename: str,
    read_as: str,
) -> None:
    with pytest.raises(ContentTypeNotAllowedError) as raised:
        put(manager, slot, content, content_type=content_type, filename=filename)
    assert raised.value.content_type == read_as
    assert raised.value.declared is None
    assert raised.value.allowed_types == manager.policy(slot).allowed_types
    assert isinstance(raised.value, ValueError)
    assert files_under(storage_root) == []


@pytest.mark.parametrize(
    ("make", "content_type", "filename", "declared", "said"),
    [
        (png, "image/jpeg", "me.png", "image/jpeg", "it was declared as"),
        (png, None, "me.jpg", "image/jpeg", "its filename says"),
        (png, "image/png", "me.html", "text/html", "its filename says"),  # the key would end in .html
        (jpeg, "image/png; charset=utf-8", None, "image/png", "it was declared as"),
    ],
)
def test_content_of_an_allowed_type_declared_as_another_is_refused_and_leaves_nothing(
    manager: StorageManager,
    storage_root: Path,
    make: Callable[[], bytes],
    content_type: str | None,
    filename: str | None,
    declared: str,
    said: str,
) -> None:
    with pytest.raises(ContentTypeNotAllowedError) as raised:
        put(manager, "avatars", make(), content_type=content_type, filename=filename)
    assert raised.value.declared == declared
    assert str(raised.value) == f"the content is {raised.value.content_type}, not the {declared} {said}"
    assert files_under(storage_root) == []


def test_a_slot_without_rules_stores_the_declared_type_and_never_sniffs(
    manager: StorageManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_sniffing(head: bytes) -> str:
        raise AssertionError("a slot without allowed_types sniffed its content")

    monkeypatch.setattr(sniffing, "sniff", no_sniffing)
    ref = put(manager, "files", HTML, content_type="image/png", filename="a.png")
    assert ref.content_type == "image/png"


def test_content_libmagic_cannot_read_is_an_octet_stream_and_refused(
    manager: StorageManager, storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def from_buffer(self, head: bytes) -> str:
            raise RuntimeError("libmagic failed")

    monkeypatch.setattr(sniffing, "_magic", Broken)
    with pytest.raises(ContentTypeNotAllowedError) as raised:
        put(manager, "avatars", png(), content_type="image/png")
    assert raised.value.content_type == "application/octet-stream"
    assert files_under(storage_root) == []


def test_put_bytes_goes_through_the_same_rules(manager: StorageManager) -> None:
    with pytest.raises(ContentTypeNotAllowedError):
        manager.put_bytes(
            storage_key="avatars",
            model_name="user",
            entity_id="7",
            field_name="avatar",
            content=HTML,
            content_type="image/png",
        )


# -- streaming: the head read to sniff goes to the backend first ------------------------------------


class ShortReads(io.RawIOBase):
    """A stream that returns at most ``step`` bytes a read, as sockets and pipes may."""

    def __init__(self, content: bytes, step: int) -> None:
        self._content = io.BytesIO(content)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self._content.readinto(memoryview(buffer)[: self._step])


@pytest.mark.parametrize(
    "size",
    [
        sniffing.SNIFF_BYTES - 1,
        sniffing.SNIFF_BYTES,
        sniffing.SNIFF_BYTES + 1,
        3 * 1024 * 1024 + 7,
    ],
)
@pytest.mark.parametrize("step", [1000, 1024 * 1024])
def test_sniffed_content_of_any_size_is_stored_whole_and_exact(
    manager: StorageManager, size: int, step: int
) -> None:
    content = (png() + bytes(range(256)) * (size // 256 + 1))[:size]
    ref = manager.put_stream(
        storage_key="media",
        model_name="m",
        entity_id="1",
        field_name="f",
        stream=ShortReads(content, step),
        content_type="image/png",
    )
    assert ref.size == size
    assert ref.sha256 == hashlib.sha256(content).hexdigest()
    assert manager.get(ref) == content


def test_the_size_limit_holds_for_sniffed_content_and_leaves_nothing(
    manager: StorageManager, storage_root: Path
) -> None:
    too_big = png() + bytes(64 * 1024)  # avatars take 64 KiB
    with pytest.raises(ContentTooLargeError):
        put(manager, "avatars", too_big, content_type="image/png")
    assert files_under(storage_root) == []
    exactly = too_big[: 64 * 1024]
    assert put(manager, "avatars", exactly, content_type="image/png").size == 64 * 1024


class RepeatingStream:
    """``size`` bytes starting with a PNG's, served in the sizes asked for; never all at once."""

    def __init__(self, size: int) -> None:
        self._head = png()
        self._block = bytes(1024 * 1024)
        self.remaining = size

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            raise AssertionError("the stream was asked for all of its content at once")
        if self._head:
            chunk, self._head = self._head[:size], self._head[size:]
        else:
            chunk = self._block[: min(size, self.remaining)]
        self.remaining -= len(chunk)
        return chunk


def test_sniffing_keeps_memory_flat(manager: StorageManager) -> None:
    # Python's own allocations while 64 MiB pass: a head and a chunk or two, never the content.
    size = 64 * 1024 * 1024
    tracemalloc.start()
    try:
        ref = manager.put_stream(
            storage_key="media",
            model_name="m",
            entity_id="1",
            field_name="f",
            stream=RepeatingStream(size),
            content_type="image/png",
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref.size == size
    assert ref.content_type == "image/png"
    assert peak < 8 * 1024 * 1024


# -- configuration -----------------------------------------------------------------------------------


def test_allowed_types_come_from_configuration(tmp_path: Path, plugin_host: PluginHost) -> None:
    manager = StorageManager.from_config(
        {
            "backends": {"disk": {"type": "local", "root": str(tmp_path / "root")}},
            "policies": {"avatars": {"backend": "disk", "allowed_types": ["Image/JPG", "image/png"]}},
        },
        plugins=plugin_host,
    )
    assert manager.policy("avatars").allowed_types == ("image/jpeg", "image/png")
    with pytest.raises(ContentTypeNotAllowedError):
        put(manager, "avatars", pdf(), filename="a.pdf")


@pytest.mark.parametrize(
    ("allowed_types", "message"),
    [
        ("image/png", "must be a list"),
        ([], "is empty"),
        (["*/*"], "is not a media type"),
        (["image/png; charset=utf-8"], "is not a media type"),
        (["image/png, text/html"], "is not a media type"),
        ([7], "is not a media type"),
    ],
)
def test_invalid_allowed_types_are_a_configuration_error(allowed_types: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        StoragePolicy("avatars", backend_key="local", allowed_types=allowed_types)  # type: ignore[arg-type]


def test_allowed_types_without_python_magic_are_refused_when_the_manager_is_built(
    local_backend: LocalStorageBackend, empty_host: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "magic", None)  # import magic raises ImportError
    sniffing._magic.cache_clear()
    try:
        policy = StoragePolicy("avatars", backend_key="local", allowed_types=IMAGES)
        with pytest.raises(ConfigurationError, match=r"granite-storage\[sniff\]"):
            StorageManager(
                backends={"local": local_backend}, policies={"avatars": policy}, plugins=empty_host
            )
    finally:
        sniffing._magic.cache_clear()
