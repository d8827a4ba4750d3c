"""Atomic writes: an object appears at its key whole or not at all, even if the writer crashes.

An upload is written to a hidden temporary file beside its final path and renamed into place. These
tests pause uploads half-way (a stream that blocks on an event), fail them, and kill the process that
runs them, then look at the directory with ``os.listdir``, which shows dotfiles too.
"""

import contextlib
import io
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from granite_storage import (
    ContentTooLargeError,
    ObjectNotFoundError,
    Readable,
    SizeLimitedStream,
    StorageManager,
    StoragePolicy,
)
from granite_storage.testing import FailingStream
from granite_storage_local import LocalStorageBackend

MIB = 1024 * 1024
KEY = "docs/report.bin"


def hidden_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith("."))


class HalfwayBlockingStream:
    """A non-seekable upload that hands over its first half, then waits until the test releases it."""

    def __init__(self, content: bytes) -> None:
        self._content = content
        self._half = len(content) // 2
        self._offset = 0
        self.halfway = threading.Event()
        self.release = threading.Event()

    def read(self, size: int = -1, /) -> bytes:
        if self._offset >= self._half and not self.release.is_set():
            self.halfway.set()
            if not self.release.wait(timeout=60):
                raise TimeoutError("the test never released the upload")
        end = len(self._content) if size < 0 else self._offset + size
        if self._offset < self._half:
            end = min(end, self._half)
        chunk = self._content[self._offset : end]
        self._offset += len(chunk)
        return chunk


@contextlib.contextmanager
def put_paused_halfway(backend: LocalStorageBackend, key: str, content: bytes) -> Iterator[Future[None]]:
    """Run ``backend.put(key, ...)`` in a thread; the body runs while it waits half-way through.

    The upload resumes when the body ends; the yielded future then tells how it went.
    """
    stream = HalfwayBlockingStream(content)
    with ThreadPoolExecutor(max_workers=1) as pool:
        upload = pool.submit(backend.put, key, stream)
        try:
            if not stream.halfway.wait(timeout=60):
                upload.result(timeout=0)  # the upload failed before its middle: show why
                pytest.fail("the upload never reached its middle")
            yield upload
        finally:
            stream.release.set()


# -- an upload in progress ----------------------------------------------------------------------------


def test_an_object_being_written_does_not_exist_at_its_key(backend: LocalStorageBackend, root: Path) -> None:
    content = os.urandom(4 * MIB)
    with put_paused_halfway(backend, KEY, content) as upload:
        assert not (root / KEY).exists()
        assert not backend.exists(KEY)
        with pytest.raises(ObjectNotFoundError):
            backend.get(KEY)
        with pytest.raises(ObjectNotFoundError):
            backend.stat(KEY)
        # The first half is on disk, but only in a hidden temporary file.
        [temporary] = hidden_files(root / "docs")
        assert 0 < os.path.getsize(root / "docs" / temporary) <= len(content) // 2
    upload.result()
    assert backend.get(KEY) == content
    assert os.listdir(root / "docs") == ["report.bin"]


def test_a_replaced_object_is_read_whole_until_the_new_one_is_complete(backend: LocalStorageBackend) -> None:
    old, new = os.urandom(3 * MIB), os.urandom(4 * MIB)
    backend.put(KEY, io.BytesIO(old))
    with put_paused_halfway(backend, KEY, new) as upload:
        assert backend.get(KEY) == old
        assert backend.stat(KEY).size == len(old)
        opened_before_the_replace = backend.open(KEY)
    upload.result()
    assert backend.get(KEY) == new
    with opened_before_the_replace as reader:
        assert reader.read() == old  # a reader keeps the version it opened


def test_readers_racing_a_writer_only_ever_see_complete_versions(backend: LocalStorageBackend) -> None:
    versions = [bytes([n]) * (n * 65_536 + 1) for n in range(1, 31)]
    backend.put(KEY, io.BytesIO(versions[0]))
    done = threading.Event()
    seen: list[bytes] = []

    def read_until_done() -> None:
        while not done.is_set():
            seen.append(backend.get(KEY))

    with ThreadPoolExecutor(max_workers=2) as pool:
        readers = [pool.submit(read_until_done) for _ in range(2)]
        try:
            for version in versions[1:]:
                backend.put(KEY, io.BytesIO(version))
        finally:
            done.set()
        for reader in readers:
            reader.result()
    assert seen
    assert all(data in versions for data in seen)


