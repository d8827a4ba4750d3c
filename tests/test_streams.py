"""SizeLimitedStream: a read-only binary file that enforces ``max_size`` on every read path."""

from __future__ import annotations

import array
import io
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from granite_storage import (
    ContentTooLargeError,
    Readable,
    SizeLimitedStream,
    StorageError,
    StorageManager,
    StoragePolicy,
)
from granite_storage.backends.local import LocalStorageBackend

#: Text-like content, so that line-based paths see several lines: 10 lines of 10 bytes.
CONTENT = b"".join(b"line %04d\n" % number for number in range(10))
assert len(CONTENT) == 100


class ReadOnlyStream:
    """The least a caller may hand over: ``read(size)`` and nothing else (no readinto, no readline)."""

    def __init__(self, content: bytes) -> None:
        self._buffer = io.BytesIO(content)

    def read(self, size: int = -1, /) -> bytes:
        return self._buffer.read(size)


class RecordingStream:
    """A stream over ``content`` that records how far each request could reach.

    Every call notes ``offset + requested`` (``None`` for "to the end"), so a test can tell whether the
    wrapper ever asked for more than it was entitled to.
    """

    def __init__(self, content: bytes) -> None:
        self._buffer = io.BytesIO(content)
        self.reaches: list[int | None] = []

    @property
    def consumed(self) -> int:
        return self._buffer.tell()

    def _note(self, size: int | None) -> None:
        offset = self._buffer.tell()
        self.reaches.append(None if size is None or size < 0 else offset + size)

    def read(self, size: int | None = -1, /) -> bytes:
        self._note(size)
        return self._buffer.read(size)

    def readinto(self, buffer: memoryview | bytearray, /) -> int:
        self._note(len(buffer))
        return self._buffer.readinto(buffer)

    def readline(self, size: int | None = -1, /) -> bytes:
        self._note(size)
        return self._buffer.readline(size)


class RecordingReadOnlyStream(RecordingStream):
    """A recording stream with ``read`` only, so the wrapper has to fall back on it for every path."""

    readinto = None  # type: ignore[assignment]
    readline = None  # type: ignore[assignment]


# -- every read path, each consuming the stream to its end ------------------------------------------


def via_read_chunks(stream: SizeLimitedStream) -> bytes:
    return b"".join(iter(lambda: stream.read(7), b""))


def via_read(stream: SizeLimitedStream) -> bytes:
    return stream.read()


def via_read_minus_one(stream: SizeLimitedStream) -> bytes:
    return stream.read(-1)


def via_read_none(stream: SizeLimitedStream) -> bytes:
    return stream.read(None)


def via_readall(stream: SizeLimitedStream) -> bytes:
    return stream.readall()


def via_readinto(stream: SizeLimitedStream) -> bytes:
    buffer = bytearray(7)
    chunks = []
    while count := stream.readinto(buffer):
        chunks.append(bytes(buffer[:count]))
    return b"".join(chunks)


def via_readline(stream: SizeLimitedStream) -> bytes:
    return b"".join(iter(stream.readline, b""))


def via_readline_with_size(stream: SizeLimitedStream) -> bytes:
    return b"".join(iter(lambda: stream.readline(4), b""))


def via_readlines(stream: SizeLimitedStream) -> bytes:
    return b"".join(stream.readlines())


def via_iteration(stream: SizeLimitedStream) -> bytes:
    return b"".join(line for line in stream)


ReadPath = Callable[[SizeLimitedStream], bytes]

READ_PATHS = pytest.mark.parametrize(
    "read_all",
    [
        via_read_chunks,
        via_read,
        via_read_minus_one,
        via_read_none,
        via_readall,
        via_readinto,
        via_readline,
        via_readline_with_size,
        via_readlines,
        via_iteration,
    ],
)

WrappedFactory = Callable[[bytes], Readable]

WRAPPED_STREAMS = pytest.mark.parametrize(
    "wrap", [io.BytesIO, ReadOnlyStream], ids=["full-file-object", "read-only-object"]
)


# -- the limit on every path ------------------------------------------------------------------------


