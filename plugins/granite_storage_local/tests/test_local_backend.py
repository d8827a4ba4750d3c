"""The local backend beyond the conformance suite: its root, configuration by name, its options,
deletes that prune directories, and disk errors surfacing as storage errors.

Atomic writes and crashes are in ``test_atomic_writes.py``, symlinks and hidden names in
``test_confinement.py``, memory use in ``test_streaming_memory.py``.
"""

import contextlib
import errno
import io
import multiprocessing
import os
import platform
import re
import socket
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from granite_storage import (
    ConfigurationError,
    InvalidKeyError,
    ObjectNotFoundError,
    PluginHost,
    StorageError,
    StorageManager,
    StoragePermissionError,
)
from granite_storage.backends.local import LocalStorageBackend as SeedLocalStorageBackend
from granite_storage_local import LocalStorageBackend, _paths


def all_files(root: Path) -> list[str]:
    """Every file below ``root``, dotfiles included, as sorted relative paths."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir())


# -- the root ---------------------------------------------------------------------------------------


def test_root_is_created_with_its_parents_when_missing(tmp_path: Path) -> None:
    root = tmp_path / "var" / "storage" / "files"
    LocalStorageBackend(root)
    assert root.is_dir()


def test_a_put_after_the_root_was_removed_fails_at_once(tmp_path: Path) -> None:
    # Retrying covers directories a concurrent delete pruned, never a root that is gone.
    backend = LocalStorageBackend(tmp_path / "root")
    (tmp_path / "root").rmdir()
    with pytest.raises(StorageError, match="No such file or directory"):
        backend.put("docs/a.txt", io.BytesIO(b"lost"))
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("as_root", [str, Path], ids=["str", "Path"])
def test_root_accepts_str_and_path(tmp_path: Path, as_root: Callable[[Path], str | Path]) -> None:
    backend = LocalStorageBackend(as_root(tmp_path / "root"))
    backend.put("docs/a.txt", io.BytesIO(b"hello"))
    assert backend.root == (tmp_path / "root").resolve()
    assert (tmp_path / "root" / "docs" / "a.txt").read_bytes() == b"hello"


def test_a_key_of_one_segment_is_stored_directly_under_the_root(
    backend: LocalStorageBackend, root: Path
) -> None:
    backend.put("top.bin", io.BytesIO(b"top level"))
    assert (root / "top.bin").read_bytes() == b"top level"
    assert backend.get("top.bin") == b"top level"
    assert [info.key for info in backend.list()] == ["top.bin"]
    backend.delete("top.bin")
    assert os.listdir(root) == []


def test_an_existing_root_keeps_the_objects_already_in_it(root: Path) -> None:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_bytes(b"stored earlier")
    backend = LocalStorageBackend(root)
    assert backend.get("docs/a.txt") == b"stored earlier"


def test_a_relative_root_is_resolved_once_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = LocalStorageBackend("var/storage")
    monkeypatch.chdir(tmp_path / "var")
    backend.put("docs/a.txt", io.BytesIO(b"x"))
    assert backend.root == tmp_path.resolve() / "var" / "storage"
    assert (tmp_path / "var" / "storage" / "docs" / "a.txt").read_bytes() == b"x"


def test_a_root_reached_through_a_symlink_stores_at_the_real_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    backend = LocalStorageBackend(tmp_path / "link")
    backend.put("docs/a.txt", io.BytesIO(b"x"))
    assert backend.root == real.resolve()
    assert (real / "docs" / "a.txt").read_bytes() == b"x"


def test_a_root_that_is_a_file_is_refused_with_a_storage_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "storage"
    not_a_directory.write_bytes(b"")
    with pytest.raises(StorageError) as excinfo:
        LocalStorageBackend(not_a_directory)
    assert isinstance(excinfo.value.__cause__, OSError)


def test_the_seed_import_path_is_the_plugin_class() -> None:
    assert SeedLocalStorageBackend is LocalStorageBackend


# -- built by name from configuration ---------------------------------------------------------------


@pytest.fixture
def plugins() -> PluginHost:
    """A plugin host that discovered the installed plugins through their entry points."""
    host = PluginHost(disabled=())
    host.load_entry_points()
    return host


def test_the_local_type_is_registered_by_the_plugin_entry_point(plugins: PluginHost) -> None:
    local = plugins.backend_type("local")
    assert (local.plugin, local.distribution) == ("local", "granite-storage-local")
    assert local.target == "granite_storage_local.backend:LocalStorageBackend"
    assert local.load() is LocalStorageBackend


def test_from_config_builds_a_local_backend_by_its_type_name(tmp_path: Path, plugins: PluginHost) -> None:
    manager = StorageManager.from_config(
        {
            "backends": {"files": {"type": "local", "root": str(tmp_path / "storage")}},
            "policies": {"documents": {"backend": "files", "max_size": "1MB", "key_prefix": "docs"}},
        },
        plugins=plugins,
    )
    backend = manager.backend("files")
    assert isinstance(backend, LocalStorageBackend)
    assert backend.root == (tmp_path / "storage").resolve()
    ref = manager.put_bytes(
        storage_key="documents",
        model_name="report",
        entity_id="7",
        field_name="file",
        content=b"quarterly figures",
        original_filename="q3.pdf",
    )
    assert ref.location.startswith("docs/report/file/")
    assert (backend.root / ref.location).read_bytes() == b"quarterly figures"


def test_from_config_with_the_default_plugin_host_finds_the_local_type(tmp_path: Path) -> None:
    manager = StorageManager.from_config(
        {
            "backends": {"files": {"type": "local", "root": str(tmp_path / "storage")}},
            "policies": {"documents": {"backend": "files"}},
        }
    )
    assert isinstance(manager.backend("files"), LocalStorageBackend)


def test_from_a_toml_file_the_options_become_keyword_arguments(tmp_path: Path, plugins: PluginHost) -> None:
    config = tmp_path / "storage.toml"
    config.write_text(
        "[backends.files]\n"
        'type = "local"\n'
        f"root = '{tmp_path / 'storage'}'\n"
        "fsync = true\n"
        "chunk_size = 4096\n"
        "\n"
        "[policies.documents]\n"
        'backend = "files"\n',
        encoding="utf-8",
    )
    backend = StorageManager.from_config(config, plugins=plugins).backend("files")
    assert isinstance(backend, LocalStorageBackend)
    assert (backend.root, backend.fsync, backend.chunk_size) == ((tmp_path / "storage").resolve(), True, 4096)


def test_an_unknown_option_is_a_configuration_error_naming_it(tmp_path: Path, plugins: PluginHost) -> None:
    with pytest.raises(ConfigurationError, match="compression"):
        StorageManager.from_config(
            {"backends": {"files": {"type": "local", "root": str(tmp_path), "compression": "zstd"}}},
            plugins=plugins,
        )


# -- chunk_size and fsync ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [0, -1])
def test_chunk_size_must_be_positive(tmp_path: Path, chunk_size: int) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        LocalStorageBackend(tmp_path / "root", chunk_size=chunk_size)


def test_an_invalid_chunk_size_is_refused_before_the_root_is_created(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        LocalStorageBackend(tmp_path / "root", chunk_size=0)
    assert not (tmp_path / "root").exists()


def test_a_chunk_size_that_is_not_an_integer_is_refused(tmp_path: Path) -> None:
    with pytest.raises((TypeError, ValueError), match="chunk_size"):
        LocalStorageBackend(tmp_path / "root", chunk_size=65536.0)  # type: ignore[arg-type]


class RecordingStream:
    """A non-seekable stream that records the size of every read asked of it."""

    def __init__(self, content: bytes) -> None:
        self._stream = io.BytesIO(content)
        self.requested: list[int] = []

    def read(self, size: int = -1, /) -> bytes:
        self.requested.append(size)
        return self._stream.read(size)


def test_the_stream_is_read_chunk_size_bytes_at_a_time(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path / "root", chunk_size=1000)
    stream = RecordingStream(b"z" * 2500)
    backend.put("docs/a.bin", stream)
    assert stream.requested == [1000, 1000, 1000, 1000]  # the last read finds end of file
    assert backend.get("docs/a.bin") == b"z" * 2500


@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 1024 * 1024])
def test_any_positive_chunk_size_stores_the_whole_stream(tmp_path: Path, chunk_size: int) -> None:
    content = os.urandom(10_007)
    backend = LocalStorageBackend(tmp_path / "root", chunk_size=chunk_size)
    backend.put("docs/a.bin", io.BytesIO(content))
    assert backend.get("docs/a.bin") == content


def test_fsync_true_round_trips_objects_in_new_and_existing_directories(root: Path) -> None:
    backend = LocalStorageBackend(root, fsync=True)
    contents = {"docs/a.bin": b"", "docs/2024/01/report.pdf": os.urandom(300_000), "docs/2024/01/b": b"b"}
    for key, content in contents.items():
        backend.put(key, io.BytesIO(content))
    backend.put("docs/a.bin", io.BytesIO(b"replaced"))
    contents["docs/a.bin"] = b"replaced"
    for key, content in contents.items():
        assert backend.get(key) == content
        assert backend.stat(key).size == len(content)
    assert all_files(root) == sorted(contents)


@pytest.fixture
def fsynced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the path of every descriptor passed to os.fsync (and still flush it)."""
    paths: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return paths


