"""Decompress a stream in bounded steps, and insist that it ends the way its format says.

Why not tarfile's `r|gz`: it inflates each compressed read in one unbounded call (a 3 MB
gzip of zeros becomes gigabytes in memory before any limit can act) and never checks
that the compressed stream ended. Here every call to a decompressor is capped at the
size asked for, the budget (size and ratio limits) is charged for every chunk, and the
stream must end properly: the decompressor reached its end marker (gzip's CRC and length
checked), and anything after it is another complete member (`cat a.gz b.gz`), never a
truncated one or garbage (gzip also takes zero padding after its last member, as GNU gzip
does).

The format is read from the first bytes, not from the object's name; an object stored
gzip-encoded (`gcloud storage cp -Z`) has that layer removed first (`content_decoded`).
gzip goes through ISA-L's own gzip reader (`isal.igzip`), which inflates straight into the
bytes it returns and walks members in C: on float32 weights 1.4x the speed of ISA-L's
decompressor objects, which grow and copy their output, and 2x zlib's
(docs/benchmarks.md).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Protocol, cast

from backports import zstd
from isal import igzip, isal_zlib

from receiver.config import Limits
from receiver.errors import ArchiveError, CorruptArchiveError
from receiver.unpack.base import CHUNK_SIZE, ByteBudget, Readable
from receiver.unpack.forward import ForwardStream

# Members a bzip2, xz or zstd stream may hold: `FREE_MEMBERS`, and one more for each
# `MEMBER_BYTES` it has unpacked. Each member costs a decompressor made in Python and a
# few reads (~70 us), and an empty or one-byte member is a few bytes of archive, so
# without a bound a 10 MB archive of one-byte zstd frames took over a minute (1 GB:
# hours), and empty ones unpack to nothing, so no byte budget stops them. Real tools
# write one member (zstd, xz) or one per block of about 900 KB (pbzip2). gzip's reader
# walks members in C (a million empty ones: under a second), so gzip has no such rule.
FREE_MEMBERS = 64
MEMBER_BYTES = 64 * 1024
ISAL_ERROR = cast(type[Exception], isal_zlib.error)  # typed as an instance in isal's stubs


class _Decompressor(Protocol):
    """The shape of bz2/lzma/zstd decompressors, which `DecompressedStream` reads."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes | memoryview, max_length: int = -1) -> bytes: ...


