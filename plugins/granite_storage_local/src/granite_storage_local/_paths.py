"""Paths below the storage root, resolved at the moment of use and never through a symlink.

A check of a path followed by its use (``realpath``, then ``open``) is a race: a directory swapped for a
symlink in between sends the use elsewhere. Here nothing is looked up by its full path. The backend
holds a descriptor of its root; a key's directories are opened from it one component at a time, each
with ``O_NOFOLLOW | O_DIRECTORY`` relative to the descriptor of its parent, and the object itself is
created, opened, renamed, removed or examined relative to the descriptor of its directory
(``dir_fd=``). Whatever is swapped meanwhile, every step stays below the directory it started from, and
a symlink anywhere on the way fails the step.

On Linux 5.6 and later, :func:`openat2` does the same walk inside the kernel in one system call,
refusing any symlink (``RESOLVE_NO_SYMLINKS``) and any step out of the root (``RESOLVE_BENEATH``);
Python has no binding for it, so it is called through ``ctypes``. Where it is missing (older kernels,
other systems, a seccomp filter that refuses it), :data:`openat2` is ``None`` and the walk is used.

Errors are ``OSError``; a symlink on the path is always reported as ``ELOOP``, whichever way it was
met (``O_NOFOLLOW | O_DIRECTORY`` meets one as ``ENOTDIR``, and FreeBSD's ``O_NOFOLLOW`` as ``EMLINK``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import stat
import sys
from collections.abc import Callable, Sequence

__all__ = [
    "DIRECTORY",
    "READABLE_DIRECTORY",
    "SUPPORTED",
    "open_beneath",
    "open_or_make_directories",
    "openat2",
]

#: Whether this system can open files relative to a directory descriptor without following symlinks
#: (every POSIX system Python supports; not Windows, where the local backend refuses to start).
SUPPORTED = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
#: Flags of a directory descriptor used only as ``dir_fd``. Linux's ``O_PATH`` needs no read
#: permission and does no I/O; systems without it (macOS) open the directory for reading instead.
DIRECTORY: int = (getattr(os, "O_PATH", 0) or os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW
#: Flags of a directory descriptor that is read (``os.scandir``) or flushed (``os.fsync``).
READABLE_DIRECTORY: int = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW

OpenAt2 = Callable[[int, str, int], int]


def open_beneath(root: int, parts: Sequence[str], flags: int) -> int:
    """Open ``root/parts[0]/.../parts[-1]`` with ``flags``, following no symlink; return the descriptor.

    ``root`` is a directory descriptor and ``parts`` are single path components (no ``/``, no ``.`` or
    ``..``; the backend's keys are validated); no ``parts`` opens the root itself again. ``flags``
    should hold ``O_NOFOLLOW`` and ``O_CLOEXEC``: the last component is opened with them as given.
    """
    if not parts:
        return os.open(".", flags, dir_fd=root)
    if openat2 is not None:
        try:
            return openat2(root, "/".join(parts), flags)
        except BlockingIOError:
            pass  # EAGAIN: the kernel saw a concurrent rename and gave up; the walk does not care
        except NotADirectoryError:
            pass  # a file, or a symlink met with O_NOFOLLOW | O_DIRECTORY: the walk tells which
    directory = root
    try:
        for name in parts[:-1]:
            child = _open_at(directory, name, DIRECTORY)
            if directory != root:
                os.close(directory)
            directory = child
        return _open_at(directory, parts[-1], flags)
    finally:
        if directory != root:
            os.close(directory)


def open_or_make_directories(root: int, parts: Sequence[str], flags: int) -> tuple[int, int | None]:
    """Open the directory ``root/parts...`` with ``flags``, making the missing ones, following no symlink.

    Returns the descriptor and the depth (1 for ``parts[0]``) of the first directory this call made,
    or ``None`` if every one existed. Directories are made with mode ``0o777`` less the umask. A
    ``FileNotFoundError`` means a directory vanished between its making and its opening (a concurrent
    delete pruned it): the caller tries again.
    """
    if not parts:
        return open_beneath(root, parts, flags), None
    if openat2 is not None:
        # One system call when everything exists, the usual case; the walk below would open as many
        # directories as there are parts.
        try:
            return open_beneath(root, parts, flags), None
        except FileNotFoundError:
            pass
    directory, first_made = root, None
    try:
        for depth, name in enumerate(parts, 1):
            step = flags if depth == len(parts) else DIRECTORY
            child = None
            if first_made is None:  # below a directory this call made, nothing exists yet
                with contextlib.suppress(FileNotFoundError):
                    child = _open_at(directory, name, step)
            if child is None:
                try:
                    os.mkdir(name, dir_fd=directory)
                except FileExistsError:
                    pass  # made by a concurrent put (or a symlink, refused when it is opened)
                else:
                    first_made = first_made or depth
                child = _open_at(directory, name, step)
            if directory != root:
                os.close(directory)
            directory = child
        opened, directory = directory, root
        return opened, first_made
    finally:
        if directory != root:
            os.close(directory)


def _open_at(directory: int, name: str, flags: int) -> int:
    """``os.open(name, flags, dir_fd=directory)``, reporting a symlink at ``name`` as ``ELOOP``."""
    try:
        return os.open(name, flags, dir_fd=directory)
    except NotADirectoryError:
        if not _is_symlink(directory, name):
            raise
    except OSError as exc:
        if exc.errno != errno.EMLINK:
            raise
    raise OSError(errno.ELOOP, "a symlink is on the path", name)


def _is_symlink(directory: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)
    except OSError:
        return False


# -- openat2(2) through ctypes --------------------------------------------------------------------

_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
# openat2 came after the system call numbers were unified: 437 on every architecture but alpha, ia64
# and mips, which are left to the walk.
_SYS_OPENAT2 = 437
_UNIFIED_MACHINES = frozenset(
    {"x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "armv7l", "armv8l", "riscv64", "ppc64le"}
    | {"ppc64", "s390x", "loongarch64"}
)


def _load_openat2() -> OpenAt2 | None:
    """Bind ``openat2`` if this system has it and lets the process use it; else ``None``."""
    if not sys.platform.startswith("linux") or platform.machine().lower() not in _UNIFIED_MACHINES:
        return None
    import ctypes  # only here: nothing else needs it, and it costs an import

    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]

    class OpenHow(ctypes.Structure):
        _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))

    size = ctypes.sizeof(OpenHow)
    hows: dict[int, OpenHow] = {}  # one per set of flags, made once, only ever read by the kernel

    def bound(directory: int, path: str, flags: int) -> int:
        """``openat2(directory, path, {flags, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS})``."""
        how = hows.get(flags)
        if how is None:
            how = hows.setdefault(flags, OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS))
        fd: int = syscall(_SYS_OPENAT2, directory, os.fsencode(path), ctypes.addressof(how), size)
        if fd < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), path)
        return fd

    probe = os.open("/", DIRECTORY)
    try:  # ENOSYS before Linux 5.6; EPERM or ENOSYS under a seccomp filter that does not know it
        os.close(bound(probe, ".", DIRECTORY))
    except OSError:
        return None
    finally:
        os.close(probe)
    return bound


#: ``openat2(dir_fd, path, flags)`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``, or ``None`` where
#: the system lacks it. Tests set it to ``None`` to run the walk.
openat2: OpenAt2 | None = _load_openat2()
