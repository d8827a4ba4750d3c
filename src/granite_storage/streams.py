"""Streams on the upload path: size enforcement and checksumming, one chunk at a time."""

from __future__ import annotations

import hashlib
import io
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from granite_storage.errors import ContentTooLargeError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["DEFAULT_CHUNK_SIZE", "BoundedReader", "Readable", "SizeLimitedStream", "is_size_limit"]

#: The chunk size used when the library copies a stream (1 MiB).
DEFAULT_CHUNK_SIZE = 1024 * 1024


@runtime_checkable
class Readable(Protocol):
    """Anything with a binary ``read(size)``: open files, ``BytesIO``, sockets' files, upload objects."""

    def read(self, size: int = -1, /) -> bytes:
        """Read up to ``size`` bytes (all that remain if negative); ``b""`` at end of file."""
        ...


def is_size_limit(value: object) -> bool:
    """Whether ``value`` is a valid size limit: ``None`` (no limit) or an ``int`` of 0 or more."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


class SizeLimitedStream(io.RawIOBase):
    """A read-only binary file over ``stream`` that refuses to yield more than ``max_size`` bytes.

    Every read path (``read``, ``read()``/``read(-1)``, ``readall``, ``readinto``, ``readline``,
    ``readlines`` and iteration) counts bytes and raises
    :class:`~granite_storage.ContentTooLargeError` as soon as the count passes ``max_size``: content of
    exactly ``max_size`` bytes reads through, one byte more is refused. Once refused, every later read
    is refused too. No read asks the wrapped stream for more than one byte past the limit, so an
    oversized upload is stopped without being read further.

    The wrapped stream is not closed when this wrapper is; its owner closes it.

    Args:
        stream: A binary stream with ``read(size)``.
        max_size: The limit in bytes; ``None`` counts without limiting.
    """

    def __init__(self, stream: Readable, max_size: int | None) -> None:
        super().__init__()
        if not is_size_limit(max_size):
            raise ValueError(f"max_size must be a non-negative integer or None, got {max_size!r}")
        self._stream = stream
        self._max_size = max_size
        self._bytes_read = 0
        self._refused = False

    @property
    def max_size(self) -> int | None:
        """The limit in bytes, or ``None`` for none."""
        return self._max_size

    @property
    def bytes_read(self) -> int:
        """How many bytes have been read through this wrapper so far."""
        return self._bytes_read

    def readable(self) -> bool:
        """Return ``True``: the stream is readable."""
        return True

    def write(self, data: object, /) -> int:
        """Refuse: the stream is read-only (:class:`io.UnsupportedOperation`)."""
        raise io.UnsupportedOperation("SizeLimitedStream is read-only")

    def read(self, size: int | None = -1, /) -> bytes:
        """Read up to ``size`` bytes, or everything to end of file when ``size`` is negative or None."""
        if size is None or size < 0:
            return self.readall()
        self._check_open()
        return self._count(self._stream.read(self._allowed(size)))

    def readall(self) -> bytes:
        """Read to end of file, enforcing the limit chunk by chunk."""
        chunks = []
        while chunk := self.read(DEFAULT_CHUNK_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Read into a pre-allocated writable buffer; return the number of bytes read (0 at EOF)."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        view = view[: self._allowed(len(view))]
        inner_readinto = getattr(self._stream, "readinto", None)
        try:
            if inner_readinto is None:
                raise NotImplementedError
            count: int = _blocking(inner_readinto(view))
        except NotImplementedError:  # a stream with read() only (RawIOBase raises this)
            data = _as_bytes(self._stream.read(len(view)))
            count = len(data)
            view[:count] = data
        self._count_only(count)
        return count

    def readline(self, size: int | None = -1, /) -> bytes:
        """Read one line (up to ``size`` bytes), enforcing the limit."""
        self._check_open()
        limit = self._allowed(-1 if size is None else size)
        inner_readline = getattr(self._stream, "readline", None)
        if inner_readline is None:
            return super().readline(limit)
        return self._count(inner_readline(limit))

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        if self._refused:
            raise ContentTooLargeError(self._max_size or 0)

    def _allowed(self, size: int) -> int:
        """Cap a read request at one byte past the limit, enough to detect passing it."""
        if self._max_size is None:
            return size
        headroom = self._max_size - self._bytes_read + 1
        return headroom if size < 0 else min(size, headroom)

    def _count(self, data: object) -> bytes:
        data = _as_bytes(data)
        self._count_only(len(data))
        return data

    def _count_only(self, count: int) -> None:
        self._bytes_read += count
        if self._max_size is not None and self._bytes_read > self._max_size:
            self._refused = True
            raise ContentTooLargeError(self._max_size)


_T = TypeVar("_T")


def _as_bytes(data: object) -> bytes:
    """Return what a ``read`` returned as ``bytes``, so that ``len`` counts bytes.

    A stream may return any buffer (``bytearray``, a ``memoryview``, an ``array``); ``len`` of a
    buffer of 4-byte items counts items, not bytes, which would let content pass its size limit.

    Raises:
        io.UnsupportedOperation: the read returned ``None`` (a non-blocking stream with no data yet).
        TypeError: the read returned ``str`` or something that is not a buffer.
    """
    data = _blocking(data)
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        raise TypeError("expected a binary stream, but a read returned str; open files with 'rb'")
    try:
        return memoryview(data).tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"expected a binary stream, but a read returned {type(data).__name__}") from None


def _blocking(result: _T | None) -> _T:
    """Return ``result``, refusing ``None``.

    A non-blocking stream returns ``None`` for "no data yet"; taken for end of file, it would
    truncate the upload silently.
    """
    if result is None:
        raise io.UnsupportedOperation("SizeLimitedStream needs a blocking stream; a read returned None")
    return result


class BoundedReader(io.RawIOBase):
    """A read-only binary file that yields at most ``length`` bytes of ``stream``, then end of file.

    Closing it closes ``stream``, which it owns: a byte range of an opened object is returned as one
    of these (see :meth:`StorageBackend.open_range <granite_storage.StorageBackend.open_range>`).
    Wrap it in :class:`io.BufferedReader` where line reads or small reads are frequent.

    Args:
        stream: The binary stream to read from, positioned where the range starts.
        length: How many bytes at most to yield; ``None`` for all that remain.
    """

    def __init__(self, stream: Readable, length: int | None) -> None:
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
            raise ValueError(f"length must be a non-negative integer or None, got {length!r}")
        super().__init__()
        self._stream = stream
        self._remaining = length

    def readable(self) -> bool:
        """Return ``True``: the stream is readable."""
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Read into ``buffer``; return the number of bytes read (0 at the end of the range)."""
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        view = memoryview(buffer).cast("B")
        size = len(view) if self._remaining is None else min(len(view), self._remaining)
        if size == 0:
            return 0
        data = _as_bytes(self._stream.read(size))[:size]
        count = len(data)
        view[:count] = data
        if self._remaining is not None:
            self._remaining -= count
        return count

    def close(self) -> None:
        """Close this reader and the stream it reads from."""
        if not self.closed:
            try:
                # getattr: the finalizer closes even an instance whose __init__ raised.
                close = getattr(getattr(self, "_stream", None), "close", None)
                if close is not None:
                    close()
            finally:
                super().close()


class HashingReader:
    """Pass reads through while computing the sha256 and size of everything read (internal)."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self._sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        """Read from the wrapped stream, hashing what passes."""
        data = _as_bytes(self._stream.read(size))
        self._sha256.update(data)
        self.size += len(data)
        return data

    @property
    def checksum(self) -> str:
        """``"sha256:<hex>"`` of everything read so far."""
        return "sha256:" + self._sha256.hexdigest()
