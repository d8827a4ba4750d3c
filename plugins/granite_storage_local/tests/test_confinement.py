"""Confinement: no key reaches anything outside its own path below the root, whatever symlinks it holds.

The conformance suite covers hostile key *strings* (``..``, absolute paths, NUL, ...). Here the key
strings are harmless and the file system is hostile: symlinks inside the root, pointing out of it, to
a directory or to a file, or to another slot's directory inside it. The backend follows no symlink on a
key's path: every operation through one is refused with ``InvalidKeyError``, and a sentinel file outside
the root keeps its content. Every test runs once per way of resolving paths (``openat2`` where the
kernel has it, and the walk one directory at a time), see ``conftest.py``.
"""

import io
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from granite_storage import (
    InvalidKeyError,
    StorageError,
    StorageGarbageCollector,
    StorageManager,
    StoragePolicy,
)
from granite_storage_local import LocalStorageBackend

pytestmark = pytest.mark.usefixtures("each_resolution")

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


def tree(root: Path) -> list[str]:
    """Every name below ``root`` (symlinks not followed), as sorted relative paths."""
    names = []
    for directory, subdirectories, files in os.walk(root):
        names += [os.path.relpath(os.path.join(directory, name), root) for name in subdirectories + files]
    return sorted(names)


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


# -- symlinks that stay inside the root (issue 16, finding 10) ---------------------------------------


@pytest.fixture
def docs_aliasing_avatars(backend: LocalStorageBackend, root: Path) -> bytes:
    """``root/docs`` is a symlink to ``root/avatars``, which holds ``a.png``; returns its content."""
    backend.put("avatars/a.png", io.BytesIO(b"a live avatar"))
    (root / "docs").symlink_to(root / "avatars", target_is_directory=True)
    return b"a live avatar"


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_symlink_to_another_directory_inside_the_root_cannot_be_used(
    backend: LocalStorageBackend, root: Path, docs_aliasing_avatars: bytes, operation: str
) -> None:
    # One slot's directory must not reach another slot's objects through an alias.
    for key in ("docs/a.png", "docs/new.png"):
        with pytest.raises(InvalidKeyError, match="symlink"):
            OPERATIONS[operation](backend, key)
    assert os.listdir(root / "avatars") == ["a.png"]
    assert backend.get("avatars/a.png") == docs_aliasing_avatars


def test_a_symlinked_prefix_is_not_listed_as_its_target(
    backend: LocalStorageBackend, docs_aliasing_avatars: bytes
) -> None:
    with pytest.raises(InvalidKeyError):
        list(backend.list("docs"))
    assert [info.key for info in backend.list()] == ["avatars/a.png"]


def test_garbage_collection_through_a_symlinked_prefix_deletes_no_live_object(
    backend: LocalStorageBackend, docs_aliasing_avatars: bytes
) -> None:
    manager = StorageManager(
        backends={"disk": backend},
        policies={
            "avatars": StoragePolicy("avatars", backend_key="disk"),
            "docs": StoragePolicy("docs", backend_key="disk"),
        },
    )
    old = datetime.now(UTC) - timedelta(days=30)
    os.utime(backend.root / "avatars" / "a.png", (old.timestamp(), old.timestamp()))
    collector = StorageGarbageCollector(manager=manager, iter_references=lambda: iter(()))
    with pytest.raises(StorageError):
        collector.collect("docs", dry_run=False)
    assert backend.get("avatars/a.png") == docs_aliasing_avatars


def test_a_symlink_to_a_file_inside_the_root_cannot_be_used(backend: LocalStorageBackend, root: Path) -> None:
    backend.put("docs/2024/report.txt", io.BytesIO(b"report"))
    os.symlink("2024/report.txt", root / "docs" / "latest.txt")
    for operation in OPERATIONS.values():
        with pytest.raises(InvalidKeyError):
            operation(backend, "docs/latest.txt")
    assert backend.get("docs/2024/report.txt") == b"report"
    assert (root / "docs" / "latest.txt").is_symlink()
    assert [info.key for info in backend.list("docs")] == ["docs/2024/report.txt"]


def test_a_root_reached_through_a_symlink_is_fine(tmp_path: Path) -> None:
    # Only the key's own path is checked: the root is resolved once, when the backend is made.
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    backend = LocalStorageBackend(tmp_path / "alias")
    backend.put("docs/a.txt", io.BytesIO(b"x"))
    assert backend.get("docs/a.txt") == b"x"
    assert (tmp_path / "real" / "docs" / "a.txt").read_bytes() == b"x"


# -- every kind of path a key can meet -------------------------------------------------------------


def _layout(root: Path, outside: Path) -> dict[str, str]:
    """Keys of every kind of path the resolution meets, by name (the layout is made below ``root``)."""
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
        "file": "docs/real/file.txt",
        "missing-file": "docs/real/new.txt",
        "missing-directory": "docs/new/deeper/new.txt",
        "through-a-file": "docs/real/file.txt/x.txt",
        "below-a-file": "docs/real/file.txt/x/y.txt",
        "through-inner-symlink": "docs/alias/file.txt",
        "through-outer-symlink": "docs/escape/secret.txt",
        "through-relative-climb": "docs/up/new.txt",
        "symlink-to-outside": "docs/link.txt",
        "symlink-to-inside": "docs/inner.txt",
        "dangling-symlink": "docs/dangling.txt",
        "symlink-loop": "docs/loop",
        "through-symlink-loop": "docs/loop/x.txt",
        "through-a-dangling-directory-symlink": "docs/ghost/new/x.txt",
        "through-a-symlink-to-a-file": "docs/inner.txt/x/y.txt",
    }


WITHOUT_SYMLINKS = ["file", "missing-file", "missing-directory", "through-a-file", "below-a-file"]
THROUGH_SYMLINKS = [
    "through-inner-symlink",
    "through-outer-symlink",
    "through-relative-climb",
    "symlink-to-outside",
    "symlink-to-inside",
    "dangling-symlink",
    "symlink-loop",
    "through-symlink-loop",
    "through-a-dangling-directory-symlink",
    "through-a-symlink-to-a-file",
]


@pytest.mark.parametrize("case", THROUGH_SYMLINKS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_path_through_a_symlink_is_refused(
    backend: LocalStorageBackend, root: Path, outside: Path, case: str, operation: str
) -> None:
    key = _layout(root, outside)[case]
    before = tree(root)
    with pytest.raises(InvalidKeyError):
        OPERATIONS[operation](backend, key)
    assert tree(root) == before
    assert_untouched(outside)


@pytest.mark.parametrize("case", WITHOUT_SYMLINKS)
def test_paths_without_symlinks_are_ordinary_paths(
    backend: LocalStorageBackend, root: Path, outside: Path, case: str
) -> None:
    key = _layout(root, outside)[case]
    if case == "file":
        assert backend.get(key) == b"x"
        assert backend.exists(key)
    else:
        assert not backend.exists(key)
    if case in ("through-a-file", "below-a-file"):
        with pytest.raises(StorageError):
            backend.put(key, io.BytesIO(b"new"))
    else:
        backend.put(key, io.BytesIO(b"new"))
        assert (root / key).read_bytes() == b"new"
        backend.delete(key)
        assert not (root / key).exists()
    assert_untouched(outside)
