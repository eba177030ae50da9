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
gzip goes through ISA-L's own gzip reader (`gzipstream`).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Protocol

from backports import zstd

from receiver.config import Limits
from receiver.errors import ArchiveError, CorruptArchiveError
from receiver.unpack.base import CHUNK_SIZE, ByteBudget, Readable
from receiver.unpack.forward import ForwardStream
from receiver.unpack.gzipstream import GZIP_MAGIC, ISAL_ERROR, GzipStream

# Members a bzip2, xz or zstd stream may hold: `FREE_MEMBERS`, and one more for each
# `MEMBER_BYTES` it has unpacked. Each member costs a decompressor made in Python and a
# few reads (~70 us), and an empty or one-byte member is a few bytes of archive, so
# without a bound a 10 MB archive of one-byte zstd frames took over a minute (1 GB:
# hours), and empty ones unpack to nothing, so no byte budget stops them. Real tools
# write one member (zstd, xz) or one per block of about 900 KB (pbzip2). gzip's reader
# walks members in C (a million empty ones: under a second), so gzip has no such rule.
FREE_MEMBERS = 64
MEMBER_BYTES = 64 * 1024


class _Decompressor(Protocol):
    """The shape of bz2/lzma/zstd decompressors, which `DecompressedStream` reads."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes | memoryview, max_length: int = -1) -> bytes: ...


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
    if head.startswith(GZIP_MAGIC):
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
    if not head.startswith(GZIP_MAGIC):
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