def test_temporary_files_are_never_listed(backend: LocalStorageBackend) -> None:
    backend.put("docs/kept.bin", io.BytesIO(b"kept"))
    with put_paused_halfway(backend, KEY, os.urandom(2 * MIB)) as upload:
        assert [info.key for info in backend.list()] == ["docs/kept.bin"]
        assert [info.key for info in backend.list("docs")] == ["docs/kept.bin"]
    upload.result()
    assert sorted(info.key for info in backend.list()) == ["docs/kept.bin", KEY]


def test_a_delete_in_the_same_directory_does_not_disturb_an_upload(
    backend: LocalStorageBackend, root: Path
) -> None:
    content = os.urandom(2 * MIB)
    backend.put("docs/other.bin", io.BytesIO(b"other"))
    with put_paused_halfway(backend, KEY, content) as upload:
        backend.delete("docs/other.bin")  # the last object of docs/, but not the last file
        assert (root / "docs").is_dir()
    upload.result()
    assert backend.get(KEY) == content


# -- a failed upload -----------------------------------------------------------------------------------


class InterruptedStream:
    """Hands over one MiB, then raises KeyboardInterrupt (Ctrl-C in the middle of an upload)."""

    def __init__(self) -> None:
        self._sent = False

    def read(self, size: int = -1, /) -> bytes:
        if self._sent:
            raise KeyboardInterrupt
        self._sent = True
        return b"i" * MIB


