"""Confinement: no key reaches anything outside the root, whatever symlinks the root holds.

The conformance suite covers hostile key *strings* (``..``, absolute paths, NUL, ...). Here the key
strings are harmless and the file system is hostile: symlinks inside the root that point out of it, to
a directory or to a file. Every operation through them is refused with ``InvalidKeyError`` before it
touches the disk, and a sentinel file outside the root keeps its content. Symlinks that stay inside the
root are ordinary paths.
"""

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from granite_storage import InvalidKeyError
from granite_storage_local import LocalStorageBackend
from granite_storage_local.backend import _real_path

SENTINEL = b"sentinel: not for the storage backend"

Operation = Callable[[LocalStorageBackend, str], object]

OPERATIONS: dict[str, Operation] = {
    "put": lambda backend, key: backend.put(key, io.BytesIO(b"written through a symlink")),
    "open": lambda backend, key: backend.open(key).close(),
    "get": lambda backend, key: backend.get(key),
    "stat": lambda backend, key: backend.stat(key),
    "exists": lambda backend, key: backend.exists(key),
    "delete": lambda backend, key: backend.delete(key),
}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the root holding ``secret.txt``, which no key may ever reach."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_bytes(SENTINEL)
    return directory


def assert_untouched(outside: Path) -> None:
    assert os.listdir(outside) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == SENTINEL


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_symlink_to_a_directory_outside_cannot_be_used(
    backend: LocalStorageBackend, root: Path, outside: Path, operation: str
) -> None:
    (root / "docs").mkdir()
    (root / "docs" / "escape").symlink_to(outside, target_is_directory=True)
    for key in ("docs/escape/secret.txt", "docs/escape/new.txt"):
        with pytest.raises(InvalidKeyError):
            OPERATIONS[operation](backend, key)
    assert_untouched(outside)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_symlink_to_a_file_outside_cannot_be_used(
    backend: LocalStorageBackend, root: Path, outside: Path, operation: str
) -> None:
    (root / "docs").mkdir()
    (root / "docs" / "link.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(InvalidKeyError):
        OPERATIONS[operation](backend, "docs/link.txt")
    assert_untouched(outside)
    assert (root / "docs" / "link.txt").is_symlink()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_dangling_symlink_pointing_outside_cannot_create_a_file_there(
    backend: LocalStorageBackend, root: Path, outside: Path, operation: str
) -> None:
    (root / "docs").mkdir()
    (root / "docs" / "planted.txt").symlink_to(outside / "created-by-the-backend.txt")
    with pytest.raises(InvalidKeyError):
        OPERATIONS[operation](backend, "docs/planted.txt")
    assert_untouched(outside)


@pytest.mark.parametrize(
    "target",
    ["../../outside", "../..", "../../root-sibling"],
    ids=["to-outside", "to-parent-of-root", "to-sibling-sharing-the-root-name"],
)
def test_relative_symlinks_climbing_out_are_refused(
    backend: LocalStorageBackend, root: Path, tmp_path: Path, outside: Path, target: str
) -> None:
    # "root-sibling" starts with the root's own name: a plain prefix comparison would let it through.
    (tmp_path / "root-sibling").mkdir()
    (root / "docs").mkdir()
    os.symlink(target, root / "docs" / "up")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InvalidKeyError):
        backend.put("docs/up/new.txt", io.BytesIO(b"x"))
    with pytest.raises(InvalidKeyError):
        backend.exists("docs/up")
    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(tmp_path / "root-sibling") == []
    assert_untouched(outside)


def test_list_does_not_follow_symlinks_out_of_the_root(
    backend: LocalStorageBackend, root: Path, outside: Path
) -> None:
    backend.put("docs/real.txt", io.BytesIO(b"real"))
    (root / "docs" / "escape").symlink_to(outside, target_is_directory=True)
    (root / "docs" / "link.txt").symlink_to(outside / "secret.txt")
    assert [info.key for info in backend.list()] == ["docs/real.txt"]
    assert [info.key for info in backend.list("docs")] == ["docs/real.txt"]
    with pytest.raises(InvalidKeyError):
        list(backend.list("docs/escape"))


def test_the_symlink_itself_survives_a_refused_delete(
    backend: LocalStorageBackend, root: Path, outside: Path
) -> None:
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKeyError):
        backend.delete("escape/secret.txt")
    assert (root / "escape").is_symlink()
    assert_untouched(outside)


# -- dot-leading segments -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", [".hidden", "docs/.hidden", "docs/.x/y.txt", "...", "docs/.granite-abc.part"])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_keys_with_dot_leading_segments_are_refused(
    backend: LocalStorageBackend, root: Path, key: str, operation: str
) -> None:
    # Temporary files of uploads in progress are dot-leading: no key can name, read or delete one.
    (root / "docs").mkdir()
    (root / "docs" / ".hidden").write_bytes(b"hidden")
    (root / "docs" / ".granite-abc.part").write_bytes(b"an upload in progress")
    with pytest.raises(InvalidKeyError):
        OPERATIONS[operation](backend, key)
    assert sorted(os.listdir(root / "docs")) == [".granite-abc.part", ".hidden"]
    assert (root / "docs" / ".granite-abc.part").read_bytes() == b"an upload in progress"


