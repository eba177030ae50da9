"""Zip, streamed: its index read first by ranged reads, then its entries as the object
streams past, front to back, in one GET as a tar is read.

A zip's index (the central directory, then the end records) is at its end. So first,
`read_index` takes the object's last `TAIL_BYTES`, which hold the end records whatever
the length of the comment after them (zip64's records too), and, if the directory starts
before those, the bytes from its start on: `zipindex` sizes the index up and zipfile
reads it from `IndexBytes`, which serves those bytes at their offsets in the object and
nothing else, and `zip.check_entries` checks the entries, all before the download starts.

Then `unpack_zip_stream` reads the download once from its first byte, taking entries in
the order of their data (an index may list them in any order): the bytes before and
between them are skipped, and each local header is checked and its data inflated by
`zip.unpack_member`, as from a file. The stream is read to its end, and the bytes of the
index are compared with the same bytes as they pass, so the object's checksum covers what
the unpack was planned from: a ranged read has no checksum of its own.
"""

from __future__ import annotations

import errno
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from receiver.config import Limits
from receiver.errors import CorruptArchiveError
from receiver.unpack import zipindex
from receiver.unpack.base import Readable
from receiver.unpack.forward import ForwardStream
from receiver.unpack.readahead import DOWNLOAD_DEPTH, ReadAhead
from receiver.unpack.writer import SafeWriter
from receiver.unpack.zip import corrupt_errors, read_entries, unpack_entries

# The end record (22 bytes) and a comment of up to 65,535, with zip64's end record (56)
# and locator (20) before them: zipfile looks no further back from the end than that.
TAIL_BYTES = 22 + 0xFFFF + 56 + 20

ReadRange = Callable[[int, int], bytes]  # the object's bytes [start, end)


class IndexMismatchError(CorruptArchiveError):
    """The index read by ranged reads is not what the download holds at those offsets."""


class IndexBytes:
    """The object's bytes [start, size) as a read-only file, each at its offset in the object.

    What zipfile and `zipindex` read a zip's index from. A read that starts before `start`,
    outside what was fetched, is a `CorruptArchiveError`; a seek before the object's first
    byte an OSError, as a file's is (zipfile relies on that for small files)."""

    def __init__(self, data: bytes, start: int, size: int) -> None:
        self.data = data
        self.start = start
        self.size = size
        self._position = start

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "seek before the start of the object")
        self._position = base + offset
        return self._position

    def read(self, size: int = -1, /) -> bytes:
        if self._position < self.start:
            raise CorruptArchiveError(
                f"the zip's index points to byte {self._position}, before the index"
            )
        at = self._position - self.start
        chunk = self.data[at:] if size is None or size < 0 else self.data[at : at + size]
        self._position += len(chunk)
        return chunk


@dataclass(frozen=True)
class ZipIndex:
    entries: list[zipfile.ZipInfo]  # checked, in the order of their data
    index: IndexBytes  # the bytes they were read from, to be compared with the download


def read_index(tail: bytes, size: int, read_range: ReadRange, limits: Limits) -> ZipIndex:
    """The checked entries of the zip of `size` bytes whose last bytes are `tail`, the
    directory's bytes before the tail (if any) read with `read_range`."""
    start = size - len(tail)
    index = IndexBytes(tail, start, size)
    with corrupt_errors():
        found = zipindex.directory(cast(IO[bytes], index), limits)
    if found is not None and 0 <= found[0] < start:
        head = read_range(found[0], start)
        if len(head) != start - found[0]:
            raise CorruptArchiveError("the zip's index could not be read whole")
        index = IndexBytes(head + tail, found[0], size)
    return ZipIndex(read_entries(cast(IO[bytes], index), limits), index)


def unpack_zip_stream(stream: Readable, index: ZipIndex, root: Path, limits: Limits) -> None:
    """Unpack from `stream`, the object's bytes from its first, the zip `index` describes."""
    size = index.index.size  # the ratio is checked against the whole archive, as when spooled
    unpacker = SafeWriter(root, limits, lambda: size)
    # The download is read ahead on a thread of its own, and each entry is inflated ahead
    # on another (`zip.unpack_member`), as a tar's stream is (`readahead`).
    with ReadAhead(stream, DOWNLOAD_DEPTH, "unpack-download") as download:
        passing = _Passing(download, index.index)
        try:
            with corrupt_errors():
                unpack_entries(passing.stream, index.entries, unpacker)
        except CorruptArchiveError:
            passing.finish()  # a damaged index makes good entries look corrupt: say which
            raise
        passing.finish()
    unpacker.finish()


class _Passing:
    """The download read front to back (`ForwardStream`), the index's bytes compared with
    the same bytes as they pass."""

    def __init__(self, source: Readable, index: IndexBytes) -> None:
        self._index = index
        self._differs = False
        self.stream = ForwardStream(source, _seek_back, self._compare)

    def _compare(self, position: int, view: memoryview) -> None:
        start = self._index.start
        end = position + len(view)
        if end > start:
            skip = max(start - position, 0)
            if view[skip:] != self._index.data[position + skip - start : end - start]:
                self._differs = True

    def finish(self) -> None:
        """Read to the end; raise unless the index read first is what the download holds."""
        self.stream.skip_to_end()
        if self._differs:
            raise IndexMismatchError(
                "the zip's index as read first differs from the same bytes in the download"
            )
        if self.stream.tell() != self._index.size:
            raise CorruptArchiveError(
                f"the zip download ends after {self.stream.tell()} of {self._index.size} bytes"
            )


def _seek_back() -> Exception:
    return CorruptArchiveError("the zip reader tried to seek back in the download")