FAILURES: dict[str, tuple[Callable[[], Readable], type[BaseException]]] = {
    "the stream raises OSError": (lambda: FailingStream(good_bytes=3 * MIB + 1), OSError),
    "the stream passes its size limit": (
        lambda: SizeLimitedStream(io.BytesIO(b"L" * (2 * MIB + 1)), 2 * MIB),
        ContentTooLargeError,
    ),
    "the upload is interrupted": (InterruptedStream, KeyboardInterrupt),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_put_leaves_no_temporary_file(
    backend: LocalStorageBackend, root: Path, failure: str
) -> None:
    make_stream, error = FAILURES[failure]
    backend.put("docs/kept.bin", io.BytesIO(b"kept"))
    with pytest.raises(error):
        backend.put(KEY, make_stream())
    assert os.listdir(root / "docs") == ["kept.bin"]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_replacement_keeps_the_old_object(
    backend: LocalStorageBackend, root: Path, failure: str
) -> None:
    make_stream, error = FAILURES[failure]
    backend.put(KEY, io.BytesIO(b"old version"))
    with pytest.raises(error):
        backend.put(KEY, make_stream())
    assert backend.get(KEY) == b"old version"
    assert os.listdir(root / "docs") == ["report.bin"]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_put_into_a_new_directory_leaves_no_directories(
    backend: LocalStorageBackend, root: Path, failure: str
) -> None:
    make_stream, error = FAILURES[failure]
    with pytest.raises(error):
        backend.put("docs/report/7/file/new.bin", make_stream())
    assert os.listdir(root) == []


def test_a_refused_upload_leaves_the_directory_tree_as_it_was(root: Path) -> None:
    manager = StorageManager(
        backends={"disk": LocalStorageBackend(root)},
        policies={"avatars": StoragePolicy("avatars", backend_key="disk", max_size=MIB)},
    )
    with pytest.raises(ContentTooLargeError):
        manager.put_stream(
            storage_key="avatars",
            model_name="user",
            entity_id="42",
            field_name="avatar",
            stream=io.BytesIO(b"a" * (MIB + 1)),
        )
    assert os.listdir(root) == []


@pytest.fixture(params=[0o022, 0o027], ids=["umask-022", "umask-027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    value: int = request.param
    previous = os.umask(value)
    try:
        yield value
    finally:
        os.umask(previous)


def test_an_object_has_the_mode_of_a_file_created_in_place(root: Path, umask: int) -> None:
    backend = LocalStorageBackend(root)
    backend.put(KEY, io.BytesIO(b"public"))
    with open(root / "created-in-place", "wb"):
        pass
    assert stat.S_IMODE(os.stat(root / "created-in-place").st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(root / KEY).st_mode) == 0o666 & ~umask


# -- a crash in the middle of an upload ------------------------------------------------------------------

CRASHING_UPLOAD = """
import sys, time
from granite_storage_local import LocalStorageBackend

root, key, marker = sys.argv[1:4]

class StalledUpload:
    # Hands over one MiB, then tells the test it is half-way and hangs until it is killed.
    def __init__(self):
        self.sent = False

    def read(self, size=-1):
        if not self.sent:
            self.sent = True
            return b"n" * (1024 * 1024)
        open(marker, "x").close()
        time.sleep(600)
        return b""

LocalStorageBackend(root).put(key, StalledUpload())
"""


def kill_in_the_middle_of_a_put(root: Path, key: str, marker: Path) -> None:
    """Run a put in a subprocess and SIGKILL it once it has written one MiB of the object."""
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_UPLOAD, str(root), key, str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if process.poll() is not None:
                assert process.stderr is not None
                pytest.fail(f"the uploader exited before it was killed: {process.stderr.read()!r}")
            if time.monotonic() > deadline:
                pytest.fail("the uploader never reached the middle of its put")
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL


def test_a_process_killed_mid_put_leaves_no_object_at_the_key(
    backend: LocalStorageBackend, root: Path, tmp_path: Path
) -> None:
    kill_in_the_middle_of_a_put(root, KEY, tmp_path / "halfway")
    assert not (root / KEY).exists()
    assert not backend.exists(KEY)
    with pytest.raises(ObjectNotFoundError):
        backend.get(KEY)
    # The crash left its partial temporary file behind; the backend never shows it.
    [leftover] = hidden_files(root / "docs")
    assert os.path.getsize(root / "docs" / leftover) == MIB
    assert list(backend.list()) == []
    assert list(backend.list("docs")) == []


def test_the_key_is_usable_after_a_crash(backend: LocalStorageBackend, root: Path, tmp_path: Path) -> None:
    kill_in_the_middle_of_a_put(root, KEY, tmp_path / "halfway")
    backend.put(KEY, io.BytesIO(b"second attempt"))
    assert backend.get(KEY) == b"second attempt"
    assert [info.key for info in backend.list()] == [KEY]


def test_a_process_killed_mid_replacement_leaves_the_old_object_whole(
    backend: LocalStorageBackend, root: Path, tmp_path: Path
) -> None:
    old = os.urandom(3 * MIB)
    backend.put(KEY, io.BytesIO(old))
    kill_in_the_middle_of_a_put(root, KEY, tmp_path / "halfway")
    assert backend.get(KEY) == old
    assert [(info.key, info.size) for info in backend.list()] == [(KEY, len(old))]


def _leftover(directory: Path, name: str, age: timedelta) -> Path:
    """A temporary file as an upload killed mid-way leaves it, last written ``age`` ago."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"half an upload")
    stamp = (datetime.now(UTC) - age).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def test_removing_incomplete_uploads_deletes_old_leftovers_only(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path / "root")
    root = backend.root
    backend.put("docs/a/kept.pdf", io.BytesIO(b"object"))
    stale = _leftover(root / "docs/b/c", ".granite-0123456789abcdef.part", timedelta(hours=2))
    running = _leftover(root / "docs/a", ".granite-fedcba9876543210.part", timedelta(seconds=5))
    foreign = _leftover(root / "docs/a", ".other-tool.part", timedelta(days=3))

    assert backend.remove_incomplete_uploads(older_than=timedelta(hours=1)) == 1

    assert not stale.exists()
    assert not (root / "docs/b").exists(), "the directories it left empty are pruned"
    assert running.exists(), "an upload that may still be running is kept"
    assert foreign.exists(), "only the backend's own temporary files are touched"
    assert backend.get("docs/a/kept.pdf") == b"object"


def test_removing_incomplete_uploads_under_a_prefix_leaves_other_prefixes_alone(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path / "root")
    root = backend.root
    ours = _leftover(root / "docs/a", ".granite-0123456789abcdef.part", timedelta(hours=2))
    theirs = _leftover(root / "docs2/a", ".granite-fedcba9876543210.part", timedelta(hours=2))
    top = _leftover(root, ".granite-00112233445566ff.part", timedelta(hours=2))

    assert backend.remove_incomplete_uploads(older_than=timedelta(hours=1), prefix="docs") == 1
    assert not ours.exists()
    assert theirs.exists(), "docs2/ is not under docs/"
    assert top.exists(), "nor is the root"
    assert backend.remove_incomplete_uploads(older_than=timedelta(hours=1), prefix="nothing/here") == 0
    assert backend.remove_incomplete_uploads(older_than=timedelta(hours=1)) == 2


def test_a_crashed_uploads_leftover_is_found_and_removed(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path / "root")
    kill_in_the_middle_of_a_put(backend.root, "docs/crash/obj.bin", tmp_path / "half-way")
    assert not backend.exists("docs/crash/obj.bin")
    assert backend.remove_incomplete_uploads(older_than=timedelta(0)) == 1
    assert list((backend.root / "docs").rglob("*")) == []