def test_fsync_flushes_the_file_its_directory_and_every_directory_it_created(
    root: Path, fsynced_paths: list[str]
) -> None:
    backend = LocalStorageBackend(root, fsync=True)
    (backend.root / "docs").mkdir()
    backend.put("docs/2024/01/report.pdf", io.BytesIO(b"pdf"))
    root = backend.root
    file_syncs = [path for path in fsynced_paths if ".granite-" in path]
    assert len(file_syncs) == 1  # the temporary file, before its rename
    directories = set(fsynced_paths) - set(file_syncs)
    # The target directory, and the parent of each new directory (2024 and 01): docs and docs/2024.
    assert directories == {str(root / "docs/2024/01"), str(root / "docs/2024"), str(root / "docs")}


def test_without_fsync_nothing_is_flushed(root: Path, fsynced_paths: list[str]) -> None:
    LocalStorageBackend(root).put("docs/2024/a.bin", io.BytesIO(b"a"))
    assert fsynced_paths == []


def test_an_object_that_cannot_be_made_durable_is_removed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalStorageBackend(root, fsync=True)
    real_fsync = os.fsync

    def failing_directory_fsync(fd: int) -> None:
        if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_directory_fsync)
    with pytest.raises(StorageError, match="I/O error"):
        backend.put("docs/a.bin", io.BytesIO(b"not durable"))
    assert not backend.exists("docs/a.bin")
    assert all_files(root) == []