_GZIP_MAGIC = b"\x1f\x8b"
# magic bytes -> (format name, decompressor for one member/stream/frame)
_FORMATS: dict[bytes, tuple[str, Callable[[], _Decompressor]]] = {
    b"BZh": ("bzip2", bz2.BZ2Decompressor),
    b"\xfd7zXZ\x00": ("xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
    b"\x28\xb5\x2f\xfd": ("zstd", zstd.ZstdDecompressor),
}
_ERRORS: tuple[type[Exception], ...] = (
    zlib.error,
    ISAL_ERROR,
    OSError,
    EOFError,
    lzma.LZMAError,
    zstd.ZstdError,
)


def decompressed(source: Readable, budget: ByteBudget) -> Readable:
    """The bytes of `source` decompressed if they start like gzip, bzip2, xz or zstd."""
    head = source.read(CHUNK_SIZE)
    if head.startswith(_GZIP_MAGIC):
        return GzipStream(source, head, "gzip", budget)
    for magic, (name, factory) in _FORMATS.items():
        if head.startswith(magic):
            return DecompressedStream(source, head, name, factory, budget)
    return Plain(source, head, budget)


_CONTENT_GZIP = "Content-Encoding: gzip (gcloud storage cp -Z)"  # names it in errors


def is_encoded(encoding: str | None) -> bool:
    """Whether a stored Content-Encoding says the bytes are not the object's own."""
    return encoding is not None and encoding.strip().lower() not in ("", "identity")


def content_decoded(
    source: Readable, encoding: str | None, limits: Limits, stored_bytes: Callable[[], int]
) -> Readable:
    """`source` with its stored Content-Encoding removed: nothing, or one layer of gzip.

    `gcloud storage cp -Z` (and `gsutil cp -z`) store an object gzip-encoded; Cloud
    Storage serves it as stored to a client that accepts gzip, as the receiver does so its
    checksum covers the stored bytes. The layer is inflated as strictly as any other: in
    bounded steps, charged to a budget of its own (size and ratio against the bytes
    stored), and it must end properly."""
    if encoding is None or not is_encoded(encoding):
        return source
    if encoding.strip().lower() != "gzip":
        raise ArchiveError(
            f"the object is stored with Content-Encoding: {encoding}, which the receiver "
            "cannot remove; upload it without one (only gzip, from gcloud storage cp -Z, "
            "is removed)"
        )
    head = source.read(CHUNK_SIZE)
    if not head.startswith(_GZIP_MAGIC):
        raise CorruptArchiveError(
            "the object is stored with Content-Encoding: gzip (gcloud storage cp -Z) "
            "but its bytes are not gzip"
        )
    return GzipStream(source, head, _CONTENT_GZIP, ByteBudget(limits, stored_bytes))


class DecompressedStream:
    """`read(n)` returns at most n decompressed bytes; b"" only at a proper end."""

    def __init__(
        self,
        source: Readable,
        head: bytes,
        name: str,
        factory: Callable[[], _Decompressor],
        budget: ByteBudget,
    ) -> None:
        self._source = ForwardStream(source)  # taken in views: no slice of it copied
        self._input: bytes | memoryview = head  # read, not yet handed to a decompressor
        self.name = name
        self._factory = factory
        self._budget = budget
        self._member = factory()
        self._members = 1
        self._unpacked = 0
        self._done = False

    def read(self, size: int = -1, /) -> bytes:
        size = CHUNK_SIZE if size is None or size < 0 else size
        starved = False  # the last call, given nothing new, gave nothing
        while not self._done and size:
            if self._member.eof and not self._next_member():
                break
            data: bytes | memoryview = b""
            # zstd can fill a read exactly, say it needs no input, then give nothing
            # without more: feed it then, and call the stream truncated only once the
            # source itself has run dry.
            asked = self._member.needs_input or starved
            if asked:
                data = self._input or self._source.read1(CHUNK_SIZE)
                self._input = b""
            try:
                chunk = self._member.decompress(data, size)
            except _ERRORS as exc:
                if self._members > 1:
                    raise CorruptArchiveError(
                        f"bytes after the end of the {self.name} data are not another "
                        f"complete {self.name} member ({exc})"
                    ) from exc
                raise CorruptArchiveError(f"corrupt {self.name} data: {exc}") from exc
            if chunk:
                self._budget.spend(len(chunk))
                self._unpacked += len(chunk)
                return chunk
            if asked and not data and not self._member.eof:
                raise CorruptArchiveError(
                    f"the {self.name} stream is truncated: it stops before its end marker"
                )
            starved = not asked
        return b""

    def _next_member(self) -> bool:
        """After one member ended: start the next one, if any bytes follow."""
        rest: bytes | memoryview = self._member.unused_data + self._input
        self._input = b""
        if not rest:
            rest = self._source.read1(CHUNK_SIZE)
        if not rest:
            self._done = True
            return False
        if self._members >= FREE_MEMBERS + self._unpacked // MEMBER_BYTES:
            raise ArchiveError(
                f"the {self.name} stream holds more than {FREE_MEMBERS} members averaging "
                f"under {MEMBER_BYTES // 1024} KiB unpacked; refusing a hostile stream "
                f"({self.name} tools write one member)"
            )
        self._input = rest
        self._member = self._factory()
        self._members += 1
        return True


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
                    f"{self.name} member ({stray} bytes, too few for a member's header)"
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
        """How many bytes (1-9: too few for a header, so the reader calls them an early
        end) follow a trailer whose length is the bytes inflated (by the reader's own count:
        GzipFile.tell needs a seekable source), modulo 2**32. Cut-off deflate data matches
        one time in four billion; after several members stray bytes still read as truncated."""
        try:
            inflated = int(self._file._buffer.raw.tell())
        except (AttributeError, OSError, ValueError):
            return 0
        for stray in range(1, _MOST_STRAY + 1):
            length = self._input.tail[-stray - 4 : -stray]
            if len(length) == 4 and int.from_bytes(length, "little") == inflated % 2**32:
                return stray
        return 0


_MOST_STRAY = 9  # bytes the reader calls an early end: a member's header is 10


class _ReadInto:
    """`source` (its first bytes already read as `head`) with the `readinto` the reader uses."""

    def __init__(self, source: Readable, head: bytes) -> None:
        self._source = ForwardStream(source)  # taken in views: copied once, into `buffer`
        self._pending = memoryview(head)
        self.tail = b""  # the last bytes handed to the reader (`GzipStream._stray_bytes`)

    def readinto(self, buffer: memoryview) -> int:
        if not self._pending:
            self._pending = self._source.read1(len(buffer))
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        keep = _MOST_STRAY + 4  # and the trailer's length field before them
        self.tail = (self.tail + self._pending[max(0, size - keep) : size])[-keep:]
        self._pending = self._pending[size:]
        return size

    def read(self, size: int = -1, /) -> bytes:  # marks a file to the reader, which uses readinto
        buffer = bytearray(CHUNK_SIZE if size is None or size < 0 else size)
        return bytes(buffer[: self.readinto(memoryview(buffer))])


class Plain:
    """An uncompressed stream, passed through and counted."""

    def __init__(self, source: Readable, head: bytes, budget: ByteBudget) -> None:
        self._source = source
        self._head = head
        self._budget = budget

    def read(self, size: int = -1, /) -> bytes:
        size = CHUNK_SIZE if size is None or size < 0 else size
        if self._head:
            chunk, self._head = self._head[:size], self._head[size:]
        else:
            chunk = self._source.read(size)
        self._budget.spend(len(chunk))
        return chunk
