"""Objects as files under a root directory."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import stat
import sys
import time
import weakref
from collections.abc import Iterator, Sequence
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
from granite_storage_local import _paths
from granite_storage_local._paths import DIRECTORY, READABLE_DIRECTORY

if sys.platform != "win32":
    import fcntl

__all__ = ["LocalStorageBackend"]

# Temporary files live beside their final path (a rename never crosses file systems) and start
# with a dot; valid keys have no dot-leading segments, so no key can name one.
_TEMP_PREFIX = ".granite-"
_TEMP_SUFFIX = ".part"
# A put whose directory a concurrent delete prunes tries again (see _open_temp_file). Each
# such loss means another caller finished a delete, so the retries stop mattering once the burst
# of contention ends; past a few quick tries they back off with jitter so the contenders spread
# out instead of colliding again, and _MKDIR_ATTEMPTS is only a guard against the impossible.
_MKDIR_QUICK_ATTEMPTS = 4
_MKDIR_MAX_BACKOFF = 0.01
_MKDIR_ATTEMPTS = 1000
_NAME_MAX = 255  # bytes per file name where the file system does not say (every common one says 255)
# An object is opened without blocking (a FIFO at a key would block until a writer came), checked to be
# a regular file, and switched back to blocking reads; O_NOFOLLOW refuses a symlink at the key.
_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_TEMP_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_Parts = list[str]  # spelt here: inside the class, `list` is the backend's own method
_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "device", stat.S_IFBLK: "device"}


class LocalStorageBackend(StorageBackend):
    """Store each object as a file at ``root/<key>``.

    Args:
        root: The directory that holds every object; created (with parents) if missing, then resolved
            and opened once: the backend keeps using that directory, even if it is renamed. A root
            that cannot be created or is not a directory raises
            :class:`~granite_storage.ConfigurationError`.
        fsync: Flush each file and its directory to disk before :meth:`put` returns, so a power loss
            cannot lose an object the caller was told is stored. Slower; off by default.
        chunk_size: Bytes copied per read while storing.

    Writes are atomic (temporary file in the target directory, then a rename): a reader sees the old
    object or the whole new one, and a crash leaves no partial object at a key. Every key is checked
    before use and resolved below the root at the moment of use, one directory at a time, following
    no symlink: keys that could leave the root (``..``, absolute paths, backslashes, NUL), names too
    long for the file system, and keys with a symlink anywhere on their path (an alias of another
    directory inside the root too) raise :class:`~granite_storage.InvalidKeyError` and touch nothing.
    So does a key naming a FIFO, socket or device. Object files get the permissions of any file the
    process creates (``0o666`` less the umask).
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
        if not _paths.SUPPORTED:
            raise ConfigurationError(
                "the local backend needs a system that opens files relative to a directory descriptor "
                "(os.open with dir_fd: Linux, macOS, the BSDs), which this one cannot"
            )
        path = Path(root)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self.root = path.resolve(strict=True)
            self._root_fd = os.open(self.root, DIRECTORY)
        except OSError as exc:
            raise ConfigurationError(f"cannot use {str(path)!r} as a storage root: {exc}") from exc
        weakref.finalize(self, os.close, self._root_fd)
        try:
            self._name_max = os.fpathconf(self._root_fd, "PC_NAME_MAX")
        except (OSError, ValueError):
            self._name_max = _NAME_MAX
        self.fsync = fsync
        self.chunk_size = chunk_size
        self._directory_flags = READABLE_DIRECTORY if fsync else DIRECTORY

    def __repr__(self) -> str:
        return f"LocalStorageBackend({str(self.root)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # A copy opens the root again: sharing the descriptor would leave the copy with a closed (or
        # reused) number once the original is collected.
        return (_reopen, (str(self.root), self.fsync, self.chunk_size))

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

        Content type and filename are not recorded on disk; the reference carries them. A symlink,
        FIFO, socket or device at the key is refused with :class:`~granite_storage.InvalidKeyError`
        before anything is written. With ``fsync``, the file, its directory and every directory this
        call created are flushed before it returns; if that fails the object is removed again and the
        error raised.
        """
        parts = self._parts(key)
        directories, name = parts[:-1], parts[-1]
        directory, temp_name, file, first_made = self._open_temp_file(key, directories, name)
        renamed = False
        try:
            try:
                self._copy(key, stream, file)
            finally:
                os.close(file)
            with _disk_errors(key):
                # The directory is the one the temporary file was made in, whatever its path has
                # become meanwhile: the rename cannot leave it.
                os.replace(temp_name, name, src_dir_fd=directory, dst_dir_fd=directory)
                renamed = True
                if self.fsync:
                    os.fsync(directory)
        except BaseException:
            if renamed:  # but not durable: not stored
                self._unlink_object(key, directory, name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp_name, dir_fd=directory)
            self._prune(directories)
            raise
        finally:
            os.close(directory)
        if self.fsync and first_made is not None:
            try:
                with _disk_errors(key):
                    # The parent of every directory this put made, from the deepest up.
                    for depth in range(len(directories) - 1, first_made - 2, -1):
                        _fsync_directory(self._root_fd, directories[:depth])
            except StorageError:
                self.delete(key)  # not durable means not stored
                raise

    def open(self, key: str) -> BinaryIO:
        """Open the object's file for reading; the caller owns and closes it."""
        fd = self._open_object(key)
        try:
            return open(fd, "rb", buffering=io.DEFAULT_BUFFER_SIZE)
        except BaseException:
            os.close(fd)
            raise

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
        parts = self._parts(key)
        result = self._lstat(key, parts)
        if result is None:
            raise ObjectNotFoundError(key)
        return ObjectInfo(key, result.st_size, datetime.fromtimestamp(result.st_mtime, UTC))

    def exists(self, key: str) -> bool:
        """Whether the object's file exists."""
        return self._lstat(key, self._parts(key)) is not None

    def delete(self, key: str) -> None:
        """Remove the object's file, then any directories the removal left empty."""
        parts = self._parts(key)
        directories = parts[:-1]
        try:
            directory = _paths.open_beneath(self._root_fd, directories, DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise _storage_error(key, exc) from exc
        try:
            removed = self._unlink_object(key, directory, parts[-1])
        finally:
            os.close(directory)
        if removed:
            self._prune(directories)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk the directory of ``prefix`` depth first and yield every object file below it.

        Temporary files of uploads in progress are not listed, nor are symlinks and other files that
        are not regular files; files deleted while the walk runs are skipped. Only files are
        examined (one ``stat`` each), directories are known from the listing itself. Memory is bounded
        by the depth of the tree, not its size: one open directory per level.
        """
        prefix = prefix.rstrip("/")
        parts = self._parts(prefix) if prefix else []
        return self._list(prefix, parts)

    def remove_incomplete_uploads(self, *, older_than: timedelta, prefix: str = "") -> int:
        """Delete the temporary files of uploads that were killed mid-way, if older than ``older_than``.

        Only the backend's own ``.granite-*.part`` files are considered, in the directory of
        ``prefix`` and below (a temporary file lives beside its object's final path); objects are
        never touched. Directories left empty are removed.
        """
        super().remove_incomplete_uploads(older_than=older_than, prefix=prefix)
        cutoff = (datetime.now(UTC) - older_than).timestamp()
        prefix = prefix.rstrip("/")
        parts = self._parts(prefix) if prefix else []
        directory = self._open_listed_directory(prefix, parts)
        if directory is None:
            return 0
        return self._remove_temp_files(directory, parts, cutoff)

    # -- resolving keys ---------------------------------------------------------------------------

    def _parts(self, key: str) -> _Parts:
        """The segments of ``key``, after checking that each can be a file name below the root."""
        parts = validate_key(key).split("/")
        for part in parts:
            try:
                size = len(os.fsencode(part))
            except UnicodeEncodeError:
                raise InvalidKeyError(key, "it is not a valid file name on this system") from None
            if size > self._name_max:
                raise InvalidKeyError(
                    key, f"a segment is longer than the file system's {self._name_max} bytes per name"
                )
        return parts

    def _lstat(self, key: str, parts: Sequence[str]) -> os.stat_result | None:
        """The status of the regular file at ``key``, or ``None`` if nothing (or a directory) is there."""
        try:
            directory = _paths.open_beneath(self._root_fd, parts[:-1], DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _storage_error(key, exc) from exc
        try:
            result = os.stat(parts[-1], dir_fd=directory, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _storage_error(key, exc) from exc
        finally:
            os.close(directory)
        return result if _is_object(key, result.st_mode) else None

    def _open_object(self, key: str) -> int:
        """A blocking descriptor of the regular file at ``key``, opened for reading."""
        parts = self._parts(key)
        try:
            fd = _paths.open_beneath(self._root_fd, parts, _READ | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a socket (or a device without its driver)
                raise InvalidKeyError(key, "it names a socket, not a regular file") from exc
            raise _storage_error(key, exc) from exc
        try:
            if not _is_object(key, os.fstat(fd).st_mode):
                raise ObjectNotFoundError(key)
            fcntl.fcntl(fd, fcntl.F_SETFL, _READ)  # clears O_NONBLOCK, the only status flag set
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- writing ----------------------------------------------------------------------------------

    def _open_temp_file(
        self, key: str, directories: Sequence[str], name: str
    ) -> tuple[int, str, int, int | None]:
        """Open (making as needed) the key's directory and a new temporary file in it.

        Returns the directory's descriptor, the temporary file's name and descriptor, and the depth
        of the first directory made (``None`` if none was). Refuses a symlink or special file at
        ``name`` before anything is created.
        """
        first_made: int | None = None
        # A concurrent delete (in this process or another) may prune a directory between its
        # creation and the temporary file's: create it again. Only a missing root is final.
        for attempt in range(_MKDIR_ATTEMPTS):
            try:
                directory, made = _paths.open_or_make_directories(
                    self._root_fd, directories, self._directory_flags
                )
            except FileNotFoundError as exc:
                self._retry_or_raise(key, exc, attempt)
                continue
            except OSError as exc:
                raise _storage_error(key, exc) from exc
            if made is not None:
                first_made = made if first_made is None else min(first_made, made)
            try:
                self._refuse_special_file(key, directory, name)
                temp_name, file = _create_temp_file(directory)
            except FileNotFoundError as exc:
                os.close(directory)
                self._retry_or_raise(key, exc, attempt)
                continue
            except BaseException as exc:
                os.close(directory)
                if first_made is not None:
                    self._prune(directories)
                if isinstance(exc, OSError) and not isinstance(exc, StorageError):
                    raise _storage_error(key, exc) from exc
                raise
            return directory, temp_name, file, first_made
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry_or_raise(self, key: str, exc: FileNotFoundError, attempt: int) -> None:
        if attempt + 1 == _MKDIR_ATTEMPTS or os.fstat(self._root_fd).st_nlink == 0:
            raise _storage_error(key, exc) from exc  # the root itself is gone
        if attempt >= _MKDIR_QUICK_ATTEMPTS:
            backoff = min(_MKDIR_MAX_BACKOFF, 0.0001 * 2 ** (attempt - _MKDIR_QUICK_ATTEMPTS))
            time.sleep(random.uniform(0, backoff))  # noqa: S311 - jitter, not a secret

    def _refuse_special_file(self, key: str, directory: int, name: str) -> None:
        try:
            mode = os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return  # a new object: the usual case
        if not stat.S_ISDIR(mode):  # a directory fails the rename, with its own error
            _is_object(key, mode)

    def _copy(self, key: str, stream: Readable, file: int) -> None:
        """Copy ``stream`` into ``file``. Errors from the stream propagate as they are."""
        read, size = stream.read, self.chunk_size
        while chunk := read(size):
            try:
                _write_all(file, chunk)
            except OSError as exc:
                raise _storage_error(key, exc) from exc
        if self.fsync:
            with _disk_errors(key):
                os.fsync(file)

    # -- deleting ---------------------------------------------------------------------------------

    def _unlink_object(self, key: str, directory: int, name: str) -> bool:
        """Remove the regular file ``name`` in ``directory``; whether there was one to remove."""
        try:
            mode = os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode
            if not _is_object(key, mode):
                return False
            os.unlink(name, dir_fd=directory)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise _storage_error(key, exc) from exc
        return True

    def _prune(self, directories: Sequence[str]) -> None:
        """Remove the directories of ``directories`` that are empty, deepest first, up to the root."""
        for depth in range(len(directories), 0, -1):
            try:
                parent = _paths.open_beneath(self._root_fd, directories[: depth - 1], DIRECTORY)
            except OSError:
                return
            try:
                os.rmdir(directories[depth - 1], dir_fd=parent)
            except OSError:
                return  # not empty (or already gone): stop climbing
            finally:
                os.close(parent)

    # -- walking ----------------------------------------------------------------------------------

    def _open_listed_directory(self, prefix: str, parts: Sequence[str]) -> int | None:
        """A readable descriptor of the directory of ``prefix``, or ``None`` if there is none."""
        try:
            return _paths.open_beneath(self._root_fd, parts, READABLE_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _storage_error(prefix or "/", exc) from exc

    def _list(self, prefix: str, parts: Sequence[str]) -> Iterator[ObjectInfo]:
        directory = self._open_listed_directory(prefix, parts)
        if directory is not None:
            yield from _walk(directory, prefix + "/" if prefix else "")

    def _remove_temp_files(self, directory: int, parts: Sequence[str], cutoff: float) -> int:
        """Remove the old temporary files below ``directory`` (``root/parts...``), which it closes."""
        removed = 0
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX):
                        try:
                            result = entry.stat(follow_symlinks=False)
                            if not stat.S_ISREG(result.st_mode) or result.st_mtime > cutoff:
                                continue  # not ours, or an upload that may still be running
                            os.unlink(name, dir_fd=directory)
                        except FileNotFoundError:
                            continue  # finished (renamed) or removed meanwhile
                        removed += 1
                        self._prune(parts)
                    elif not name.startswith(".") and entry.is_dir(follow_symlinks=False):
                        try:
                            child = os.open(name, READABLE_DIRECTORY, dir_fd=directory)
                        except (FileNotFoundError, NotADirectoryError):
                            continue  # removed, or swapped for a symlink, since it was listed
                        removed += self._remove_temp_files(child, [*parts, name], cutoff)
        finally:
            os.close(directory)
        return removed


def _reopen(root: str, fsync: bool, chunk_size: int) -> LocalStorageBackend:
    return LocalStorageBackend(root, fsync=fsync, chunk_size=chunk_size)


def _walk(directory: int, key_prefix: str) -> Iterator[ObjectInfo]:
    """Yield the regular files below ``directory`` (a readable descriptor, closed at the end)."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                key = key_prefix + entry.name
                child: int | None = None
                result: os.stat_result | None = None
                try:
                    if entry.is_dir(follow_symlinks=False):  # from the listing: no stat
                        child = os.open(entry.name, READABLE_DIRECTORY, dir_fd=directory)
                    elif entry.is_file(follow_symlinks=False):  # not a symlink, FIFO, socket, device
                        result = entry.stat(follow_symlinks=False)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # deleted (or swapped for a symlink) since the directory was read
                except OSError as exc:
                    raise _storage_error(key, exc) from exc
                if child is not None:
                    yield from _walk(child, key + "/")
                elif result is not None and stat.S_ISREG(result.st_mode):
                    yield ObjectInfo(key, result.st_size, datetime.fromtimestamp(result.st_mtime, UTC))
    finally:
        os.close(directory)


def _is_object(key: str, mode: int) -> bool:
    """Whether ``mode`` is a regular file's (``False`` for a directory); refuse anything else."""
    if stat.S_ISREG(mode):
        return True
    if stat.S_ISDIR(mode):
        return False
    if stat.S_ISLNK(mode):
        raise InvalidKeyError(key, "a symlink is on its path; the local backend follows none")
    kind = _KINDS.get(stat.S_IFMT(mode), "special file")
    raise InvalidKeyError(key, f"it names a {kind}, not a regular file")


@contextlib.contextmanager
def _disk_errors(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _storage_error(key, exc) from exc


def _storage_error(key: str, exc: OSError) -> StorageError:
    if exc.errno == errno.ELOOP:
        return InvalidKeyError(key, "a symlink is on its path; the local backend follows none")
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidKeyError(key, "it is too long for the file system")
    if isinstance(exc, PermissionError):
        return StoragePermissionError(f"local storage denied access to {key!r}: {exc.strerror}")
    return StorageError(f"local storage failed on {key!r}: {exc}")


def _create_temp_file(directory: int) -> tuple[str, int]:
    """Create a new, empty temporary file in ``directory``; return its name and descriptor.

    Not ``tempfile.mkstemp``: that creates files private to their owner (0o600), while an object
    should get the mode of any file the application writes (0o666 less the umask, applied by the
    kernel here), e.g. so that a web server can serve the directory. The name needs no secret
    randomness (``O_EXCL`` makes a collision a retry, never a shared file), so it costs no system call.
    """
    while True:
        name = f"{_TEMP_PREFIX}{random.getrandbits(64):016x}{_TEMP_SUFFIX}"
        try:
            return name, os.open(name, _TEMP_FILE, 0o666, dir_fd=directory)
        except FileExistsError:
            continue  # 64 random bits collided: draw again


def _write_all(file: int, data: bytes) -> None:
    """Write all of ``data`` (any bytes-like object, counted in bytes) to the descriptor ``file``."""
    with memoryview(data) as view, view.cast("B") as remaining:
        while remaining:
            remaining = remaining[os.write(file, remaining) :]


def _fsync_directory(root: int, parts: Sequence[str]) -> None:
    fd = _paths.open_beneath(root, parts, READABLE_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
