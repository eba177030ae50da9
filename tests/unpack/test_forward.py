"""The forward-only stream tarfile and the zip reader read the download through."""

import io
import tracemalloc

import pytest

from receiver.unpack.forward import ForwardStream


class Chunks:
    """A stream whose reads end where its chunks do, as a download's and an inflate's do."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def read(self, size: int = -1, /) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def stream(*chunks: bytes, **kwargs) -> ForwardStream:
    return ForwardStream(Chunks(*chunks), lambda: ValueError("seek back"), **kwargs)


def test_a_read_across_chunks_is_filled_to_the_size_asked():
    """A tar header split between two chunks is read whole, and the position follows."""
    forward = stream(b"ab", b"cd", b"ef")
    assert forward.read(3) == b"abc"
    assert forward.tell() == 3
    assert forward.read(10) == b"def"  # fewer only at the end
    assert forward.read(1) == b""


def test_read1_hands_on_the_chunk_itself():
    """Member data goes to the writer as views of the inflated chunk: nothing copied."""
    chunk = b"x" * 1000
    forward = stream(chunk, b"tail")
    first = forward.read1(600)
    rest = forward.read1()
    assert (first.obj, rest.obj) == (chunk, chunk)
    assert (len(first), len(rest), forward.tell()) == (600, 400, 1000)
    assert bytes(forward.read1(100)) == b"tail"


def test_seek_skips_ahead_and_refuses_to_go_back():
    forward = stream(b"0123", b"4567", b"89")
    assert forward.seek(6) == 6
    assert forward.read(2) == b"67"
    assert forward.seek(1, io.SEEK_CUR) == 9
    with pytest.raises(ValueError, match="seek back"):
        forward.seek(2)
    with pytest.raises(ValueError, match="seek back"):
        forward.seek(0, io.SEEK_END)


def test_the_watcher_sees_every_byte_at_its_offset():
    """How the zip stream compares the index it read by ranges with the download."""
    seen = bytearray()

    def watch(position: int, view: memoryview) -> None:
        assert position == len(seen)
        seen.extend(view)

    forward = stream(b"head", b"er-and-", b"data", watch=watch)
    forward.read(6)
    forward.seek(9)
    forward.skip_to_end()
    assert bytes(seen) == b"header-and-data"


class OneByteChunks:
    """An inflate handing on one byte a read, as a run of one-byte zstd frames makes it."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, size: int = -1, /) -> bytes:
        if not self.left:
            return b""
        self.left -= 1
        return b"a"


def test_a_read_across_many_tiny_chunks_holds_about_what_it_returns():
    """A tar header (up to MAX_HEADER_BYTES) arriving a byte at a time is gathered in one
    buffer: held as a view a byte, a 1 MiB header took a worker's memory up by 450 MiB."""
    size = 256 * 1024
    forward = ForwardStream(OneByteChunks(size), lambda: ValueError("seek back"))
    tracemalloc.start()
    try:
        data = forward.read(size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data == b"a" * size
    assert peak < 4 * size