def test_fsync_true_through_the_manager(root: Path) -> None:
    manager = StorageManager.from_config(
        {
            "backends": {"files": {"type": "local", "root": str(root), "fsync": True}},
            "policies": {"documents": {"backend": "files"}},
        }
    )
    ref = manager.put_stream(
        storage_key="documents", model_name="m", entity_id="1", field_name="f", stream=io.BytesIO(b"durable")
    )
    assert manager.get(ref) == b"durable"


# -- deletes prune the directories they empty ------------------------------------------------------


def test_delete_removes_the_directories_it_leaves_empty_up_to_the_root(
    backend: LocalStorageBackend, root: Path
) -> None:
    backend.put("docs/report/7/file/a.pdf", io.BytesIO(b"a"))
    backend.delete("docs/report/7/file/a.pdf")
    assert root.is_dir()
    assert os.listdir(root) == []


def test_delete_keeps_directories_that_still_hold_objects(backend: LocalStorageBackend, root: Path) -> None:
    backend.put("docs/report/7/file/a.pdf", io.BytesIO(b"a"))
    backend.put("docs/report/8/file/b.pdf", io.BytesIO(b"b"))
    backend.delete("docs/report/7/file/a.pdf")
    assert os.listdir(root / "docs" / "report") == ["8"]
    assert backend.get("docs/report/8/file/b.pdf") == b"b"


