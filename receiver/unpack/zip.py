"""Zip entries into a `SafeWriter`: its index read and checked, then each entry's data.

`read_entries` sizes the index up first with `zipindex` (zipfile would hold all of it, a
`ZipInfo` per record), then zipfile reads it; its entries are checked before any data is
read (`check_entries`): no overlap (the "better zip bomb" reuses one compressed kernel for
every entry), only store and deflate, no encryption or patched data, no special files,
no NUL in a name (zipfile cuts a name there). Each entry's data is then read by `_Stored`
or `_Deflated`, which inflates with ISA-L in bounded steps (zipfile would use zlib, half
the speed), both checking what zipfile checks: the local header's signature and name, no
encryption, the CRC-32 and the size.

Entries are read in the order their data comes, from anything with `read`, `read1`,
`tell` and a `seek` that may only go forward: a file (`unpack_zip`, for a zip spooled to
disk) or the download itself (`zipstream`). Both paths refuse an entry whose local header
runs into the next entry (`unpack_entries`).
"""

from __future__ import annotations

import contextlib
import errno
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

from isal import isal_zlib

from receiver.config import Limits
from receiver.errors import ArchiveError, CorruptArchiveError
from receiver.unpack import zipindex
from receiver.unpack.base import CHUNK_SIZE, MAX_SYMLINK_TARGET
from receiver.unpack.gzipstream import ISAL_ERROR
from receiver.unpack.readahead import ReadAhead
from receiver.unpack.writer import SafeWriter

_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}


def unpack_zip(path: Path, root: Path, limits: Limits) -> None:
    """Unpack a zip file that is already on local disk."""
    compressed_size = path.stat().st_size
    unpacker = SafeWriter(root, limits, lambda: compressed_size)
    with path.open("rb") as raw, corrupt_errors():
        unpack_entries(raw, read_entries(raw, limits), unpacker)
    unpacker.finish()


class Seekable(Protocol):
    """A file, or the download read front to back (`ForwardStream`)."""

    def read(self, size: int = -1, /) -> bytes: ...
    def read1(self, size: int = -1, /) -> bytes | memoryview: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
    def tell(self) -> int: ...


@contextlib.contextmanager
def corrupt_errors() -> Iterator[None]:
    """What zipfile and the inflaters raise for bytes that are not a whole zip, as ours."""
    try:
        yield
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        ValueError,
        zlib.error,
        ISAL_ERROR,
    ) as exc:
        raise CorruptArchiveError(f"corrupt zip archive: {exc}") from exc
    except NotImplementedError as exc:  # zipfile: a record needs a zip version above 6.3
        raise CorruptArchiveError(
            f"corrupt zip archive: an entry in its index says it needs {exc} to extract, "
            "later than any zip specification (6.3)"
        ) from exc
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # an offset before the start of the file
            raise
        raise CorruptArchiveError(f"corrupt zip archive: {exc}") from exc


def read_entries(raw: IO[bytes], limits: Limits) -> list[zipfile.ZipInfo]:
    """The entries of the zip `raw` in the order of their data, its index within `limits`
    and every entry passing `check_entries`."""
    with corrupt_errors():
        zipindex.check_index(raw, limits)  # before zipfile holds the whole index
        with zipfile.ZipFile(raw) as archive:
            entries = sorted(archive.infolist(), key=lambda info: info.header_offset)
    check_entries(entries)
    return entries


def check_entries(entries: list[zipfile.ZipInfo]) -> None:
    """Refuse what the index alone shows to be hostile, before any entry's data is read.

    `entries` are in the order of their data. Each entry's local header and data must end
    before the next entry's header starts (where the data starts is known only from the
    local header: `unpack_member` and the stream check that part)."""
    for info, following in zip(entries, entries[1:], strict=False):
        if _data_start(info) + info.compress_size > following.header_offset:
            raise overlap(info, following)
    for info in entries:
        if "\0" in info.orig_filename:  # zipfile cuts the name there: not the index's name
            raise ArchiveError(f"entry name {info.orig_filename!r} contains a control character")
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if info.is_dir() or file_type == stat.S_IFDIR:
            continue
        if info.compress_type not in _ZIP_METHODS:
            raise ArchiveError(
                f"zip entry {info.filename!r} uses compression method {info.compress_type}; "
                "only store and deflate (what zip tools use by default) are accepted"
            )
        if info.flag_bits & _ENCRYPTED:
            raise ArchiveError(f"zip entry {info.filename!r} is encrypted")
        if info.flag_bits & _PATCHED:
            raise ArchiveError(f"zip entry {info.filename!r} holds patched data")
        if file_type not in (0, stat.S_IFREG, stat.S_IFLNK):
            raise ArchiveError(f"entry {info.filename!r} is a device, fifo or other special file")


def overlap(info: zipfile.ZipInfo, following: zipfile.ZipInfo) -> ArchiveError:
    return ArchiveError(
        f"zip entries {info.filename!r} and {following.filename!r} overlap; "
        "refusing a likely zip bomb"
    )


def unpack_entries(raw: Seekable, entries: list[zipfile.ZipInfo], unpacker: SafeWriter) -> None:
    """Every entry of `entries` (checked by `check_entries`, in the order of their data)
    into `unpacker`, read from `raw`."""
    for number, info in enumerate(entries):
        if number and raw.tell() > info.header_offset:
            # The previous entry's local header (its extra fields) ran into this one.
            raise overlap(entries[number - 1], info)
        raw.seek(info.header_offset)
        unpack_member(raw, info, unpacker)


