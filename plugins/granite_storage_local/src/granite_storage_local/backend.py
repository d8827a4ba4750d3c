"""Objects as files under a root directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from granite_storage import (
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    Readable,
    StorageBackend,
    StorageError,
    StoragePermissionError,
)
from granite_storage.keys import validate_key
from granite_storage.streams import DEFAULT_CHUNK_SIZE

__all__ = ["LocalStorageBackend"]

# Temporary files live beside their final path (a rename never crosses file systems) and start
# with a dot; keys may not have dot-leading segments, so no key can name one.
_TEMP_PREFIX = ".granite-"
_TEMP_SUFFIX = ".part"
_MKDIR_ATTEMPTS = 5


class LocalStorageBackend(StorageBackend):
    """Store each object as a file at ``root/<key>``.

    Args:
        root: The directory that holds every object; created (with parents) if missing.
        fsync: Flush each file and its directory to disk before :meth:`put` returns, so a power loss
            cannot lose an object the caller was told is stored. Slower; off by default.
        chunk_size: Bytes copied per read while storing.

    Writes are atomic (temporary file in the target directory, then ``os.replace``): a reader sees
    the old object or the whole new one, and a crash leaves no partial object at a key. Every key is
    checked before use: keys that could leave the root (``..``, absolute paths, backslashes, NUL,
    dot-leading segments, or a path through a symlink that points outside the root) raise
    :class:`~granite_storage.InvalidKeyError` and touch nothing.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        self.root = path.resolve(strict=True)
        self.fsync = fsync
        self.chunk_size = chunk_size
        self._root = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStorageBackend({self._root!r})"

    def put(
        self,
        key: str,
        stream: Readable,
        *,
        content_type: str | None = None,
        original_filename: str | None = None,
    ) -> None:
        """Copy ``stream`` to a temporary file beside the target, then rename it into place.

        Content type and filename are not recorded on disk; the reference carries them.
        """
        path = self._path(key)
        file, temp_path = self._create_temp_file(key, os.path.dirname(path))
        try:
            with file:
                self._copy(key, stream, file)
            with _disk_errors(key):
                os.replace(temp_path, path)
                if self.fsync:
                    _fsync_directory(os.path.dirname(path))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_path)
            raise

    def open(self, key: str) -> BinaryIO:
        """Open the object's file for reading."""
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            raise _storage_error(key, exc) from exc

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of the object's file."""
        path = self._path(key)
        try:
            result = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            raise _storage_error(key, exc) from exc
        if not os.path.isfile(path):
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
        """Walk the directory of ``prefix`` and yield every object file below it.

        Temporary files of uploads in progress are not listed, nor are symlinks.
        """
        prefix = prefix.strip("/")
        pending = [(self._path(prefix), prefix + "/")] if prefix else [(self._root, "")]
        while pending:
            directory, key_prefix = pending.pop()
            try:
                entries = os.scandir(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    key = key_prefix + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((entry.path, key + "/"))
                    elif entry.is_file(follow_symlinks=False):
                        result = entry.stat(follow_symlinks=False)
                        modified = datetime.fromtimestamp(result.st_mtime, UTC)
                        yield ObjectInfo(key, result.st_size, modified)

    def _path(self, key: str) -> str:
        """The file system path of ``key``, after checking that it stays inside the root."""
        segments = validate_key(key).split("/")
        if any(segment.startswith(".") for segment in segments):
            raise InvalidKeyError(key, "the local backend reserves dot-leading segments")
        path = os.path.join(self._root, *segments)
        resolved = os.path.realpath(path)
        if not resolved.startswith(self._root + os.sep):
            raise InvalidKeyError(key, "it resolves outside the storage root")
        return path

    def _create_temp_file(self, key: str, directory: str) -> tuple[BinaryIO, str]:
        # A concurrent delete may prune the directory between mkdir and mkstemp: try again.
        for attempt in range(_MKDIR_ATTEMPTS):
            try:
                os.makedirs(directory, exist_ok=True)
                fd, temp_path = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX)
            except FileNotFoundError as exc:
                if attempt + 1 == _MKDIR_ATTEMPTS:
                    raise _storage_error(key, exc) from exc
                continue
            except OSError as exc:
                raise _storage_error(key, exc) from exc
            return os.fdopen(fd, "wb"), temp_path
        raise AssertionError("unreachable")  # pragma: no cover

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

    def _prune_empty_directories(self, directory: str) -> None:
        while directory.startswith(self._root + os.sep):
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


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
