"""StorageManager: the seed's API end to end through the real local backend."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from granite_storage import (
    ConfigurationError,
    ContentTooLargeError,
    IncompleteUploadError,
    InvalidKeyError,
    InvalidMetadataError,
    InvalidReferenceError,
    ObjectNotFoundError,
    PluginHost,
    Readable,
    StorageError,
    StorageManager,
    StoragePolicy,
    StoredObjectRef,
)
from granite_storage.headers import check_content_type
from granite_storage.keys import is_within_prefix
from granite_storage_local import LocalStorageBackend

from .conftest import entries_under, files_under

MiB = 1024 * 1024
TOKEN = re.compile(r"^(?P<token>[0-9a-f]+)(?P<extension>\.[a-z0-9]+)?$")


def put(
    manager: StorageManager,
    content: bytes = b"content",
    *,
    storage_key: str = "documents",
    original_filename: str | None = None,
    content_type: str | None = None,
) -> StoredObjectRef:
    return manager.put_bytes(
        storage_key=storage_key,
        model_name="document",
        entity_id="42",
        field_name="file",
        content=content,
        content_type=content_type,
        original_filename=original_filename,
    )


def put_stream(
    manager: StorageManager, stream: Readable, *, storage_key: str = "documents"
) -> StoredObjectRef:
    return manager.put_stream(
        storage_key=storage_key, model_name="document", entity_id="42", field_name="file", stream=stream
    )


# -- the seed's example, as the issue writes it ------------------------------------------------------


def test_the_seed_example_works_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    user_id = 42
    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(5000) + b"\xff\xd9"
    image_stream = io.BytesIO(jpeg)

    from granite_storage import ContentTooLargeError, StorageError, StorageManager, StoragePolicy
    from granite_storage.backends.local import LocalStorageBackend

    manager = StorageManager(
        backends={"local": LocalStorageBackend("./var/storage")},
        policies={
            "avatars": StoragePolicy(
                storage_key="avatars", backend_key="local", max_size=2 * 1024 * 1024, key_prefix="avatars"
            ),
            "documents": StoragePolicy(
                "documents", backend_key="local", max_size=10 * 1024 * 1024, key_prefix="docs"
            ),
        },
    )
    ref = manager.put_stream(
        storage_key="avatars",
        model_name="user",
        entity_id=str(user_id),
        field_name="avatar",
        stream=image_stream,
        content_type="image/jpeg",
        original_filename="photo.jpg",
    )
    data = manager.get(ref)
    assert data == jpeg
    assert manager.exists(ref)
    with manager.open(ref) as stream:
        assert stream.read() == jpeg
    assert stream.closed

    assert (ref.storage_key, ref.backend, ref.size) == ("avatars", "local", len(jpeg))
    assert ref.checksum == "sha256:" + hashlib.sha256(jpeg).hexdigest()
    assert (ref.content_type, ref.original_filename) == ("image/jpeg", "photo.jpg")
    assert re.fullmatch(r"avatars/user/avatar/([0-9a-f]{2})/\1[0-9a-f]{30}\.jpg", ref.location)
    assert (tmp_path / "var" / "storage" / ref.location).read_bytes() == jpeg

    manager.delete(ref)
    assert not manager.exists(ref)
    assert files_under(tmp_path / "var" / "storage") == []
    with pytest.raises(StorageError):
        manager.get(ref)
    with pytest.raises(ContentTooLargeError):
        manager.put_bytes(
            storage_key="avatars",
            model_name="user",
            entity_id=str(user_id),
            field_name="avatar",
            content=b"x" * (2 * 1024 * 1024 + 1),
        )


def test_local_backend_creates_its_root_directory(tmp_path: Path) -> None:
    root = tmp_path / "does" / "not" / "exist" / "yet"
    LocalStorageBackend(root)
    assert root.is_dir()


# -- storing and reading ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"some bytes", bytearray(b"some bytes"), memoryview(b"__some bytes__")[2:-2]],
    ids=["bytes", "bytearray", "memoryview"],
)
def test_put_bytes_accepts_any_bytes_like_content(
    manager: StorageManager, content: bytes | bytearray | memoryview
) -> None:
    ref = manager.put_bytes(
        storage_key="documents", model_name="document", entity_id="42", field_name="file", content=content
    )
    assert manager.get(ref) == b"some bytes"
    assert ref.size == len(b"some bytes")
    assert ref.sha256 == hashlib.sha256(b"some bytes").hexdigest()


def test_put_stream_accepts_any_object_with_read(manager: StorageManager) -> None:
    class Upload:
        def __init__(self) -> None:
            self._chunks = [b"first ", b"second ", b"third"]

        def read(self, size: int = -1, /) -> bytes:
            return self._chunks.pop(0) if self._chunks else b""

    ref = put_stream(manager, Upload())
    assert manager.get(ref) == b"first second third"
    assert ref.size == len(b"first second third")


def test_put_stream_records_size_and_checksum_of_a_multi_chunk_stream(manager: StorageManager) -> None:
    content = os.urandom(3 * MiB + 5)
    ref = put_stream(manager, io.BytesIO(content))
    assert ref.size == len(content)
    assert ref.checksum == "sha256:" + hashlib.sha256(content).hexdigest()
    assert manager.get(ref) == content


def test_reference_created_at_is_now_in_utc(manager: StorageManager) -> None:
    before = datetime.now(UTC)
    ref = put(manager)
    assert ref.created_at.tzinfo is not None
    assert before <= ref.created_at <= datetime.now(UTC)


def test_open_returns_a_readable_binary_file_usable_as_a_context_manager(manager: StorageManager) -> None:
    content = os.urandom(100_000)
    ref = put(manager, content)
    with manager.open(ref) as stream:
        assert stream.readable()
        assert stream.read(10) == content[:10]
        assert stream.read() == content[10:]
    assert stream.closed


def test_a_missing_object_is_a_storage_error_and_a_file_not_found_error(manager: StorageManager) -> None:
    ref = put(manager)
    manager.delete(ref)
    with pytest.raises(ObjectNotFoundError) as raised:
        manager.get(ref)
    assert isinstance(raised.value, StorageError)
    assert isinstance(raised.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        manager.open(ref)


def test_exists_tells_whether_the_object_is_stored(manager: StorageManager) -> None:
    ref = put(manager)
    assert manager.exists(ref)
    manager.delete(ref)
    assert not manager.exists(ref)


def test_delete_is_idempotent(manager: StorageManager, storage_root: Path) -> None:
    ref = put(manager)
    manager.delete(ref)
    manager.delete(ref)
    assert entries_under(storage_root) == []


def test_delete_removes_only_its_object(manager: StorageManager) -> None:
    kept, gone = put(manager, b"kept"), put(manager, b"gone")
    manager.delete(gone)
    assert manager.get(kept) == b"kept"


def test_a_reference_loaded_from_json_reads_the_object(manager: StorageManager) -> None:
    ref = put(manager, b"persisted")
    assert manager.get(StoredObjectRef.from_dict(ref.to_dict())) == b"persisted"


# -- size limits ------------------------------------------------------------------------------------


def limited_manager(backend: LocalStorageBackend, host: PluginHost, max_size: int) -> StorageManager:
    return StorageManager(
        backends={"local": backend},
        policies={"small": StoragePolicy("small", backend_key="local", max_size=max_size)},
        plugins=host,
    )


@pytest.mark.parametrize("max_size", [0, 1, 1000, 2 * MiB + 3])
def test_exactly_max_size_is_accepted_by_put_bytes_and_put_stream(
    local_backend: LocalStorageBackend, empty_host: PluginHost, max_size: int
) -> None:
    manager = limited_manager(local_backend, empty_host, max_size)
    content = os.urandom(max_size)
    by_bytes = put(manager, content, storage_key="small")
    by_stream = put_stream(manager, io.BytesIO(content), storage_key="small")
    assert manager.get(by_bytes) == manager.get(by_stream) == content


@pytest.mark.parametrize("max_size", [0, 1, 1000, 2 * MiB + 3])
def test_one_byte_over_max_size_is_refused_by_put_bytes_and_leaves_no_file(
    local_backend: LocalStorageBackend, empty_host: PluginHost, storage_root: Path, max_size: int
) -> None:
    manager = limited_manager(local_backend, empty_host, max_size)
    with pytest.raises(ContentTooLargeError) as raised:
        put(manager, os.urandom(max_size + 1), storage_key="small")
    assert raised.value.max_size == max_size
    assert files_under(storage_root) == []


@pytest.mark.parametrize("max_size", [0, 1, 1000, 2 * MiB + 3])
def test_one_byte_over_max_size_is_refused_by_put_stream_and_leaves_no_file(
    local_backend: LocalStorageBackend, empty_host: PluginHost, storage_root: Path, max_size: int
) -> None:
    manager = limited_manager(local_backend, empty_host, max_size)
    with pytest.raises(ContentTooLargeError):
        put_stream(manager, io.BytesIO(os.urandom(max_size + 1)), storage_key="small")
    assert files_under(storage_root) == []
    assert list(local_backend.list()) == []


def test_put_bytes_refuses_oversized_content_before_the_backend_is_asked(
    storage_root: Path, empty_host: PluginHost
) -> None:
    class CountingBackend(LocalStorageBackend):
        puts = 0

        def put(
            self,
            key: str,
            stream: Readable,
            *,
            content_type: str | None = None,
            original_filename: str | None = None,
        ) -> None:
            CountingBackend.puts += 1
            super().put(key, stream, content_type=content_type, original_filename=original_filename)

    manager = limited_manager(CountingBackend(storage_root), empty_host, 10)
    with pytest.raises(ContentTooLargeError):
        put(manager, b"x" * 11, storage_key="small")
    assert CountingBackend.puts == 0
    put(manager, b"x" * 10, storage_key="small")
    assert CountingBackend.puts == 1


def test_an_oversized_stream_is_not_read_far_past_the_limit(
    local_backend: LocalStorageBackend, empty_host: PluginHost
) -> None:
    source = io.BytesIO(b"x" * (10 * MiB))
    manager = limited_manager(local_backend, empty_host, 1000)
    with pytest.raises(ContentTooLargeError):
        put_stream(manager, source, storage_key="small")
    assert source.tell() == 1001


def test_a_failing_upload_stream_leaves_no_file(manager: StorageManager, storage_root: Path) -> None:
    class DroppedConnection:
        def __init__(self) -> None:
            self._sent = 0

        def read(self, size: int = -1, /) -> bytes:
            if self._sent >= 3 * MiB:
                raise ConnectionResetError("client went away")
            self._sent += MiB
            return b"y" * MiB

    with pytest.raises(ConnectionResetError):
        put_stream(manager, DroppedConnection())
    assert files_under(storage_root) == []


def test_a_refused_upload_leaves_no_directories_behind(
    local_backend: LocalStorageBackend, empty_host: PluginHost, storage_root: Path
) -> None:
    manager = limited_manager(local_backend, empty_host, 10)
    with pytest.raises(ContentTooLargeError):
        put_stream(manager, io.BytesIO(b"x" * 11), storage_key="small")
    assert entries_under(storage_root) == []


# -- a backend that does not read its whole stream ---------------------------------------------------


class StopsEarlyBackend(LocalStorageBackend):
    """Breaks the backend contract: stores only the first ``keep`` bytes and returns."""

    keep = 10

    def put(
        self,
        key: str,
        stream: Readable,
        *,
        content_type: str | None = None,
        original_filename: str | None = None,
    ) -> None:
        head = stream.read(self.keep)
        super().put(key, io.BytesIO(head), content_type=content_type, original_filename=original_filename)


def stops_early_manager(root: Path, host: PluginHost, max_size: int | None = None) -> StorageManager:
    return StorageManager(
        backends={"sloppy": StopsEarlyBackend(root)},
        policies={"documents": StoragePolicy("documents", backend_key="sloppy", max_size=max_size)},
        plugins=host,
    )


def via_put_bytes(manager: StorageManager, content: bytes) -> StoredObjectRef:
    return put(manager, content)


def via_put_stream(manager: StorageManager, content: bytes) -> StoredObjectRef:
    return put_stream(manager, io.BytesIO(content))


@pytest.mark.parametrize("store", [via_put_bytes, via_put_stream])
def test_a_backend_that_stops_reading_early_raises_incomplete_upload_and_leaves_nothing(
    storage_root: Path, empty_host: PluginHost, store: Callable[[StorageManager, bytes], StoredObjectRef]
) -> None:
    manager = stops_early_manager(storage_root, empty_host)
    content = b"z" * 100
    with pytest.raises(IncompleteUploadError) as raised:
        store(manager, content)
    assert isinstance(raised.value, StorageError)
    assert files_under(storage_root) == []


def test_a_backend_that_reads_everything_it_is_given_is_not_incomplete(
    storage_root: Path, empty_host: PluginHost
) -> None:
    manager = stops_early_manager(storage_root, empty_host)
    ref = put(manager, b"z" * StopsEarlyBackend.keep)
    assert manager.get(ref) == b"z" * StopsEarlyBackend.keep


def test_over_limit_content_is_refused_even_when_the_backend_stops_at_the_limit(
    storage_root: Path, empty_host: PluginHost
) -> None:
    manager = stops_early_manager(storage_root, empty_host, max_size=StopsEarlyBackend.keep)
    with pytest.raises(ContentTooLargeError):
        put_stream(manager, io.BytesIO(b"z" * (StopsEarlyBackend.keep + 1)))
    assert files_under(storage_root) == []


# -- configuration errors name what is configured ---------------------------------------------------


def test_unknown_storage_key_names_the_configured_ones(manager: StorageManager) -> None:
    with pytest.raises(ConfigurationError, match=r"'invoices'.*\['avatars', 'documents'\]"):
        put(manager, storage_key="invoices")


def test_unknown_storage_key_is_a_storage_error(manager: StorageManager) -> None:
    with pytest.raises(StorageError):
        manager.policy("invoices")


def test_a_reference_naming_another_backend_than_its_slots_is_refused(manager: StorageManager) -> None:
    ref = StoredObjectRef(storage_key="documents", backend="s3", location="docs/a/b/c/d.txt", size=1)
    for operation in (manager.get, manager.open, manager.stat, manager.exists, manager.delete):
        with pytest.raises(InvalidReferenceError, match=r"'s3'.*'documents'.*'local'"):
            operation(ref)


def test_a_tampered_reference_cannot_reach_a_slot_with_the_same_prefix_on_another_backend(
    tmp_path: Path, empty_host: PluginHost
) -> None:
    manager = StorageManager(
        backends={
            "public": LocalStorageBackend(tmp_path / "public"),
            "private": LocalStorageBackend(tmp_path / "private"),
        },
        policies={
            "avatars": StoragePolicy("avatars", backend_key="public", key_prefix="files"),
            "secrets": StoragePolicy("secrets", backend_key="private", key_prefix="files"),
        },
        plugins=empty_host,
    )
    secret = manager.put_bytes(
        storage_key="secrets", model_name="m", entity_id="1", field_name="f", content=b"TOP SECRET"
    )
    forged = StoredObjectRef(
        storage_key="avatars", backend="private", location=secret.location, size=secret.size
    )
    for operation in (manager.get, manager.open, manager.stat, manager.exists, manager.delete):
        with pytest.raises(InvalidReferenceError):
            operation(forged)
    assert manager.get(secret) == b"TOP SECRET"


def test_a_policy_naming_an_unconfigured_backend_is_refused(
    local_backend: LocalStorageBackend, empty_host: PluginHost
) -> None:
    with pytest.raises(ConfigurationError, match=r"'archive'.*\['local'\]"):
        StorageManager(
            backends={"local": local_backend},
            policies={"documents": StoragePolicy("documents", backend_key="archive")},
            plugins=empty_host,
        )


def test_a_policy_registered_under_another_storage_key_is_refused(
    local_backend: LocalStorageBackend, empty_host: PluginHost
) -> None:
    with pytest.raises(ConfigurationError, match=r"'docs'.*'documents'"):
        StorageManager(
            backends={"local": local_backend},
            policies={"docs": StoragePolicy("documents", backend_key="local")},
            plugins=empty_host,
        )


def test_a_backend_that_is_not_a_storage_backend_is_refused(empty_host: PluginHost) -> None:
    with pytest.raises(ConfigurationError, match="'local'"):
        StorageManager(
            backends={"local": object()},  # type: ignore[dict-item]
            policies={},
            plugins=empty_host,
        )


def test_backends_and_policies_are_read_only(manager: StorageManager) -> None:
    with pytest.raises(TypeError):
        manager.backends["other"] = manager.backend("local")  # type: ignore[index]
    with pytest.raises(TypeError):
        manager.policies["other"] = manager.policy("documents")  # type: ignore[index]


def test_the_manager_does_not_follow_later_changes_to_the_mappings_it_was_given(
    local_backend: LocalStorageBackend, empty_host: PluginHost
) -> None:
    policies = {"documents": StoragePolicy("documents", backend_key="local")}
    manager = StorageManager(backends={"local": local_backend}, policies=policies, plugins=empty_host)
    policies["avatars"] = StoragePolicy("avatars", backend_key="local")
    assert list(manager.policies) == ["documents"]


# -- key prefixes on one backend never overlap -------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("docs", "docs"), ("docs", "docs/sub"), ("docs/sub", "docs"), ("a/b/c", "a"), ("Docs", "docs/x")],
)
def test_overlapping_key_prefixes_on_one_backend_are_refused(
    local_backend: LocalStorageBackend, empty_host: PluginHost, first: str, second: str
) -> None:
    with pytest.raises(ConfigurationError, match="overlapping key prefixes"):
        StorageManager(
            backends={"local": local_backend},
            policies={
                "one": StoragePolicy("one", backend_key="local", key_prefix=first),
                "two": StoragePolicy("two", backend_key="local", key_prefix=second),
            },
            plugins=empty_host,
        )


def test_a_key_prefix_equal_to_another_slots_default_prefix_is_refused(
    local_backend: LocalStorageBackend, empty_host: PluginHost
) -> None:
    with pytest.raises(ConfigurationError, match="overlapping"):
        StorageManager(
            backends={"local": local_backend},
            policies={
                "docs": StoragePolicy("docs", backend_key="local"),
                "documents": StoragePolicy("documents", backend_key="local", key_prefix="docs"),
            },
            plugins=empty_host,
        )


def test_prefixes_that_only_share_a_beginning_are_allowed(
    local_backend: LocalStorageBackend, empty_host: PluginHost
) -> None:
    manager = StorageManager(
        backends={"local": local_backend},
        policies={
            "docs": StoragePolicy("docs", backend_key="local", key_prefix="docs"),
            "docs2": StoragePolicy("docs2", backend_key="local", key_prefix="docs2"),
        },
        plugins=empty_host,
    )
    one, two = put(manager, b"1", storage_key="docs"), put(manager, b"2", storage_key="docs2")
    assert (manager.get(one), manager.get(two)) == (b"1", b"2")


def test_equal_prefixes_on_different_backends_are_allowed(tmp_path: Path, empty_host: PluginHost) -> None:
    manager = StorageManager(
        backends={
            "hot": LocalStorageBackend(tmp_path / "hot"),
            "cold": LocalStorageBackend(tmp_path / "cold"),
        },
        policies={
            "recent": StoragePolicy("recent", backend_key="hot", key_prefix="docs"),
            "archive": StoragePolicy("archive", backend_key="cold", key_prefix="docs"),
        },
        plugins=empty_host,
    )
    ref = put(manager, b"old", storage_key="archive")
    assert files_under(tmp_path / "cold") == [ref.location]
    assert files_under(tmp_path / "hot") == []


# -- content types ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", "application/pdf"),
        ("photo.JPG", "image/jpeg"),
        ("notes.txt", "text/plain"),
        ("archive.unknown-extension", None),
        ("no-extension", None),
        (None, None),
    ],
)
def test_content_type_is_guessed_from_the_filename(
    manager: StorageManager, filename: str | None, expected: str | None
) -> None:
    assert put(manager, original_filename=filename).content_type == expected


def test_a_given_content_type_wins_over_the_filename(manager: StorageManager) -> None:
    ref = put(manager, original_filename="data.txt", content_type="application/json")
    assert ref.content_type == "application/json"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("application/vnd.api+json", "application/vnd.api+json"),
        ("  image/png  ", "image/png"),
        ("Image/PNG; x=y", "image/png"),
        ('text/plain; Charset="UTF-8"; format=flowed', "text/plain; charset=utf-8"),
    ],
)
def test_valid_content_types_are_stored_normalised_with_only_their_charset(
    manager: StorageManager, given: str, stored: str
) -> None:
    assert put(manager, content_type=given).content_type == stored


@pytest.mark.parametrize(
    "content_type", ["image/png; x=y, text/html", "image/png, text/html", 'image/png; x="y, text/html']
)
def test_a_list_of_content_types_is_refused_and_stores_nothing(
    manager: StorageManager, storage_root: Path, content_type: str
) -> None:
    # Browsers and fetch() read the last type of a list: stored as sent, this one would be HTML.
    with pytest.raises(InvalidMetadataError, match="not a valid content type"):
        put(manager, content_type=content_type)
    assert files_under(storage_root) == []


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain\r\nX-Injected: yes",
        "text/plain\nX-Injected: yes",
        "text/plain;\r\nX-Injected: yes",
        "text/plain\x00",
        "",
        "plain",
        "text/",
        "/plain",
        "text / plain",
        "text/plain/extra",
    ],
)
def test_an_invalid_content_type_raises_invalid_metadata_error_and_stores_nothing(
    manager: StorageManager, storage_root: Path, content_type: str
) -> None:
    with pytest.raises(InvalidMetadataError) as raised:
        put(manager, content_type=content_type)
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, StorageError)
    assert files_under(storage_root) == []


def test_a_content_type_with_cr_lf_before_its_parameters_is_refused(manager: StorageManager) -> None:
    with pytest.raises(InvalidMetadataError):
        put(manager, content_type="text/plain\r\n; charset=utf-8")


def test_check_content_type_is_the_validation_the_manager_applies() -> None:
    assert check_content_type(" text/plain; charset=utf-8\t") == "text/plain; charset=utf-8"
    with pytest.raises(InvalidMetadataError):
        check_content_type("text/plain\nX-Injected: yes")


def test_a_non_ascii_content_type_is_refused(manager: StorageManager) -> None:
    with pytest.raises(InvalidMetadataError):
        put(manager, content_type="t\u00ebxt/plain")


# -- keys -------------------------------------------------------------------------------------------


def test_keys_are_prefix_model_field_fanout_and_a_token(manager: StorageManager) -> None:
    ref = manager.put_bytes(
        storage_key="documents",
        model_name="invoice",
        entity_id="1234",
        field_name="scan",
        content=b"%PDF",
        original_filename="scan.pdf",
    )
    prefix, model, field, fanout, token = ref.location.split("/")
    assert (prefix, model, field) == ("docs", "invoice", "scan")
    assert TOKEN.match(token)
    assert token.startswith(fanout)
    assert len(fanout) == 2


def test_keys_carry_at_least_96_random_bits(manager: StorageManager) -> None:
    tokens = [put(manager).location.rsplit("/", 1)[1] for _ in range(50)]
    for token in tokens:
        match = TOKEN.match(token)
        assert match is not None
        assert len(match["token"]) >= 24, "fewer than 96 bits of hex"
        assert len(match["token"]) == 32
    assert len(set(tokens)) == len(tokens)


@pytest.mark.parametrize(
    ("filename", "extension"),
    [
        ("photo.JPG", ".jpg"),
        ("Report.Final.PDF", ".pdf"),
        ("archive.tar.gz", ".gz"),
        ("C:\\Users\\me\\song.Mp3", ".mp3"),
        ("../../etc/passwd", ""),
        (".bashrc", ""),
        ("name.", ""),
        ("evil.php%00.jpg", ".jpg"),
        ("weird.j p g", ""),
        ("file.\u0440\u0434\u0444", ""),
        ("long." + "x" * 17, ""),
        (None, ""),
    ],
)
def test_keys_end_with_a_safe_lower_case_extension(
    manager: StorageManager, filename: str | None, extension: str
) -> None:
    token = put(manager, original_filename=filename).location.rsplit("/", 1)[1]
    match = TOKEN.match(token)
    assert match is not None
    assert (match["extension"] or "") == extension


HOSTILE_VALUES = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "",
    "a/../../b",
    "C:\\Windows\\System32",
    "nul\x00byte",
    "new\nline",
    "\u00fcn\u00efc\u00f6d\u00e9 \u0438\u0434 \U0001f680",
    "\uff0e\uff0e\uff0f\uff0e\uff0e",
    "x" * 5000,
]


@pytest.mark.parametrize("hostile", HOSTILE_VALUES, ids=lambda value: repr(value)[:30])
def test_hostile_caller_values_keep_the_key_inside_the_slot_prefix(
    manager: StorageManager, storage_root: Path, hostile: str
) -> None:
    ref = manager.put_bytes(
        storage_key="documents",
        model_name=hostile,
        entity_id=hostile,
        field_name=hostile,
        content=b"payload",
        original_filename=hostile,
    )
    assert is_within_prefix(ref.location, "docs")
    assert len(ref.location.split("/")) == 5
    assert files_under(storage_root) == [ref.location]
    assert (storage_root / ref.location).resolve().is_relative_to((storage_root / "docs").resolve())
    assert manager.get(ref) == b"payload"
    assert ref.original_filename == hostile


def test_a_5000_character_filename_is_kept_in_the_reference_not_the_key(manager: StorageManager) -> None:
    filename = "y" * 5000 + ".PDF"
    ref = put(manager, original_filename=filename)
    assert ref.original_filename == filename
    assert ref.location.endswith(".pdf")
    assert len(ref.location) < 200


@pytest.mark.parametrize(
    "location",
    ["../outside.txt", "docs/../../outside.txt", "/etc/passwd", "docs\\..\\..\\outside.txt", "docs/x\x00"],
)
def test_a_tampered_reference_is_refused_and_touches_nothing_outside(
    manager: StorageManager, tmp_path: Path, location: str
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    ref = StoredObjectRef(storage_key="documents", backend="local", location=location, size=9)
    for operation in (manager.get, manager.open, manager.exists, manager.delete):
        with pytest.raises(InvalidKeyError):
            operation(ref)
    assert outside.read_bytes() == b"not yours"


def test_a_reference_outside_its_slots_prefix_is_refused(manager: StorageManager) -> None:
    document = put(manager, b"confidential", storage_key="documents")
    forged = StoredObjectRef(
        storage_key="avatars", backend="local", location=document.location, size=document.size
    )
    with pytest.raises(InvalidKeyError):
        manager.get(forged)


# -- a backend that breaks the contract on failure ---------------------------------------------------


class LeavesDebrisBackend(LocalStorageBackend):
    """Breaks the backend contract: publishes what it read, then fails."""

    def put(
        self,
        key: str,
        stream: Readable,
        *,
        content_type: str | None = None,
        original_filename: str | None = None,
    ) -> None:
        super().put(key, io.BytesIO(stream.read(5)))
        raise OSError("disk on fire")


def test_the_manager_removes_what_a_failing_backend_left_behind(
    storage_root: Path, empty_host: PluginHost
) -> None:
    manager = StorageManager(
        backends={"messy": LeavesDebrisBackend(storage_root)},
        policies={"documents": StoragePolicy("documents", backend_key="messy")},
        plugins=empty_host,
    )
    with pytest.raises(OSError, match="disk on fire"):
        put(manager, b"0123456789")
    assert files_under(storage_root) == []


# -- stat --------------------------------------------------------------------------------------------


def test_stat_reports_the_size_and_time_of_a_stored_object(manager: StorageManager) -> None:
    before = datetime.now(UTC)
    ref = put(manager, b"twelve bytes")
    info = manager.stat(ref)
    assert (info.key, info.size) == (ref.location, 12)
    assert info.last_modified.tzinfo is not None
    assert abs((info.last_modified - before).total_seconds()) < 60


def test_stat_of_a_deleted_object_raises_not_found(manager: StorageManager) -> None:
    ref = put(manager, b"gone soon")
    manager.delete(ref)
    with pytest.raises(ObjectNotFoundError):
        manager.stat(ref)


class UndeletableBackend(LeavesDebrisBackend):
    """Fails its upload and then its delete too."""

    def delete(self, key: str) -> None:
        raise OSError("read-only file system")


def test_a_failing_cleanup_is_logged_and_the_upload_error_raised(
    storage_root: Path, empty_host: PluginHost, caplog: pytest.LogCaptureFixture
) -> None:
    manager = StorageManager(
        backends={"stuck": UndeletableBackend(storage_root)},
        policies={"documents": StoragePolicy("documents", backend_key="stuck")},
        plugins=empty_host,
    )
    with pytest.raises(OSError, match="disk on fire"):
        put(manager, b"0123456789")
    assert "could not delete" in caplog.text
    assert "read-only file system" in caplog.text


def test_something_else_than_a_reference_is_a_type_error(manager: StorageManager) -> None:
    with pytest.raises(TypeError, match="StoredObjectRef"):
        manager.get({"location": "docs/x"})  # type: ignore[arg-type]


def test_prefixes_that_differ_only_in_unicode_normalisation_are_one_prefix(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path)
    with pytest.raises(ConfigurationError, match="overlapping key prefixes"):
        StorageManager(
            backends={"local": backend},
            policies={
                "a": StoragePolicy("a", backend_key="local", key_prefix="caf\u00e9"),
                "b": StoragePolicy("b", backend_key="local", key_prefix="cafe\u0301"),
            },
        )


@pytest.mark.parametrize("second", ["root", "root/thumbs", "root/./thumbs/.."])
def test_two_backend_names_over_one_directory_tree_are_refused(tmp_path: Path, second: str) -> None:
    with pytest.raises(ConfigurationError, match=r"backends 'files' and 'thumbs' write into one store"):
        StorageManager(
            backends={
                "files": LocalStorageBackend(tmp_path / "root"),
                "thumbs": LocalStorageBackend(tmp_path / second),
            },
            policies={
                "docs": StoragePolicy("docs", backend_key="files", key_prefix="docs"),
                "avatars": StoragePolicy("avatars", backend_key="thumbs", key_prefix="avatars"),
            },
        )


def test_a_root_reached_through_a_symlink_is_the_same_store(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "root")
    with pytest.raises(ConfigurationError, match="one store"):
        StorageManager(
            backends={
                "a": LocalStorageBackend(tmp_path / "root"),
                "b": LocalStorageBackend(tmp_path / "alias"),
            },
            policies={},
        )


def test_backends_with_roots_side_by_side_are_separate_stores(tmp_path: Path) -> None:
    manager = StorageManager(
        backends={"a": LocalStorageBackend(tmp_path / "a"), "b": LocalStorageBackend(tmp_path / "ab")},
        policies={
            "docs": StoragePolicy("docs", backend_key="a"),
            "more": StoragePolicy("more", backend_key="b", key_prefix="docs"),
        },
    )
    assert set(manager.backends) == {"a", "b"}