def unpack_member(raw: Seekable, info: zipfile.ZipInfo, unpacker: SafeWriter) -> None:
    """One entry (checked by `check_entries`) into `unpacker`, its data read from `raw`."""
    # Only Unix-made zips carry a file type; zipfile.writestr leaves the type bits at zero,
    # and other systems store DOS attributes there. No type bits means a regular file.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    executable = bool((info.external_attr >> 16) & stat.S_IXUSR)
    if info.is_dir() or file_type == stat.S_IFDIR:
        unpacker.directory(info.filename)
    elif file_type == stat.S_IFLNK:
        source = _member(raw, info)
        # Read to its end, which checks its CRC-32 and size: one read may come back short.
        target = b""
        while len(target) <= MAX_SYMLINK_TARGET and (chunk := source.read(MAX_SYMLINK_TARGET)):
            target += chunk
        if len(target) > MAX_SYMLINK_TARGET:
            # Not read to its end, so unchecked.
            raise ArchiveError(
                f"symlink {info.filename!r} has a target of more than {MAX_SYMLINK_TARGET} bytes"
            )
        unpacker.symlink(info.filename, target.decode("utf-8", "surrogateescape"))
    elif info.compress_type == zipfile.ZIP_STORED:
        # Nothing to inflate: as a plain tar's, its data goes to the writer in views of
        # the stream's chunks, with no thread to hand them on.
        unpacker.file(info.filename, _Stored(raw, info), executable=executable)
    else:
        # Inflated ahead on a thread while the writer copies (as tar's stream, `readahead`).
        with ReadAhead(_Deflated(raw, info)) as member:
            unpacker.file(info.filename, member, executable=executable)


# Local file header: signature, version, flags, method, time, date, CRC-32, sizes, lengths.
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_ENCRYPTED = 0x1 | 0x40  # traditional and strong encryption
_PATCHED = 0x20


def _member(raw: Seekable, info: zipfile.ZipInfo) -> _Stored | _Deflated:
    return (_Deflated if info.compress_type == zipfile.ZIP_DEFLATED else _Stored)(raw, info)


class _ZipData:
    """One zip entry's data, `read(n)` never returning more than n, checked as zipfile
    checks it: the local header's signature and name, no encryption, the CRC-32, the size.

    Sizes and CRC come from the central directory (zipfile's `ZipInfo`, zip64 resolved),
    as zipfile itself uses them; the local header only locates the data.
    """

    def __init__(self, raw: Seekable, info: zipfile.ZipInfo) -> None:
        raw.seek(info.header_offset)
        header = raw.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise CorruptArchiveError(f"zip entry {info.filename!r} has no local header")
        fields = _LOCAL_HEADER.unpack(header)
        flags, name_length, extra_length = fields[2], fields[9], fields[10]
        if flags & _ENCRYPTED or info.flag_bits & _ENCRYPTED:
            raise ArchiveError(f"zip entry {info.filename!r} is encrypted")
        if flags & _PATCHED:
            raise ArchiveError(f"zip entry {info.filename!r} holds patched data")
        if raw.read(name_length) != _name_bytes(info):
            raise CorruptArchiveError(
                f"zip entry {info.filename!r}: its name in the index and in its header differ"
            )
        raw.seek(extra_length, 1)
        self._raw = raw
        self._info = info
        self._left = info.compress_size  # bytes of its data in the archive, not yet read
        self._crc = 0
        self._out = 0

    def _checked(self, size: int, data: bytes | memoryview) -> None:
        if size < 0:
            raise ValueError("a zip member is read in bounded steps")
        self._crc = isal_zlib.crc32(data, self._crc)
        self._out += len(data)
        if not data and size:
            self._check_end()
        elif self._out > self._info.file_size:
            raise CorruptArchiveError(f"zip entry {self._info.filename!r} is longer than it says")

    def _take(self, size: int) -> memoryview:
        data = self._raw.read1(min(size, self._left))
        self._left -= len(data)
        return memoryview(data)

    def _check_end(self) -> None:
        name = self._info.filename
        if self._out != self._info.file_size:
            raise CorruptArchiveError(f"zip entry {name!r} is shorter than it says")
        if self._crc != self._info.CRC:
            raise CorruptArchiveError(f"zip entry {name!r} fails its CRC-32 check")


class _Stored(_ZipData):
    """A stored entry's data: views of the stream's chunks, copied by no one."""

    def read(self, size: int = -1, /) -> memoryview:
        data = self._take(size) if size > 0 else memoryview(b"")
        self._checked(size, data)
        return data


class _Deflated(_ZipData):
    """A deflated entry's data, inflated with ISA-L in bounded steps."""

    def __init__(self, raw: Seekable, info: zipfile.ZipInfo) -> None:
        super().__init__(raw, info)
        self._inflate = isal_zlib.decompressobj(-zlib.MAX_WBITS)

    def read(self, size: int = -1, /) -> bytes:
        data = self._next(size) if size > 0 else b""  # to zlib a max_length of 0: no limit
        self._checked(size, data)
        return data

    def _next(self, size: int) -> bytes:
        while not self._inflate.eof:
            data = self._inflate.unconsumed_tail or self._take(CHUNK_SIZE)
            # Called with no input too: ISA-L may hold output from input it has taken.
            out = bytes(self._inflate.decompress(data, size))
            if out or not data:
                return out
        return b""

    def _check_end(self) -> None:
        if not self._inflate.eof:
            raise CorruptArchiveError(f"zip entry {self._info.filename!r} is truncated")
        super()._check_end()


def _name_bytes(info: zipfile.ZipInfo) -> bytes:
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


def _data_start(info: zipfile.ZipInfo) -> int:
    """Where the entry's data starts, if its local header has no extra fields."""
    return info.header_offset + _LOCAL_HEADER.size + len(_name_bytes(info))
