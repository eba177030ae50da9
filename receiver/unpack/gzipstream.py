"""gzip members, one after another, inflated by ISA-L's own gzip reader (`isal.igzip`).

It inflates straight into the bytes it returns and walks members in C: on float32
weights 1.4x the speed of ISA-L's decompressor objects, which grow and copy their
output, and 2x zlib's (docs/benchmarks.md); a million empty members take under a second.
The reader checks each member's CRC and length; what it reports is mapped here onto the
receiver's errors, in words that say which end of the stream is wrong.
"""

from __future__ import annotations

from typing import cast

from isal import igzip, isal_zlib

from receiver.errors import CorruptArchiveError
from receiver.unpack.base import CHUNK_SIZE, ByteBudget, Readable
from receiver.unpack.forward import ForwardStream

ISAL_ERROR = cast(type[Exception], isal_zlib.error)  # typed as an instance in isal's stubs
GZIP_MAGIC = b"\x1f\x8b"


class GzipStream:
    """gzip members, one after another, inflated by ISA-L's reader; `read(n)` as
    `DecompressedStream`'s. The reader checks each member's CRC and length itself."""

    def __init__(self, source: Readable, head: bytes, name: str, budget: ByteBudget) -> None:
        self.name = name
        self._budget = budget
        self._input = _ReadInto(source, head)
        self._file = igzip.GzipFile(fileobj=self._input, mode="rb")  # type: ignore[no-untyped-call]

    def read(self, size: int = -1, /) -> bytes:
        size = CHUNK_SIZE if size is None or size < 0 else size
        try:
            chunk = self._file.read(size)
        except EOFError as exc:
            if stray := self._stray_bytes():
                raise CorruptArchiveError(
                    f"bytes after the end of the {self.name} data are not another complete "
                    f"{self.name} member (too few bytes for a member's header: {stray})"
                ) from exc
            raise CorruptArchiveError(
                f"the {self.name} stream is truncated: it stops before its end marker"
            ) from exc
        except igzip.BadGzipFile as exc:
            # The first member's magic was checked already, so a bad one is a later one's.
            if str(exc).startswith("Not a gzipped file"):
                raise CorruptArchiveError(
                    f"bytes after the end of the {self.name} data are not another complete "
                    f"{self.name} member ({exc})"
                ) from exc
            raise CorruptArchiveError(f"corrupt {self.name} data: {exc}") from exc
        except OverflowError as exc:
            # The reader parses a member's header within its 512 KiB input buffer: a file
            # name or comment longer than that (no tool writes one) is not an OS fault.
            raise CorruptArchiveError(
                f"corrupt {self.name} data: a member's header (its file name or comment) "
                f"is too long to read ({exc})"
            ) from exc
        except (ISAL_ERROR, OSError) as exc:
            raise CorruptArchiveError(f"corrupt {self.name} data: {exc}") from exc
        self._budget.spend(len(chunk))
        return chunk

    def _stray_bytes(self) -> int:
        """1-9 bytes after a complete member (too few for a header: the reader calls them an
        early end), told from a cut-off stream by the trailer's length field before them:
        the bytes inflated, by the reader's own count (GzipFile.tell needs a seekable
        source). After several members stray bytes still read as truncated."""
        try:
            inflated = int(self._file._buffer.raw.tell())
        except Exception:  # private, so only the wording rests on it
            return 0
        return self._input.stray_bytes(inflated % 2**32)


_MOST_STRAY = 9  # bytes the reader calls an early end: a member's header is 10
_SMALLEST_MEMBER = 20  # a header, an empty deflate block, a trailer


class _ReadInto:
    """`source` (its first bytes already read as `head`) with the `readinto` the reader uses."""

    def __init__(self, source: Readable, head: bytes) -> None:
        self._source = ForwardStream(source)  # taken in views: copied once, into `buffer`
        self._pending = memoryview(head)
        self._tail, self._handed = b"", 0  # the last bytes handed to the reader, and how many

    def readinto(self, buffer: memoryview) -> int:
        if not self._pending:
            self._pending = self._source.read1(len(buffer))
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        keep = _MOST_STRAY + 4  # and the trailer's length field before them
        self._tail = (self._tail + self._pending[max(0, size - keep) : size])[-keep:]
        self._handed += size
        self._pending = self._pending[size:]
        return size

    def stray_bytes(self, length: int) -> int:
        """How many of the last bytes follow a trailer holding `length`; 0 if none does, or
        they could be the start of a member or zero padding (which the reader takes)."""
        for stray in range(1, min(_MOST_STRAY, self._handed - _SMALLEST_MEMBER) + 1):
            trailer, after = self._tail[-stray - 4 : -stray], self._tail[-stray:]
            if int.from_bytes(trailer, "little") == length:
                return 0 if after.startswith(b"\x1f") or not after.strip(b"\0") else stray
        return 0

    def read(self, size: int = -1, /) -> bytes:  # marks a file to the reader, which uses readinto
        buffer = bytearray(CHUNK_SIZE if size is None or size < 0 else size)
        return bytes(buffer[: self.readinto(memoryview(buffer))])
