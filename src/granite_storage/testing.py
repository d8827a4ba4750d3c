"""A conformance suite every backend package runs against itself.

Subclass :class:`BackendConformanceSuite` in a test module under a name pytest collects, and provide a
``backend`` fixture that returns a fresh, empty backend::

    import pytest
    from granite_storage.testing import BackendConformanceSuite
    from acme_storage import AcmeBackend

    class TestAcmeConformance(BackendConformanceSuite):
        @pytest.fixture
        def backend(self, tmp_path):
            return AcmeBackend(tmp_path)

Every inherited test then runs against the backend: round trips through the manager, sizes and
checksums, byte ranges, URLs (given, or refused with
:class:`~granite_storage.UnsupportedOperationError`), verification, not-found errors, idempotent
deletes, batch deletes, listings with size and modification time (also while objects are deleted,
and with unsafe prefixes refused), six threads at once, over-limit and failed uploads leaving nothing
behind, removing incomplete uploads, and keys that try to escape the backend. Requires pytest
(``pip install "granite-storage[testing]"``; from a checkout, see the conformance page).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from granite_storage.backend import StorageBackend
from granite_storage.errors import (
    ContentTooLargeError,
    InvalidKeyError,
    ObjectNotFoundError,
    UnsupportedOperationError,
)
from granite_storage.keys import MAX_KEY_LENGTH, is_within_prefix
from granite_storage.manager import StorageManager
from granite_storage.plugins import PluginHost
from granite_storage.policy import StoragePolicy
from granite_storage.refs import StoredObjectRef
from granite_storage.streams import SizeLimitedStream

__all__ = ["UNSAFE_KEYS", "BackendConformanceSuite", "FailingStream"]

#: Keys that must be refused with :class:`~granite_storage.InvalidKeyError` by every backend operation:
#: the empty key, absolute paths (``/etc/passwd``, ``C:/Windows/win.ini``), ``..`` and ``.`` segments,
#: empty segments (``slot//file``, ``slot/``), backslashes, NUL and newline characters, a segment
#: starting with a dot (``slot/.hidden``), and a key longer than
#: :data:`~granite_storage.keys.MAX_KEY_LENGTH`. A tuple of strings; print it for the exact values.
UNSAFE_KEYS = (
    "",
    "/etc/passwd",
    "../outside",
    "slot/../../outside",
    "slot/./file",
    "slot//file",
    "slot/",
    "slot\\..\\..\\outside",
    "C:/Windows/win.ini",
    "slot/nul\x00byte",
    "slot/new\nline",
    "slot/.hidden",
    "slot/lone\udcffsurrogate",
    "slot/" + "x" * MAX_KEY_LENGTH,
)

LIMIT = 64 * 1024


class FailingStream(io.RawIOBase):
    """A stream that yields ``good_bytes`` bytes, then raises :class:`OSError` (a dropped upload)."""

    def __init__(self, good_bytes: int) -> None:
        super().__init__()
        self._remaining = good_bytes

    def readable(self) -> bool:
        """Return ``True``."""
        return True

    def readinto(self, buffer: memoryview | bytearray, /) -> int:  # type: ignore[override]
        """Fill ``buffer`` with ``x`` bytes until the good bytes run out, then fail."""
        if self._remaining <= 0:
            raise OSError("connection reset by peer")
        count = min(len(buffer), self._remaining)
        buffer[:count] = b"x" * count
        self._remaining -= count
        return count


class BackendConformanceSuite:
    """The behaviour every :class:`~granite_storage.StorageBackend` must show.

    Subclasses provide the ``backend`` fixture (a fresh, empty backend per test). They may override
    ``policy_prefix`` or ``large_size`` class attributes, and add backend-specific tests beside these.
    """

    #: The key prefix of the slot the suite stores into.
    policy_prefix = "conformance"
    #: Size of the multi-chunk object in the round-trip test.
    large_size = 3 * 1024 * 1024 + 17

    @pytest.fixture
    def backend(self) -> StorageBackend:
        """The backend under test: override in the subclass."""
        raise NotImplementedError("provide a `backend` fixture returning a fresh, empty backend")

    @pytest.fixture
    def manager(self, backend: StorageBackend) -> StorageManager:
        """A manager with one limited slot (``limited``) and one unlimited slot on the backend."""
        return StorageManager(
            backends={"under-test": backend},
            policies={
                "limited": StoragePolicy(
                    "limited",
                    backend_key="under-test",
                    max_size=LIMIT,
                    key_prefix=f"{self.policy_prefix}/limited",
                ),
                "open": StoragePolicy(
                    "open", backend_key="under-test", key_prefix=f"{self.policy_prefix}/open"
                ),
            },
            plugins=PluginHost(disabled=()),
        )

    # -- round trips ------------------------------------------------------------------------------

    def test_put_bytes_round_trip_records_size_and_checksum(self, manager: StorageManager) -> None:
        content = b"hello granite\n" * 100
        ref = self._put_bytes(manager, content, filename="Greeting.TXT")
        assert manager.get(ref) == content
        assert ref.size == len(content)
        assert ref.checksum == "sha256:" + hashlib.sha256(content).hexdigest()
        assert ref.original_filename == "Greeting.TXT"
        assert ref.content_type == "text/plain"
        assert ref.location.endswith(".txt")
        assert is_within_prefix(ref.location, f"{self.policy_prefix}/open")

    def test_put_stream_round_trip_of_a_multi_chunk_object(self, manager: StorageManager) -> None:
        content = os.urandom(self.large_size)
        ref = manager.put_stream(
            storage_key="open",
            model_name="document",
            entity_id="7",
            field_name="file",
            stream=io.BytesIO(content),
            content_type="application/octet-stream",
        )
        with manager.open(ref) as stream:
            assert stream.read() == content
        assert ref.size == len(content)
        assert ref.sha256 == hashlib.sha256(content).hexdigest()

    def test_open_streams_in_chunks(self, manager: StorageManager) -> None:
        content = os.urandom(200_000)
        ref = self._put_bytes(manager, content)
        with manager.open(ref) as stream:
            chunks = list(iter(lambda: stream.read(65_536), b""))
        assert b"".join(chunks) == content
        assert len(chunks) > 1

    # -- range reads --------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("start", "end"),
        [
            (0, None),
            (10, None),
            (10, 20),
            (0, 1),
            (5, 5),
            (199_999, None),
            (199_990, 250_000),
            (200_000, None),
            (300_000, None),
            (300_000, 400_000),
            (65_530, 131_080),
        ],
    )
    def test_open_reads_a_byte_range_like_a_slice(
        self, manager: StorageManager, start: int, end: int | None
    ) -> None:
        content = os.urandom(200_000)
        ref = self._put_bytes(manager, content)
        with manager.open(ref, start=start, end=end) as stream:
            assert stream.read() == content[start:end]

    def test_a_byte_range_streams_in_chunks(self, manager: StorageManager) -> None:
        content = os.urandom(self.large_size)
        ref = manager.put_stream(
            storage_key="open", model_name="m", entity_id="1", field_name="f", stream=io.BytesIO(content)
        )
        start, end = 1_000_003, self.large_size - 5
        with manager.open(ref, start=start, end=end) as stream:
            chunks = list(iter(lambda: stream.read(65_536), b""))
        assert b"".join(chunks) == content[start:end]
        assert len(chunks) > 1

    @pytest.mark.parametrize(("start", "end"), [(0, None), (0, 10), (3, None)])
    def test_a_byte_range_of_an_empty_object_is_empty(
        self, manager: StorageManager, start: int, end: int | None
    ) -> None:
        ref = self._put_bytes(manager, b"")
        with manager.open(ref, start=start, end=end) as stream:
            assert stream.read() == b""

    @pytest.mark.parametrize(("start", "end"), [(-1, None), (10, 9), (0, -1)])
    def test_an_invalid_byte_range_is_refused(
        self, manager: StorageManager, backend: StorageBackend, start: int, end: int | None
    ) -> None:
        ref = self._put_bytes(manager, b"0123456789abcdef")
        with pytest.raises(ValueError, match=r"start|end"):
            manager.open(ref, start=start, end=end)
        with pytest.raises(ValueError, match=r"start|end"):
            backend.open_range(ref.location, start, end)

    def test_a_byte_range_of_a_missing_object_raises_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(ObjectNotFoundError):
            backend.open_range(f"{self.policy_prefix}/never/stored.bin", 2, 10)
        with pytest.raises(ObjectNotFoundError):
            backend.open_range(f"{self.policy_prefix}/never/stored.bin", 0, 0)

    # -- URLs and verification --------------------------------------------------------------------

    def test_url_is_given_or_refused_with_unsupported_operation(self, manager: StorageManager) -> None:
        ref = self._put_bytes(manager, b"linked", filename="r\u00e9sum\u00e9.txt")
        try:
            url = manager.url(ref, expires_in=timedelta(minutes=5))
        except UnsupportedOperationError as exc:
            refusal: Exception | None = exc
        else:
            refusal = None
            assert isinstance(url, str)
            assert url.startswith(("http://", "https://"))
        if refusal is not None:
            assert isinstance(refusal, NotImplementedError)
            assert "URL" in str(refusal)
        with pytest.raises(ValueError, match="expires_in"):
            manager.url(ref, expires_in=timedelta(0))

    def test_verify_accepts_the_stored_object_and_detects_a_changed_one(
        self, manager: StorageManager, backend: StorageBackend
    ) -> None:
        ref = self._put_bytes(manager, b"original content")
        assert manager.verify(ref)
        backend.put(ref.location, io.BytesIO(b"tampered content"))  # same size, other bytes
        assert not manager.verify(ref)
        backend.put(ref.location, io.BytesIO(b"original"))
        assert not manager.verify(ref)
        manager.delete(ref)
        with pytest.raises(ObjectNotFoundError):
            manager.verify(ref)

    def test_empty_object_round_trip(self, manager: StorageManager) -> None:
        ref = self._put_bytes(manager, b"")
        assert ref.size == 0
        assert manager.get(ref) == b""
        assert manager.exists(ref)

    def test_each_put_gets_a_new_key(self, manager: StorageManager) -> None:
        first = self._put_bytes(manager, b"one")
        second = self._put_bytes(manager, b"two")
        assert first.location != second.location
        assert (manager.get(first), manager.get(second)) == (b"one", b"two")

    def test_put_replaces_an_existing_object_at_the_same_key(self, backend: StorageBackend) -> None:
        key = f"{self.policy_prefix}/direct/object.bin"
        backend.put(key, io.BytesIO(b"first version"))
        backend.put(key, io.BytesIO(b"second"))
        assert backend.get(key) == b"second"
        assert backend.stat(key).size == len(b"second")

    # -- missing objects and deletes --------------------------------------------------------------

    def test_missing_object_raises_not_found(self, manager: StorageManager) -> None:
        ref = self._put_bytes(manager, b"short-lived")
        manager.delete(ref)
        assert not manager.exists(ref)
        with pytest.raises(ObjectNotFoundError):
            manager.get(ref)
        with pytest.raises(FileNotFoundError):
            manager.open(ref)

    def test_stat_of_a_missing_key_raises_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(ObjectNotFoundError):
            backend.stat(f"{self.policy_prefix}/never/stored.bin")

    def test_delete_is_idempotent(self, manager: StorageManager, backend: StorageBackend) -> None:
        ref = self._put_bytes(manager, b"bye")
        manager.delete(ref)
        manager.delete(ref)
        backend.delete(f"{self.policy_prefix}/never/stored.bin")
        assert not manager.exists(ref)

    def test_delete_leaves_other_objects_alone(self, manager: StorageManager) -> None:
        kept = self._put_bytes(manager, b"keep me")
        gone = self._put_bytes(manager, b"delete me")
        manager.delete(gone)
        assert manager.get(kept) == b"keep me"

    def test_delete_many_deletes_every_key_and_leaves_the_others(self, backend: StorageBackend) -> None:
        keys = [f"{self.policy_prefix}/batch/{n % 3}/{n}.bin" for n in range(25)]
        kept = f"{self.policy_prefix}/batch/kept.bin"
        for key in [*keys, kept]:
            backend.put(key, io.BytesIO(b"x"))
        missing = f"{self.policy_prefix}/batch/never-stored.bin"
        assert dict(backend.delete_many([*keys, missing])) == {}
        assert self._all_keys(backend) == [kept]
        assert dict(backend.delete_many([])) == {}

    def test_delete_many_reports_an_unsafe_key_and_still_deletes_the_rest(
        self, backend: StorageBackend
    ) -> None:
        keys = [f"{self.policy_prefix}/batch/{n}.bin" for n in range(3)]
        for key in keys:
            backend.put(key, io.BytesIO(b"x"))
        failures = backend.delete_many([keys[0], "../outside", keys[1], keys[2]])
        assert list(failures) == ["../outside"]
        assert isinstance(failures["../outside"], InvalidKeyError)
        assert self._all_keys(backend) == []

    # -- listing ----------------------------------------------------------------------------------

    def test_list_yields_size_and_modification_time(
        self, manager: StorageManager, backend: StorageBackend
    ) -> None:
        before = datetime.now(UTC) - timedelta(minutes=5)
        refs = [self._put_bytes(manager, b"x" * size) for size in (0, 1, 1000)]
        listed = {info.key: info for info in backend.list(f"{self.policy_prefix}/open")}
        assert set(listed) == {ref.location for ref in refs}
        for ref in refs:
            info = listed[ref.location]
            assert info.size == ref.size
            assert info.last_modified.tzinfo is not None
            assert before <= info.last_modified <= datetime.now(UTC) + timedelta(minutes=5)

    def test_list_matches_prefixes_as_whole_segments(self, backend: StorageBackend) -> None:
        base = self.policy_prefix
        backend.put(f"{base}/docs/a.txt", io.BytesIO(b"a"))
        backend.put(f"{base}/docs/sub/b.txt", io.BytesIO(b"b"))
        backend.put(f"{base}/docs2/c.txt", io.BytesIO(b"c"))
        backend.put(f"{base}/docsx.txt", io.BytesIO(b"d"))
        assert sorted(info.key for info in backend.list(f"{base}/docs")) == [
            f"{base}/docs/a.txt",
            f"{base}/docs/sub/b.txt",
        ]
        assert sorted(info.key for info in backend.list(f"{base}/docs/")) == [
            f"{base}/docs/a.txt",
            f"{base}/docs/sub/b.txt",
        ]
        assert list(backend.list(f"{base}/nothing-here")) == []

    def test_a_key_equal_to_the_prefix_is_not_under_it(self, backend: StorageBackend) -> None:
        key = f"{self.policy_prefix}/docs/a.txt"
        backend.put(key, io.BytesIO(b"a"))
        assert list(backend.list(key)) == []
        assert list(backend.list(f"{key}/")) == []
        assert [info.key for info in backend.list(f"{self.policy_prefix}/docs")] == [key]

    def test_listing_survives_objects_deleted_while_it_runs(self, backend: StorageBackend) -> None:
        keys = [f"{self.policy_prefix}/churn/{n % 7}/{n}.bin" for n in range(60)]
        for key in keys:
            backend.put(key, io.BytesIO(b"x"))
        listing = backend.list(f"{self.policy_prefix}/churn")
        first = next(listing)
        for key in keys:
            if key != first.key:
                backend.delete(key)
        rest = [info.key for info in listing]
        assert set(rest) <= set(keys)

    @pytest.mark.parametrize("prefix", ["../outside", "/etc", "slot/../..", "slot\\..", "slot/.hidden"])
    def test_listing_refuses_unsafe_prefixes(self, backend: StorageBackend, prefix: str) -> None:
        with pytest.raises(InvalidKeyError):
            list(backend.list(prefix))

    # -- concurrency ------------------------------------------------------------------------------

    def test_concurrent_puts_and_deletes_in_one_directory_all_succeed(self, backend: StorageBackend) -> None:
        errors: list[BaseException] = []

        def churn(worker: int) -> None:
            try:
                for round_ in range(40):
                    key = f"{self.policy_prefix}/shared/dir/{worker}-{round_}.bin"
                    backend.put(key, io.BytesIO(b"data"))
                    assert backend.get(key) == b"data"
                    backend.delete(key)
            except BaseException as exc:  # reported below, with the thread's traceback
                errors.append(exc)

        threads = [threading.Thread(target=churn, args=(worker,)) for worker in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert self._all_keys(backend) == []

    # -- limits and failures leave nothing behind ---------------------------------------------------

    def test_exactly_max_size_is_accepted(self, manager: StorageManager) -> None:
        content = os.urandom(LIMIT)
        by_bytes = self._put_bytes(manager, content, storage_key="limited")
        by_stream = manager.put_stream(
            storage_key="limited",
            model_name="m",
            entity_id="1",
            field_name="f",
            stream=io.BytesIO(content),
        )
        assert manager.get(by_bytes) == manager.get(by_stream) == content

    def test_one_byte_over_max_size_is_refused_and_leaves_nothing(
        self, manager: StorageManager, backend: StorageBackend
    ) -> None:
        content = os.urandom(LIMIT + 1)
        with pytest.raises(ContentTooLargeError):
            self._put_bytes(manager, content, storage_key="limited")
        with pytest.raises(ContentTooLargeError):
            manager.put_stream(
                storage_key="limited",
                model_name="m",
                entity_id="1",
                field_name="f",
                stream=io.BytesIO(content),
            )
        assert self._all_keys(backend) == []

    def test_oversized_stream_of_unknown_length_is_refused_mid_stream(
        self, manager: StorageManager, backend: StorageBackend
    ) -> None:
        chunks = iter([b"y" * 40_000] * 10)
        stream = io.BufferedReader(_IteratorStream(chunks))
        with pytest.raises(ContentTooLargeError):
            manager.put_stream(
                storage_key="limited", model_name="m", entity_id="1", field_name="f", stream=stream
            )
        assert self._all_keys(backend) == []
        assert next(chunks, None) is not None, "the upload was read far past the limit"

    def test_the_backend_itself_leaves_nothing_when_its_stream_passes_a_limit(
        self, backend: StorageBackend
    ) -> None:
        key = f"{self.policy_prefix}/direct/too-large.bin"
        with pytest.raises(ContentTooLargeError):
            backend.put(key, SizeLimitedStream(io.BytesIO(os.urandom(3 * LIMIT)), LIMIT))
        assert not backend.exists(key)
        assert self._all_keys(backend) == []

    def test_the_backend_itself_leaves_nothing_when_its_stream_fails(self, backend: StorageBackend) -> None:
        key = f"{self.policy_prefix}/direct/dropped.bin"
        backend.put(key, io.BytesIO(b"the previous object"))
        with pytest.raises(OSError, match="connection reset"):
            backend.put(key, FailingStream(good_bytes=2 * 1024 * 1024 + 5))
        assert backend.get(key) == b"the previous object"
        assert self._all_keys(backend) == [key]

    def test_removing_incomplete_uploads_never_touches_objects(
        self, manager: StorageManager, backend: StorageBackend
    ) -> None:
        refs = [self._put_bytes(manager, b"kept %d" % n) for n in range(3)]
        with pytest.raises(OSError, match="connection reset"):
            manager.put_stream(
                storage_key="open",
                model_name="m",
                entity_id="1",
                field_name="f",
                stream=FailingStream(good_bytes=10),
            )
        assert backend.remove_incomplete_uploads(older_than=timedelta(0)) >= 0
        assert backend.remove_incomplete_uploads(older_than=timedelta(0), prefix="open") >= 0
        assert self._all_keys(backend) == sorted(ref.location for ref in refs)
        assert [manager.get(ref) for ref in refs] == [b"kept 0", b"kept 1", b"kept 2"]
        with pytest.raises(ValueError, match="negative"):
            backend.remove_incomplete_uploads(older_than=timedelta(seconds=-1))

    def test_failed_upload_leaves_nothing(self, manager: StorageManager, backend: StorageBackend) -> None:
        with pytest.raises(OSError, match="connection reset"):
            manager.put_stream(
                storage_key="open",
                model_name="m",
                entity_id="1",
                field_name="f",
                stream=FailingStream(good_bytes=2 * 1024 * 1024 + 5),
            )
        assert self._all_keys(backend) == []

    # -- keys cannot escape -----------------------------------------------------------------------

    @pytest.mark.parametrize("key", UNSAFE_KEYS)
    def test_unsafe_keys_are_refused_by_every_operation(self, backend: StorageBackend, key: str) -> None:
        with pytest.raises(InvalidKeyError):
            backend.put(key, io.BytesIO(b"evil"))
        with pytest.raises(InvalidKeyError):
            backend.open(key)
        with pytest.raises(InvalidKeyError):
            backend.get(key)
        with pytest.raises(InvalidKeyError):
            backend.stat(key)
        with pytest.raises(InvalidKeyError):
            backend.exists(key)
        with pytest.raises(InvalidKeyError):
            backend.delete(key)
        with pytest.raises(InvalidKeyError):
            backend.open_range(key, 1, 3)
        with pytest.raises((InvalidKeyError, UnsupportedOperationError)):
            backend.url(key, expires_in=timedelta(minutes=1))
        assert self._all_keys(backend) == []

    @pytest.mark.parametrize("key", [k for k in UNSAFE_KEYS if k])
    def test_tampered_reference_is_refused_by_the_manager(self, manager: StorageManager, key: str) -> None:
        ref = StoredObjectRef(
            storage_key="open", backend="under-test", location=key, size=4, checksum="sha256:00"
        )
        operations = (manager.get, manager.open, manager.stat, manager.exists, manager.delete, manager.verify)
        for operation in (*operations, manager.url, lambda ref: manager.open(ref, start=1)):
            with pytest.raises(InvalidKeyError):
                operation(ref)

    @pytest.mark.parametrize(
        ("entity_id", "filename"),
        [
            ("../../etc/passwd", "../../etc/passwd"),
            ("/absolute", "C:\\Windows\\evil.EXE"),
            ("nul\x00byte", "x\x00.txt"),
            (
                "\u00fcn\u00efc\u00f6d\u00e9 \u0438\u0434 \U0001f680",
                "\uff8c\uff67\uff72\uff99.\uff50\uff4e\uff47",
            ),
            ("x" * 5000, "y" * 5000 + ".pdf"),
            ("..", ".."),
            ("", ".hidden"),
        ],
    )
    def test_hostile_caller_values_yield_keys_inside_the_prefix(
        self, manager: StorageManager, backend: StorageBackend, entity_id: str, filename: str
    ) -> None:
        ref = manager.put_bytes(
            storage_key="open",
            model_name="../model",
            entity_id=entity_id,
            field_name="field/../../x",
            content=b"payload",
            original_filename=filename,
        )
        assert is_within_prefix(ref.location, f"{self.policy_prefix}/open")
        assert ref.original_filename == filename
        assert manager.get(ref) == b"payload"
        assert self._all_keys(backend) == [ref.location]

    # -- helpers ----------------------------------------------------------------------------------

    def _put_bytes(
        self,
        manager: StorageManager,
        content: bytes,
        *,
        storage_key: str = "open",
        filename: str | None = None,
    ) -> StoredObjectRef:
        return manager.put_bytes(
            storage_key=storage_key,
            model_name="document",
            entity_id="42",
            field_name="file",
            content=content,
            original_filename=filename,
        )

    def _all_keys(self, backend: StorageBackend) -> list[str]:
        return sorted(info.key for info in backend.list(""))


class _IteratorStream(io.RawIOBase):
    """A non-seekable stream of unknown length over an iterator of chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray, /) -> int:  # type: ignore[override]
        if not self._pending:
            self._pending = next(self._chunks, b"")
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count