def test_delete_of_a_missing_key_creates_and_removes_nothing(
    backend: LocalStorageBackend, root: Path
) -> None:
    backend.put("docs/a.pdf", io.BytesIO(b"a"))
    backend.delete("docs/never/stored.pdf")
    backend.delete("elsewhere/never/stored.pdf")
    assert all_files(root) == ["docs/a.pdf"]


def test_a_directory_is_not_an_object(backend: LocalStorageBackend, root: Path) -> None:
    backend.put("docs/2024/a.pdf", io.BytesIO(b"a"))
    assert not backend.exists("docs/2024")
    with pytest.raises(ObjectNotFoundError):
        backend.open("docs/2024")
    with pytest.raises(ObjectNotFoundError):
        backend.stat("docs/2024")
    backend.delete("docs/2024")
    assert backend.get("docs/2024/a.pdf") == b"a"


def test_concurrent_puts_and_deletes_in_one_directory_never_fail(
    backend: LocalStorageBackend, root: Path
) -> None:
    # Deleting the last object of a directory prunes it (and its empty parents) while other threads
    # create it again for their next put: neither side may fail because of the other.
    threads, rounds = 8, 600
    start, failed = threading.Barrier(threads), threading.Event()
    errors: list[BaseException] = []

    def put_and_delete(worker: int) -> None:
        try:
            start.wait()
            for round_ in range(rounds):
                if failed.is_set():
                    return
                key = f"slot/model/{worker % 2}/field/{worker}-{round_}.bin"
                backend.put(key, io.BytesIO(b"x"))
                backend.delete(key)
        except BaseException as exc:
            errors.append(exc)
            failed.set()

    workers = [threading.Thread(target=put_and_delete, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert errors == []
    assert list(backend.list()) == []
    assert os.listdir(root) == []


def _put_and_delete_in_a_process(root: str, worker: int, rounds: int) -> None:
    backend = LocalStorageBackend(root)
    for round_ in range(rounds):
        key = f"slot/model/{worker % 2}/field/{worker}-{round_}.bin"
        backend.put(key, io.BytesIO(b"x"))
        backend.delete(key)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork to start workers quickly"
)
def test_concurrent_puts_and_deletes_from_several_processes_never_fail(
    backend: LocalStorageBackend, root: Path
) -> None:
    # Web servers run several worker processes on one storage root; no lock is shared there.
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_put_and_delete_in_a_process, args=(str(root), n, 400)) for n in range(6)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * len(workers)
    assert list(backend.list()) == []
    assert os.listdir(root) == []


# -- disk errors are storage errors ------------------------------------------------------------------


def test_a_key_below_an_existing_object_fails_with_a_storage_error(
    backend: LocalStorageBackend, root: Path
) -> None:
    backend.put("docs/report.pdf", io.BytesIO(b"report"))
    with pytest.raises(StorageError) as excinfo:
        backend.put("docs/report.pdf/appendix.pdf", io.BytesIO(b"appendix"))
    assert isinstance(excinfo.value.__cause__, OSError)
    assert all_files(root) == ["docs/report.pdf"]
    assert backend.get("docs/report.pdf") == b"report"


def test_putting_at_a_directory_fails_with_a_storage_error_and_leaves_it_alone(
    backend: LocalStorageBackend, root: Path
) -> None:
    backend.put("docs/2024/a.pdf", io.BytesIO(b"a"))
    with pytest.raises(StorageError) as excinfo:
        backend.put("docs/2024", io.BytesIO(b"not a directory"))
    assert isinstance(excinfo.value.__cause__, OSError)
    assert all_files(root) == ["docs/2024/a.pdf"]


# -- names the file system cannot hold, files that are not regular files (issue 16, finding 11) ----

LONG_NAMES = {
    "object": "docs/" + "n" * 300 + ".bin",
    "directory": "docs/" + "d" * 256 + "/a.bin",
    "both": "a" * 256,
}