@READ_PATHS
@WRAPPED_STREAMS
def test_exactly_max_size_bytes_read_through(read_all: ReadPath, wrap: WrappedFactory) -> None:
    stream = SizeLimitedStream(wrap(CONTENT), max_size=len(CONTENT))
    assert read_all(stream) == CONTENT
    assert stream.bytes_read == len(CONTENT)


@READ_PATHS
@WRAPPED_STREAMS
def test_one_byte_over_max_size_raises_content_too_large(read_all: ReadPath, wrap: WrappedFactory) -> None:
    stream = SizeLimitedStream(wrap(CONTENT), max_size=len(CONTENT) - 1)
    with pytest.raises(ContentTooLargeError) as raised:
        read_all(stream)
    assert raised.value.max_size == len(CONTENT) - 1


@READ_PATHS
@WRAPPED_STREAMS
def test_max_size_none_reads_everything(read_all: ReadPath, wrap: WrappedFactory) -> None:
    stream = SizeLimitedStream(wrap(CONTENT), max_size=None)
    assert read_all(stream) == CONTENT
    assert stream.bytes_read == len(CONTENT)
    assert stream.max_size is None


@READ_PATHS
def test_max_size_zero_accepts_empty_content(read_all: ReadPath) -> None:
    assert read_all(SizeLimitedStream(io.BytesIO(b""), max_size=0)) == b""


@READ_PATHS
def test_max_size_zero_refuses_a_single_byte(read_all: ReadPath) -> None:
    with pytest.raises(ContentTooLargeError):
        read_all(SizeLimitedStream(io.BytesIO(b"x"), max_size=0))


@READ_PATHS
@pytest.mark.parametrize("recording_class", [RecordingStream, RecordingReadOnlyStream])
def test_never_asks_the_wrapped_stream_for_more_than_one_byte_past_the_limit(
    read_all: ReadPath, recording_class: type[RecordingStream]
) -> None:
    max_size = 25
    wrapped = recording_class(CONTENT * 10)
    with pytest.raises(ContentTooLargeError):
        read_all(SizeLimitedStream(wrapped, max_size=max_size))
    assert wrapped.reaches, "the wrapped stream was never read"
    assert None not in wrapped.reaches, "asked the wrapped stream to read to its end"
    assert max(reach for reach in wrapped.reaches if reach is not None) <= max_size + 1
    assert wrapped.consumed == max_size + 1


def test_the_limit_is_raised_by_the_read_that_passes_it() -> None:
    stream = SizeLimitedStream(io.BytesIO(CONTENT), max_size=60)
    assert stream.read(60) == CONTENT[:60]
    assert stream.bytes_read == 60
    with pytest.raises(ContentTooLargeError):
        stream.read(1)


def test_content_too_large_error_is_a_storage_error_carrying_the_limit() -> None:
    stream = SizeLimitedStream(io.BytesIO(CONTENT), max_size=10)
    with pytest.raises(StorageError) as raised:
        stream.read()
    assert isinstance(raised.value, ContentTooLargeError)
    assert raised.value.max_size == 10
    assert "10 bytes" in str(raised.value)


# -- refusal is sticky ------------------------------------------------------------------------------


def _refused_stream() -> SizeLimitedStream:
    stream = SizeLimitedStream(io.BytesIO(CONTENT), max_size=10)
    with pytest.raises(ContentTooLargeError):
        stream.read(50)
    return stream


@pytest.mark.parametrize(
    "read_again",
    [
        lambda stream: stream.read(1),
        lambda stream: stream.read(0),
        lambda stream: stream.read(),
        lambda stream: stream.readall(),
        lambda stream: stream.readinto(bytearray(1)),
        lambda stream: stream.readline(),
        lambda stream: stream.readlines(),
        lambda stream: next(iter(stream)),
    ],
    ids=["read(1)", "read(0)", "read()", "readall", "readinto", "readline", "readlines", "next"],
)
def test_once_refused_every_later_read_is_refused(read_again: Callable[[SizeLimitedStream], object]) -> None:
    stream = _refused_stream()
    with pytest.raises(ContentTooLargeError):
        read_again(stream)


