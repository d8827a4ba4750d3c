"""Objects as files under a root directory."""

from __future__ import annotations

import contextlib
import io
import os
import random
import secrets
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, cast

from granite_storage import (
    ConfigurationError,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    Readable,
    StorageBackend,
    StorageError,
    StoragePermissionError,
)
from granite_storage.backend import check_range
from granite_storage.keys import validate_key
from granite_storage.streams import DEFAULT_CHUNK_SIZE, BoundedReader

__all__ = ["LocalStorageBackend"]

# Temporary files live beside their final path (a rename never crosses file systems) and start
# with a dot; valid keys have no dot-leading segments, so no key can name one.
_TEMP_PREFIX = ".granite-"
_TEMP_SUFFIX = ".part"
# A put whose directory a concurrent delete prunes tries again (see _create_temp_file). Each
# such loss means another caller finished a delete, so the retries stop mattering once the burst
# of contention ends; past a few quick tries they back off with jitter so the contenders spread
# out instead of colliding again, and _MKDIR_ATTEMPTS is only a guard against the impossible.
_MKDIR_QUICK_ATTEMPTS = 4
_MKDIR_MAX_BACKOFF = 0.01
_MKDIR_ATTEMPTS = 1000
_Paths = list[str]  # spelt here: inside the class, `list` is the backend's own method