@pytest.mark.parametrize("key", LONG_NAMES.values(), ids=LONG_NAMES)
@pytest.mark.parametrize("operation", ["put", "get", "stat", "exists", "delete", "list"])
def test_a_name_too_long_for_the_file_system_is_an_invalid_key(
    backend: LocalStorageBackend, root: Path, key: str, operation: str
) -> None:
    calls: dict[str, Callable[[], object]] = {
        "put": lambda: backend.put(key, io.BytesIO(b"x")),
        "get": lambda: backend.get(key),
        "stat": lambda: backend.stat(key),
        "exists": lambda: backend.exists(key),
        "delete": lambda: backend.delete(key),
        "list": lambda: list(backend.list(key)),
    }
    with pytest.raises(InvalidKeyError, match="255"):
        calls[operation]()
    assert all_files(root) == []


@pytest.mark.parametrize("prefix", ["a" * 256, "docs/" + "b" * 300])
def test_removing_incomplete_uploads_under_a_too_long_prefix_is_an_invalid_key(
    backend: LocalStorageBackend, prefix: str
) -> None:
    with pytest.raises(InvalidKeyError):
        backend.remove_incomplete_uploads(older_than=timedelta(hours=1), prefix=prefix)


def test_a_key_that_is_no_file_name_on_this_system_is_an_invalid_key(backend: LocalStorageBackend) -> None:
    # A lone surrogate has no UTF-8 encoding: no file can be named by it.
    with pytest.raises(InvalidKeyError):
        backend.put("docs/\ud800.bin", io.BytesIO(b"x"))
    with pytest.raises(InvalidKeyError):
        backend.get("docs/\ud800.bin")


def _make_fifo(path: Path) -> None:
    os.mkfifo(path)


def _make_socket(path: Path) -> None:
    # Through the directory's descriptor: a socket's path may be no longer than about 100 bytes.
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(f"/proc/self/fd/{directory}/{path.name}")
    finally:
        os.close(directory)


def _make_device(path: Path) -> None:
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("this process may not make device files")


SPECIAL_FILES = {"fifo": _make_fifo, "socket": _make_socket, "device": _make_device}


@pytest.fixture(params=SPECIAL_FILES)
def special_file(request: pytest.FixtureRequest, backend: LocalStorageBackend, root: Path) -> Iterator[str]:
    """A FIFO, a socket or a device at ``docs/special``; yields its key. A reader still blocked on the
    FIFO when the test ends is released (the test has failed by then)."""
    backend.put("docs/kept.txt", io.BytesIO(b"kept"))
    SPECIAL_FILES[request.param](root / "docs" / "special")
    yield "docs/special"
    if request.param == "fifo":
        with contextlib.suppress(OSError):
            os.close(os.open(root / "docs" / "special", os.O_WRONLY | os.O_NONBLOCK))


