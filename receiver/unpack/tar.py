"""Tar, read as a stream straight off the network, entry by entry into a `SafeWriter`.

`decompress.decompressed` inflates it in bounded steps and tarfile only ever sees plain
tar, and only its headers: tarfile parses them (pax, GNU long names and all) from a
`ForwardStream`, which gives it the `tell` and forward-only `seek` of its random-access
mode, and each member's data is read straight off that stream into the writer
(`_MemberData`), as views of the inflated chunks: no byte is copied on the way.
tarfile's stream mode (`r|`) and `extractfile` copied every byte three times more
(docs/benchmarks.md).

tarfile is held to three more rules than it keeps on its own: a header that carries
data (pax, GNU long names) may not claim more than `MAX_HEADER_BYTES`, which tarfile
would read into memory whole; sparse members are refused; and the archive must
end with tar's end-of-archive block, so a tar cut short between two members is not taken
for a complete one.
"""

from __future__ import annotations

import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Self, cast

from receiver.config import Limits
from receiver.errors import ArchiveError, CorruptArchiveError
from receiver.unpack import decompress
from receiver.unpack.base import ByteBudget, Readable
from receiver.unpack.forward import ForwardStream
from receiver.unpack.readahead import DOWNLOAD_DEPTH, READ_BYTES, ReadAhead
from receiver.unpack.writer import SafeWriter

MAX_HEADER_BYTES = 1024 * 1024
# Headers that describe the next one (pax, GNU long name and link) in a row before a
# member: real tools write at most three (global pax, pax, or long name then long link).
# tarfile reads each by recursing into the next, so a long run overflows the stack.
MAX_CHAINED_HEADERS = 8
_HEADER_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


def unpack_tar(stream: Readable, root: Path, limits: Limits, compressed: Callable[[], int]) -> None:
    """Unpack a tar stream (plain, gzip, bzip2, xz or zstd) read front to back."""
    unpacker = SafeWriter(root, limits, compressed)
    # The decompressed stream has a budget of its own: it also counts headers and padding.
    # The download and the inflate are each read ahead on a thread of their own, so one
    # core inflates while the socket, tarfile and the writes use the other (`readahead`);
    # a plain tar has nothing to inflate, and a thread to pass its chunks on only adds a
    # hand-over per chunk and `readahead.DEPTH` chunks of memory.
    with ReadAhead(stream, DOWNLOAD_DEPTH, "unpack-download") as download:
        inflated = decompress.decompressed(download, ByteBudget(limits, compressed))
        if isinstance(inflated, decompress.Plain):
            _read_tar(inflated, unpacker)
        else:
            with ReadAhead(inflated) as plain:
                _read_tar(plain, unpacker)
    unpacker.finish()


def _read_tar(plain: Readable, unpacker: SafeWriter) -> None:
    """Every member of the plain tar stream `plain` into `unpacker`, then the stream's end."""
    stream = ForwardStream(plain, _seek_back)
    try:
        with _TarReader(fileobj=cast(IO[bytes], stream), mode="r") as tar:
            while (member := tar.next()) is not None:
                _unpack_tar_member(stream, member, unpacker)
                # tarfile keeps every header it has read; 100,000 of them cost 100 MB.
                tar.members.clear()  # type: ignore[attr-defined]
            if not tar.ended_properly:
                raise CorruptArchiveError(
                    "the tar archive is truncated: it stops without its end-of-archive block"
                )
    except (tarfile.TarError, EOFError, ValueError) as exc:  # ValueError: a garbled number
        raise CorruptArchiveError(f"corrupt tar archive: {exc}") from exc
    except RecursionError as exc:  # tarfile recurses per chained header: a hostile archive
        raise ArchiveError(f"the tar archive nests headers too deeply to read: {exc}") from exc
    # Read what follows the end-of-archive block (padding), so that a compressed stream
    # is checked to its end marker and checksum.
    stream.skip_to_end()


def _seek_back() -> Exception:
    return tarfile.ReadError("the tar reader tried to seek back in a stream")


class _MemberData:
    """A member's `size` bytes, read off the stream as they come; short means truncated."""

    def __init__(self, stream: ForwardStream, size: int) -> None:
        self._stream = stream
        self._left = size

    def read(self, size: int = -1, /) -> memoryview:
        if not self._left:
            return memoryview(b"")
        chunk = self._stream.read1(min(self._left, READ_BYTES if size < 0 else size))
        if not chunk:
            raise CorruptArchiveError("the tar archive is truncated: it stops inside a member")
        self._left -= len(chunk)
        return chunk


class _CheckedTarInfo(tarfile.TarInfo):
    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        # As TarInfo.fromtarfile, with two checks before tarfile acts on the header.
        assert tarfile_.fileobj is not None
        block = tarfile_.fileobj.read(tarfile.BLOCKSIZE)
        if block == bytes(tarfile.BLOCKSIZE) and isinstance(tarfile_, _TarReader):
            tarfile_.ended_properly = True  # frombuf raises the end-of-archive error
        info = cls.frombuf(block, tarfile_.encoding or "utf-8", tarfile_.errors or "strict")
        if info.type in _HEADER_TYPES and info.size > MAX_HEADER_BYTES:
            raise ArchiveError(
                f"a tar extended header claims {info.size} bytes "
                f"(more than {MAX_HEADER_BYTES}); refusing it"
            )
        if isinstance(tarfile_, _TarReader):
            tarfile_.chained = tarfile_.chained + 1 if info.type in _HEADER_TYPES else 0
            if tarfile_.chained > MAX_CHAINED_HEADERS:
                raise ArchiveError(
                    f"more than {MAX_CHAINED_HEADERS} tar extended headers in a row; "
                    "refusing a hostile archive"
                )
        info.offset = tarfile_.fileobj.tell() - tarfile.BLOCKSIZE
        return cast(Self, info._proc_member(tarfile_))  # type: ignore[attr-defined]

    # Sparse members are refused, and before tarfile reads their maps: a GNU 1.0 map is
    # read from the member's data into lists with no bound (32 MB of map: 945 MB of RSS).
    def _proc_sparse(self, tarfile_: tarfile.TarFile) -> Self:
        raise _sparse(self)

    def _proc_gnusparse_00(self, next: tarfile.TarInfo, *_: object) -> None:
        raise _sparse(next)

    def _proc_gnusparse_01(self, next: tarfile.TarInfo, *_: object) -> None:
        raise _sparse(next)

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, *_: object) -> None:
        raise _sparse(next)


def _sparse(member: tarfile.TarInfo) -> ArchiveError:
    return ArchiveError(f"entry {member.name!r} is a sparse file; a SavedModel has none")


class _TarReader(tarfile.TarFile):
    tarinfo = _CheckedTarInfo
    ended_properly = False  # set on the instance when the end-of-archive block is read
    chained = 0  # extended headers read since the last member


def _unpack_tar_member(
    stream: ForwardStream, member: tarfile.TarInfo, unpacker: SafeWriter
) -> None:
    if member.issparse():
        raise ArchiveError(f"entry {member.name!r} is a sparse file; a SavedModel has none")
    if member.isdir():
        unpacker.directory(member.name)
    elif member.isreg():
        # tarfile has read the header (and any extended ones): the data comes next.
        assert stream.tell() == member.offset_data
        data = _MemberData(stream, member.size)
        unpacker.file(member.name, data, executable=bool(member.mode & stat.S_IXUSR))
    elif member.issym():
        unpacker.symlink(member.name, member.linkname)
    elif member.islnk():
        unpacker.hardlink(member.name, member.linkname)
    else:
        raise ArchiveError(f"entry {member.name!r} is a device, fifo or other special file")