def test_refusal_is_sticky_even_though_the_wrapped_stream_has_more() -> None:
    wrapped = io.BytesIO(CONTENT)
    stream = SizeLimitedStream(wrapped, max_size=10)
    with pytest.raises(ContentTooLargeError):
        stream.read(11)
    position = wrapped.tell()
    for _ in range(3):
        with pytest.raises(ContentTooLargeError):
            stream.read(5)
    assert wrapped.tell() == position, "a refused stream kept reading its source"


# -- counting ---------------------------------------------------------------------------------------


def test_bytes_read_counts_every_path_together() -> None:
    stream = SizeLimitedStream(io.BytesIO(CONTENT), max_size=None)
    assert stream.bytes_read == 0
    stream.read(3)
    assert stream.bytes_read == 3
    stream.readinto(bytearray(4))
    assert stream.bytes_read == 7
    stream.readline()
    assert stream.bytes_read == 10
    stream.read()
    assert stream.bytes_read == len(CONTENT)


def test_read_returns_at_most_the_size_asked_for() -> None:
    stream = SizeLimitedStream(io.BytesIO(CONTENT), max_size=None)
    assert stream.read(5) == CONTENT[:5]
    assert stream.read(0) == b""
    assert stream.bytes_read == 5


def test_readline_stops_at_the_end_of_a_line() -> None:
    stream = SizeLimitedStream(ReadOnlyStream(CONTENT), max_size=None)
    assert stream.readline() == b"line 0000\n"
    assert stream.readline(4) == b"line"


def test_max_size_is_exposed() -> None:
    assert SizeLimitedStream(io.BytesIO(b""), max_size=42).max_size == 42


# -- a proper read-only binary file -----------------------------------------------------------------


def test_is_a_readable_non_seekable_non_writable_binary_file() -> None:
    stream = SizeLimitedStream(io.BytesIO(CONTENT), max_size=None)
    assert isinstance(stream, io.RawIOBase)
    assert isinstance(stream, Readable)
    assert stream.readable()
    assert not stream.seekable()
    assert not stream.writable()


def test_seek_and_tell_are_unsupported() -> None:
    stream = SizeLimitedStream(io.BytesIO(CONTENT), max_size=None)
    with pytest.raises(io.UnsupportedOperation):
        stream.seek(0)
    with pytest.raises(io.UnsupportedOperation):
        stream.tell()


def test_write_is_unsupported_like_any_read_only_file() -> None:
    stream = SizeLimitedStream(io.BytesIO(CONTENT), max_size=None)
    with pytest.raises(io.UnsupportedOperation):
        stream.write(b"x")


@pytest.mark.parametrize(
    "operation",
    [
        lambda stream: stream.read(1),
        lambda stream: stream.read(),
        lambda stream: stream.read(None),
        lambda stream: stream.readall(),
        lambda stream: stream.readinto(bytearray(1)),
        lambda stream: stream.readline(),
        lambda stream: stream.readlines(),
        lambda stream: next(iter(stream)),
    ],
    ids=["read(1)", "read()", "read(None)", "readall", "readinto", "readline", "readlines", "next"],
)
def test_reading_a_closed_stream_raises_value_error(operation: Callable[[SizeLimitedStream], object]) -> None:
    stream = SizeLimitedStream(io.BytesIO(CONTENT), max_size=None)
    stream.close()
    with pytest.raises(ValueError, match="closed"):
        operation(stream)


def test_context_manager_closes_the_wrapper_but_not_the_wrapped_stream() -> None:
    wrapped = io.BytesIO(CONTENT)
    with SizeLimitedStream(wrapped, max_size=None) as stream:
        assert stream.read(4) == CONTENT[:4]
    assert stream.closed
    assert not wrapped.closed
    assert wrapped.read(1) == CONTENT[4:5]


def test_can_sit_under_a_buffered_reader() -> None:
    buffered = io.BufferedReader(SizeLimitedStream(io.BytesIO(CONTENT), max_size=len(CONTENT)))
    assert buffered.read() == CONTENT