def call_or_hang(function: Callable[[], object]) -> BaseException | None:
    """Call ``function`` in a thread; return what it raised, or fail the test if it blocks."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            function()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():
        pytest.fail("the call blocked")
    return outcome[0]


@pytest.mark.parametrize("operation", ["open", "get", "open_range", "stat", "exists", "delete"])
def test_a_file_that_is_not_a_regular_file_is_refused_at_once(
    backend: LocalStorageBackend, root: Path, special_file: str, operation: str
) -> None:
    calls: dict[str, Callable[[], object]] = {
        "open": lambda: backend.open(special_file).close(),
        "get": lambda: backend.get(special_file),
        "open_range": lambda: backend.open_range(special_file, 1, 2).close(),
        "stat": lambda: backend.stat(special_file),
        "exists": lambda: backend.exists(special_file),
        "delete": lambda: backend.delete(special_file),
    }
    error = call_or_hang(calls[operation])
    assert isinstance(error, InvalidKeyError)
    assert "not a regular file" in str(error)
    assert sorted(os.listdir(root / "docs")) == ["kept.txt", "special"]


def test_special_files_are_not_listed(backend: LocalStorageBackend, special_file: str) -> None:
    assert [info.key for info in backend.list()] == ["docs/kept.txt"]


def test_a_put_refuses_to_replace_a_special_file(
    backend: LocalStorageBackend, root: Path, special_file: str
) -> None:
    with pytest.raises(InvalidKeyError, match="not a regular file"):
        backend.put(special_file, io.BytesIO(b"x"))
    assert sorted(os.listdir(root / "docs")) == ["kept.txt", "special"]


@pytest.fixture
def permissions_enforced(tmp_path: Path) -> None:
    """Skip unless file permissions bind this process: root (``os.geteuid() == 0``) with its usual
    CAP_DAC_OVERRIDE writes into read-only directories, so nothing would be denied.

    CI sets ``GRANITE_TEST_REQUIRE_PERMISSIONS=1`` where it drops that capability: there, not
    binding is a failure of the set-up, not a reason to skip.
    """
    probe = tmp_path / "permission-probe"
    probe.mkdir(mode=0o500)
    try:
        (probe / "file").touch()
    except PermissionError:
        return
    finally:
        probe.chmod(0o700)
    reason = f"file permissions do not bind this process (euid {os.geteuid()}, e.g. root)"
    if os.environ.get("GRANITE_TEST_REQUIRE_PERMISSIONS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def read_only_docs(permissions_enforced: None, backend: LocalStorageBackend, root: Path) -> Iterator[Path]:
    """``root/docs`` holding ``a.pdf``, made read-only (0o500) for the test and writable again after."""
    backend.put("docs/a.pdf", io.BytesIO(b"a"))
    docs = root / "docs"
    docs.chmod(0o500)
    try:
        yield docs
    finally:
        docs.chmod(0o700)


def test_put_into_a_read_only_directory_raises_a_storage_permission_error(
    backend: LocalStorageBackend, read_only_docs: Path
) -> None:
    with pytest.raises(StoragePermissionError) as excinfo:
        backend.put("docs/b.pdf", io.BytesIO(b"b"))
    assert isinstance(excinfo.value, PermissionError)
    assert isinstance(excinfo.value.__cause__, PermissionError)
    assert os.listdir(read_only_docs) == ["a.pdf"]


def test_delete_in_a_read_only_directory_raises_a_storage_permission_error(
    backend: LocalStorageBackend, read_only_docs: Path
) -> None:
    with pytest.raises(StoragePermissionError):
        backend.delete("docs/a.pdf")
    assert backend.get("docs/a.pdf") == b"a"


@pytest.mark.usefixtures("permissions_enforced")
def test_reading_an_unreadable_file_raises_a_storage_permission_error(
    backend: LocalStorageBackend, root: Path
) -> None:
    backend.put("docs/a.pdf", io.BytesIO(b"a"))
    (root / "docs" / "a.pdf").chmod(0o000)
    with pytest.raises(StoragePermissionError):
        backend.open("docs/a.pdf")
    with pytest.raises(StoragePermissionError):
        backend.get("docs/a.pdf")


# -- how paths are resolved ----------------------------------------------------------------------------


def _linux_at_least(major: int, minor: int) -> bool:
    found = re.match(r"(\d+)\.(\d+)", platform.release())
    if not sys.platform.startswith("linux") or found is None:
        return False
    return (int(found[1]), int(found[2])) >= (major, minor)


@pytest.mark.skipif(
    not _linux_at_least(5, 6) or platform.machine() not in ("x86_64", "aarch64"),
    reason="openat2 came with Linux 5.6",
)
def test_openat2_is_used_where_the_kernel_has_it(tmp_path: Path) -> None:
    # The binding goes through ctypes: a mistake in it would silently leave every path to the walk.
    assert _paths.openat2 is not None
    (tmp_path / "real" / "below").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    directory = os.open(tmp_path, _paths.DIRECTORY)
    try:
        os.close(_paths.openat2(directory, "real/below", _paths.DIRECTORY))
        with pytest.raises(OSError, match="Too many levels of symbolic links") as excinfo:
            _paths.openat2(directory, "alias/below", _paths.DIRECTORY)
        assert excinfo.value.errno == errno.ELOOP
    finally:
        os.close(directory)