class LocalStorageBackend(StorageBackend):
    """Store each object as a file at ``root/<key>``.

    Args:
        root: The directory that holds every object; created (with parents) if missing. A root
            that cannot be created or is not a directory raises
            :class:`~granite_storage.ConfigurationError`.
        fsync: Flush each file and its directory to disk before :meth:`put` returns, so a power loss
            cannot lose an object the caller was told is stored. Slower; off by default.
        chunk_size: Bytes copied per read while storing.

    Writes are atomic (temporary file in the target directory, then ``os.replace``): a reader sees
    the old object or the whole new one, and a crash leaves no partial object at a key. Every key is
    checked before use: keys that could leave the root (``..``, absolute paths, backslashes, NUL,
    or a path through a symlink that points outside the root) raise
    :class:`~granite_storage.InvalidKeyError` and touch nothing. Object files get the permissions
    of any file the process creates (``0o666`` less the umask).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        path = Path(root)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self.root = path.resolve(strict=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot use {str(path)!r} as a storage root: {exc}") from exc
        self.fsync = fsync
        self.chunk_size = chunk_size
        self._root = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStorageBackend({self._root!r})"

    def store_area(self) -> tuple[str, str]:
        """``("file", <the resolved root directory>)``: two backends over one tree are one store."""
        return "file", self.root.as_posix().strip("/")

    def put(
        self,
        key: str,
        stream: Readable,
        *,
        content_type: str | None = None,
        original_filename: str | None = None,
    ) -> None:
        """Copy ``stream`` to a temporary file beside the target, then rename it into place.

        Content type and filename are not recorded on disk; the reference carries them. With
        ``fsync``, the file, its directory and every directory this call created are flushed before
        it returns; if that fails the object is removed again and the error raised.
        """
        path = self._path(key)
        directory = os.path.dirname(path)
        file, temp_path, created = self._create_temp_file(key, directory)
        try:
            with file:
                self._copy(key, stream, file)
            with _disk_errors(key):
                # The directory was checked before the copy; check again right before publishing,
                # so a directory swapped for an outward symlink meanwhile is caught.
                self._check_inside_root(key, path)
                os.replace(temp_path, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_path)
            self._prune_empty_directories(directory)
            raise
        if self.fsync:
            try:
                with _disk_errors(key):
                    for synced in dict.fromkeys([directory, *map(os.path.dirname, created)]):
                        _fsync_directory(synced)
            except StorageError:
                # Not durable means not stored: take the object back rather than report a failure
                # and leave it in place.
                self.delete(key)
                raise

    def open(self, key: str) -> BinaryIO:
        """Open the object's file for reading."""
        path = self._path(key)
        try:
            return open(path, "rb")  # the caller owns and closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            raise _storage_error(key, exc) from exc

    def open_range(self, key: str, start: int, end: int | None = None) -> BinaryIO:
        """Open the object's file at ``start``, reading no further than ``end`` (exclusive)."""
        check_range(start, end)
        file = self.open(key)
        try:
            file.seek(start)
        except BaseException:
            file.close()
            raise
        if end is None:
            return file
        return cast(BinaryIO, io.BufferedReader(BoundedReader(file, end - start)))

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of the object's file."""
        path = self._path(key)
        try:
            result = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            raise _storage_error(key, exc) from exc
        if not stat.S_ISREG(result.st_mode):
            raise ObjectNotFoundError(key)
        return ObjectInfo(key, result.st_size, datetime.fromtimestamp(result.st_mtime, UTC))

    def exists(self, key: str) -> bool:
        """Whether the object's file exists."""
        return os.path.isfile(self._path(key))

    def delete(self, key: str) -> None:
        """Remove the object's file, then any directories the removal left empty."""
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise _storage_error(key, exc) from exc
        self._prune_empty_directories(os.path.dirname(path))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk the directory of ``prefix`` depth first and yield every object file below it.

        Temporary files of uploads in progress are not listed, nor are symlinks; files deleted while
        the walk runs are skipped. Memory is bounded by the depth of the tree, not its size: one
        open directory per level.
        """
        prefix = prefix.rstrip("/")
        if prefix:
            return self._walk(self._path(prefix), prefix + "/")
        return self._walk(self._root, "")

    def remove_incomplete_uploads(self, *, older_than: timedelta, prefix: str = "") -> int:
        """Delete the temporary files of uploads that were killed mid-way, if older than ``older_than``.

        Only the backend's own ``.granite-*.part`` files are considered, in the directory of
        ``prefix`` and below (a temporary file lives beside its object's final path); objects are
        never touched. Directories left empty are removed.
        """
        super().remove_incomplete_uploads(older_than=older_than, prefix=prefix)
        cutoff = (datetime.now(UTC) - older_than).timestamp()
        prefix = prefix.rstrip("/")
        removed = 0
        for path in self._temp_files(self._path(prefix) if prefix else self._root):
            try:
                if os.stat(path, follow_symlinks=False).st_mtime > cutoff:
                    continue  # an upload that may still be running
                os.unlink(path)
            except FileNotFoundError:
                continue  # finished (renamed) or removed meanwhile
            removed += 1
            self._prune_empty_directories(os.path.dirname(path))
        return removed

    def _temp_files(self, directory: str) -> Iterator[str]:
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            for entry in entries:
                if entry.name.startswith(_TEMP_PREFIX) and entry.name.endswith(_TEMP_SUFFIX):
                    yield entry.path
                elif not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                    yield from self._temp_files(entry.path)

    def _walk(self, directory: str, key_prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise _storage_error(key_prefix or "/", exc) from exc
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                key = key_prefix + entry.name
                try:
                    result = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since the directory was read
                except OSError as exc:
                    raise _storage_error(key, exc) from exc
                if stat.S_ISDIR(result.st_mode):
                    yield from self._walk(entry.path, key + "/")
                elif stat.S_ISREG(result.st_mode):
                    modified = datetime.fromtimestamp(result.st_mtime, UTC)
                    yield ObjectInfo(key, result.st_size, modified)

    def _path(self, key: str) -> str:
        """The file system path of ``key``, after checking that it stays inside the root."""
        path = os.path.join(self._root, *validate_key(key).split("/"))
        self._check_inside_root(key, path)
        return path

    def _check_inside_root(self, key: str, path: str) -> None:
        if not self._is_under_root(_real_path(path)):
            raise InvalidKeyError(key, "it resolves outside the storage root")

    def _create_temp_file(self, key: str, directory: str) -> tuple[BinaryIO, str, _Paths]:
        """Create ``directory`` as needed and a temporary file in it; return the new directories."""
        created: _Paths = []
        # A concurrent delete (in this process or another) may prune a directory between its
        # creation and the temporary file's: create it again. Only a missing root is final.
        for attempt in range(_MKDIR_ATTEMPTS):
            try:
                created += self._make_directories(directory)
                fd, temp_path = _create_exclusive(directory)
            except FileNotFoundError as exc:
                if attempt + 1 == _MKDIR_ATTEMPTS or not os.path.isdir(self._root):
                    raise _storage_error(key, exc) from exc
                if attempt >= _MKDIR_QUICK_ATTEMPTS:
                    backoff = min(_MKDIR_MAX_BACKOFF, 0.0001 * 2 ** (attempt - _MKDIR_QUICK_ATTEMPTS))
                    time.sleep(random.uniform(0, backoff))  # noqa: S311 - jitter, not a secret
                continue
            except OSError as exc:
                raise _storage_error(key, exc) from exc
            return os.fdopen(fd, "wb"), temp_path, created
        raise AssertionError("unreachable")  # pragma: no cover

    def _make_directories(self, directory: str) -> _Paths:
        """Create the missing directories down to ``directory``, one level at a time; return them."""
        missing = []
        while directory != self._root and not os.path.isdir(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        created = []
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                continue  # made by a concurrent put
            created.append(path)
        return created

    def _copy(self, key: str, stream: Readable, file: BinaryIO) -> None:
        """Copy ``stream`` into ``file``. Errors from the stream propagate as they are."""
        read, write, size = stream.read, file.write, self.chunk_size
        while chunk := read(size):
            try:
                write(chunk)
            except OSError as exc:
                raise _storage_error(key, exc) from exc
        with _disk_errors(key):
            file.flush()
            if self.fsync:
                os.fsync(file.fileno())

    def _is_under_root(self, path: str) -> bool:
        """Whether ``path`` lies strictly below the root (the root itself does not count)."""
        return path.startswith(self._root + os.sep)

    def _prune_empty_directories(self, directory: str) -> None:
        while self._is_under_root(directory):
            try:
                os.rmdir(directory)
            except OSError:
                return  # not empty (or already gone): stop climbing
            directory = os.path.dirname(directory)


@contextlib.contextmanager
def _disk_errors(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _storage_error(key, exc) from exc


def _storage_error(key: str, exc: OSError) -> StorageError:
    if isinstance(exc, PermissionError):
        return StoragePermissionError(f"local storage denied access to {key!r}: {exc.strerror}")
    return StorageError(f"local storage failed on {key!r}: {exc}")


def _create_exclusive(directory: str) -> tuple[int, str]:
    """Create a new, empty temporary file in ``directory``; return its descriptor and path.

    Not ``tempfile.mkstemp``: that creates files private to their owner (0o600), while an object
    should get the mode of any file the application writes (0o666 less the umask, applied by the
    kernel here), e.g. so that a web server can serve the directory.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    while True:
        path = os.path.join(directory, f"{_TEMP_PREFIX}{secrets.token_hex(8)}{_TEMP_SUFFIX}")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue  # 64 random bits collided: draw again


# Linux resolves a whole directory path in one open(O_PATH) and names the result in /proc/self/fd.
_O_PATH = getattr(os, "O_PATH", 0)
_DELETED = " (deleted)"  # what /proc/self/fd shows for a directory removed since it was opened


def _real_path(path: str) -> str:
    """``os.path.realpath(path)``: the same answer, from a few system calls instead of one per component.

    ``os.path.realpath`` calls ``lstat`` on every component of an absolute path, which made up half of
    a small object's read. On Linux the kernel resolves the deepest existing directory of ``path`` in
    one ``open(O_PATH)`` and ``/proc/self/fd`` names the result; one ``lstat`` of the component below
    it tells whether that is a symlink (resolved) or missing (kept as it is, with everything after
    it, as ``os.path.realpath`` keeps it). Whenever that cannot answer exactly (no ``O_PATH`` or
    ``/proc``, a symlink there, a directory removed meanwhile), ``os.path.realpath`` does.
    """
    if not _O_PATH:
        return os.path.realpath(path)
    directory, below = path, []
    while True:  # up from the path's own directory to the deepest one that exists
        directory, name = os.path.split(directory)
        below.append(name)
        try:
            fd = os.open(directory, _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if directory == os.path.dirname(directory):
                return os.path.realpath(path)
            continue
        except OSError:
            return os.path.realpath(path)
        break
    try:
        resolved = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
    finally:
        os.close(fd)
    if not resolved.startswith("/") or resolved.endswith(_DELETED):
        return os.path.realpath(path)
    try:
        first = os.lstat(os.path.join(directory, below[-1]))
    except FileNotFoundError:
        pass  # missing: kept as it is, and so is everything below it
    except OSError:
        return os.path.realpath(path)
    else:
        # It exists: only the last component may, and only if it is not a symlink to resolve.
        if len(below) > 1 or stat.S_ISLNK(first.st_mode):
            return os.path.realpath(path)
    return os.path.join(resolved, *reversed(below))


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