# -- construction -----------------------------------------------------------------------------------


@pytest.mark.parametrize("max_size", [-1, -1024])
def test_negative_max_size_is_rejected(max_size: int) -> None:
    with pytest.raises(ValueError, match="max_size"):
        SizeLimitedStream(io.BytesIO(b""), max_size=max_size)


def test_boolean_max_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_size"):
        SizeLimitedStream(io.BytesIO(b""), max_size=True)


def test_non_integer_max_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_size"):
        SizeLimitedStream(io.BytesIO(b""), max_size=1.5)  # type: ignore[arg-type]


class NonBlockingStream(io.RawIOBase):
    """A non-blocking raw stream with no data ready: its reads return None."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> None:
        return None


def test_a_non_blocking_stream_is_refused_rather_than_read_as_empty() -> None:
    stream = SizeLimitedStream(NonBlockingStream(), max_size=None)
    with pytest.raises(io.UnsupportedOperation, match="blocking"):
        stream.read(10)
    with pytest.raises(io.UnsupportedOperation, match="blocking"):
        stream.readinto(bytearray(10))


class ReadOnlyRawStream(io.RawIOBase):
    """A RawIOBase that implements read() only: its inherited readinto raises NotImplementedError."""

    def __init__(self, content: bytes) -> None:
        super().__init__()
        self._content = io.BytesIO(content)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._content.read(size)


def test_readinto_falls_back_to_read_when_the_stream_has_no_readinto() -> None:
    stream = SizeLimitedStream(ReadOnlyRawStream(b"abcdef"), max_size=6)
    buffer = bytearray(4)
    assert stream.readinto(buffer) == 4
    assert bytes(buffer) == b"abcd"
    assert stream.read() == b"ef"


def test_a_text_stream_is_refused_with_a_hint_to_open_in_binary_mode() -> None:
    stream = SizeLimitedStream(io.StringIO("not bytes"), max_size=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'rb'"):
        stream.read(4)


class _WideItemStream:
    """A stream whose reads return memoryviews of 4-byte items, as an ``array('i')``-backed reader might."""

    def __init__(self, items: int) -> None:
        self._left = items

    def read(self, size: int = -1, /) -> memoryview:
        count = self._left if size is None or size < 0 else min(self._left, max(size // 4, 1))
        self._left -= count
        return memoryview(array.array("i", range(count)))


def WideItemStream(items: int) -> Readable:  # noqa: N802 - stands in for the class
    """A :class:`_WideItemStream`, typed as what callers hand over (its reads are buffers, not bytes)."""
    return cast(Readable, _WideItemStream(items))


def test_the_limit_counts_bytes_not_items_of_a_wide_buffer() -> None:
    stream = SizeLimitedStream(WideItemStream(1000), max_size=1000)  # 4,000 bytes
    with pytest.raises(ContentTooLargeError):
        stream.read()
    assert stream.bytes_read > 1000


def test_a_wide_buffer_within_the_limit_reads_as_its_bytes() -> None:
    expected = array.array("i", range(10)).tobytes()
    stream = SizeLimitedStream(WideItemStream(10), max_size=len(expected))
    assert stream.read() == expected
    assert stream.bytes_read == len(expected)


def test_a_manager_store_of_a_wide_buffer_records_its_size_in_bytes(tmp_path: Path) -> None:
    manager = StorageManager(
        backends={"local": LocalStorageBackend(tmp_path)},
        policies={"docs": StoragePolicy("docs", backend_key="local", max_size=1000)},
    )
    with pytest.raises(ContentTooLargeError):
        manager.put_stream(
            storage_key="docs", model_name="m", entity_id="1", field_name="f", stream=WideItemStream(1000)
        )
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]
    ref = manager.put_stream(
        storage_key="docs", model_name="m", entity_id="1", field_name="f", stream=WideItemStream(100)
    )
    assert ref.size == 400
    assert manager.get(ref) == array.array("i", range(100)).tobytes()
    assert manager.verify(ref)