def test_a_list_prefix_with_a_dot_leading_segment_is_refused(backend: LocalStorageBackend) -> None:
    with pytest.raises(InvalidKeyError):
        list(backend.list("docs/.hidden"))


# -- symlinks that stay inside the root -------------------------------------------------------------


def test_a_symlink_to_a_directory_inside_the_root_is_an_ordinary_path(
    backend: LocalStorageBackend, root: Path
) -> None:
    (root / "real").mkdir()
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    backend.put("alias/a.txt", io.BytesIO(b"through the alias"))
    assert (root / "real" / "a.txt").read_bytes() == b"through the alias"
    assert backend.get("real/a.txt") == backend.get("alias/a.txt") == b"through the alias"
    assert backend.stat("alias/a.txt").size == len(b"through the alias")
    assert backend.exists("alias/a.txt")
    backend.delete("alias/a.txt")
    assert not (root / "real" / "a.txt").exists()
    assert (root / "alias").is_symlink()


def test_a_relative_symlink_to_a_file_inside_the_root_is_an_ordinary_path(
    backend: LocalStorageBackend, root: Path
) -> None:
    backend.put("docs/2024/report.txt", io.BytesIO(b"report"))
    os.symlink("2024/report.txt", root / "docs" / "latest.txt")
    assert backend.get("docs/latest.txt") == b"report"
    with backend.open("docs/latest.txt") as stream:
        assert stream.read() == b"report"


# -- the resolution every check relies on -----------------------------------------------------------


def _layout(root: Path, outside: Path) -> dict[str, Path]:
    """Paths under ``root`` of every kind the confinement checks meet, by name."""
    (root / "docs" / "real").mkdir(parents=True)
    (root / "docs" / "real" / "file.txt").write_bytes(b"x")
    (root / "docs" / "alias").symlink_to(root / "docs" / "real", target_is_directory=True)
    (root / "docs" / "escape").symlink_to(outside, target_is_directory=True)
    os.symlink("../../outside", root / "docs" / "up")
    (root / "docs" / "link.txt").symlink_to(outside / "secret.txt")
    (root / "docs" / "inner.txt").symlink_to(root / "docs" / "real" / "file.txt")
    (root / "docs" / "dangling.txt").symlink_to(outside / "missing.txt")
    os.symlink("loop", root / "docs" / "loop")
    (root / "docs" / "ghost").symlink_to(outside / "missing-directory", target_is_directory=True)
    return {
        "file": root / "docs" / "real" / "file.txt",
        "missing-file": root / "docs" / "real" / "new.txt",
        "missing-directory": root / "docs" / "new" / "deeper" / "new.txt",
        "through-inner-symlink": root / "docs" / "alias" / "file.txt",
        "through-outer-symlink": root / "docs" / "escape" / "secret.txt",
        "through-relative-climb": root / "docs" / "up" / "new.txt",
        "symlink-to-outside": root / "docs" / "link.txt",
        "symlink-to-inside": root / "docs" / "inner.txt",
        "dangling-symlink": root / "docs" / "dangling.txt",
        "symlink-loop": root / "docs" / "loop",
        "through-symlink-loop": root / "docs" / "loop" / "x.txt",
        "through-a-file": root / "docs" / "real" / "file.txt" / "x.txt",
        "below-a-file": root / "docs" / "real" / "file.txt" / "x" / "y.txt",
        "through-a-dangling-directory-symlink": root / "docs" / "ghost" / "new" / "x.txt",
        "through-a-symlink-to-a-file": root / "docs" / "inner.txt" / "x" / "y.txt",
    }


CASES = [
    "file",
    "missing-file",
    "missing-directory",
    "through-inner-symlink",
    "through-outer-symlink",
    "through-relative-climb",
    "symlink-to-outside",
    "symlink-to-inside",
    "dangling-symlink",
    "symlink-loop",
    "through-symlink-loop",
    "through-a-file",
    "below-a-file",
    "through-a-dangling-directory-symlink",
    "through-a-symlink-to-a-file",
]


@pytest.mark.parametrize("case", CASES)
def test_paths_resolve_exactly_as_os_path_realpath_resolves_them(
    backend: LocalStorageBackend, root: Path, outside: Path, case: str
) -> None:
    path = str(_layout(root, outside)[case])
    assert _real_path(path) == os.path.realpath(path)


@pytest.mark.parametrize("case", CASES)
def test_without_proc_paths_still_resolve_as_os_path_realpath_resolves_them(
    backend: LocalStorageBackend, root: Path, outside: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    readlink = os.readlink

    def no_proc(path: str) -> str:
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return readlink(path)

    path = str(_layout(root, outside)[case])
    expected = os.path.realpath(path)
    monkeypatch.setattr(os, "readlink", no_proc)
    assert _real_path(path) == expected


@pytest.mark.skipif(not hasattr(os, "O_PATH"), reason="open(O_PATH) is Linux's")
@pytest.mark.parametrize("case", ["file", "missing-file", "missing-directory"])
def test_a_path_without_symlinks_is_resolved_by_the_kernel(
    backend: LocalStorageBackend, root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    path = str(_layout(root, outside)[case])

    def one_lstat_per_component(path: str) -> str:
        raise AssertionError("os.path.realpath was called for a path without symlinks")

    monkeypatch.setattr(os.path, "realpath", one_lstat_per_component)
    assert _real_path(path) == path
