"""The symlink race of issue 16 (finding 3): a directory swapped for an outward symlink while in use.

A thread exchanges a directory inside the root and a symlink to a directory outside it, over and over,
with ``renameat2(RENAME_EXCHANGE)`` (both names always exist, so every lookup meets one or the other),
while other threads read an object below that name and store new ones there. A check of the path that
is separate from its use loses this race; resolving each path at the moment of use, one directory
descriptor at a time, never follows the symlink. For ten seconds: no read returns the file outside, and
no put publishes anything outside.
"""

import ctypes
import errno
import io
import os
import threading
import time
from pathlib import Path

import pytest

from granite_storage import InvalidKeyError, ObjectNotFoundError, StorageError
from granite_storage_local import LocalStorageBackend

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("each_resolution")]

RACE_SECONDS = 10
INSIDE = b"the object inside the root"
OUTSIDE = b"a file outside the root"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _load_renameat2() -> "ctypes._NamedFuncPointer | None":
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def exchange(renameat2: "ctypes._NamedFuncPointer", first: Path, second: Path) -> None:
    """Swap the two names atomically (both exist at every instant)."""
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


@pytest.fixture
def renameat2(tmp_path: Path) -> "ctypes._NamedFuncPointer":
    """libc's ``renameat2``, if it and the kernel (and the file system) can exchange two names."""
    function = _load_renameat2()
    if function is None:
        pytest.skip("libc has no renameat2 (glibc 2.28 or later has it)")
    (tmp_path / "probe-a").mkdir()
    (tmp_path / "probe-b").mkdir()
    try:
        exchange(function, tmp_path / "probe-a", tmp_path / "probe-b")
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
            pytest.skip(f"renameat2(RENAME_EXCHANGE) is not available here: {exc}")
        raise
    return function


def test_swapping_a_directory_for_an_outward_symlink_never_leaks_a_read_or_a_put(
    backend: LocalStorageBackend, root: Path, tmp_path: Path, renameat2: "ctypes._NamedFuncPointer"
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_bytes(OUTSIDE)
    backend.put("docs/real/a.txt", io.BytesIO(INSIDE))
    (root / "docs" / "swap").symlink_to(outside, target_is_directory=True)

    stop = threading.Event()
    counts = {"swaps": 0, "inside": 0, "escaped reads": 0, "refused": 0, "puts": 0}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def count(name: str) -> None:
        with lock:
            counts[name] += 1

    def swap() -> None:
        while not stop.is_set():
            exchange(renameat2, root / "docs" / "real", root / "docs" / "swap")
            counts["swaps"] += 1

    def read() -> None:
        while not stop.is_set():
            try:
                content = backend.get("docs/real/a.txt")
            except (InvalidKeyError, ObjectNotFoundError):
                count("refused")
                continue
            count("inside" if content == INSIDE else "escaped reads")

    def put(worker: int) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            try:
                backend.put(f"docs/real/put-{worker}-{number}.bin", io.BytesIO(b"new"))
            except (InvalidKeyError, StorageError):
                count("refused")
                continue
            count("puts")

    def guarded(target: "threading.Thread") -> None:
        try:
            target.run()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    workers = [threading.Thread(target=swap)]
    workers += [threading.Thread(target=read) for _ in range(2)]
    workers += [threading.Thread(target=put, args=(n,)) for n in range(2)]
    runners = [threading.Thread(target=guarded, args=(worker,)) for worker in workers]
    for runner in runners:
        runner.start()
    deadline = time.monotonic() + RACE_SECONDS
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(0.1)
    stop.set()
    for runner in runners:
        runner.join()

    assert errors == []
    assert sorted(os.listdir(outside)) == ["a.txt"], "a put published outside the root"
    assert (outside / "a.txt").read_bytes() == OUTSIDE
    assert counts["escaped reads"] == 0, counts
    # The race was run: both states were met, and puts went through between the swaps.
    assert counts["swaps"] > 1000, counts
    assert counts["inside"] > 0, counts
    assert counts["refused"] > 0, counts
    assert counts["puts"] > 0, counts
