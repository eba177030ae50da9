"""Read tar and zip archives entry by entry into an `Unpacker`, within limits.

Tar is read as a stream, straight off the network: `compression.decompressed` inflates it
in bounded steps and tarfile only ever sees plain tar (`r|`). tarfile itself is held to
three more rules than it keeps on its own: a header that carries data (pax, GNU long
names) may not claim more than `MAX_HEADER_BYTES`, which tarfile would read into memory
whole; sparse members are refused; and the archive must end with tar's end-of-archive
block, so a tar cut short between two members is not taken for a complete one.

Zip keeps its index at the end, so it is read from a local file. Its entries are checked
for overlap (the "better zip bomb" reuses one compressed kernel for every entry), and only
the methods that zipfile inflates in bounded steps (store, deflate) are accepted.
"""

from __future__ import annotations

import errno
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Self, cast

from receiver import compression
from receiver.config import Limits
from receiver.unpacker import (
    MAX_SYMLINK_TARGET,
    ArchiveError,
    ByteBudget,
    CorruptArchiveError,
    Readable,
    Unpacker,
)

__all__ = ["ArchiveError", "CorruptArchiveError", "Unpacker", "unpack_tar", "unpack_zip"]

CHUNK_SIZE = 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
_HEADER_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}


def unpack_tar(stream: Readable, root: Path, limits: Limits, compressed: Callable[[], int]) -> None:
    """Unpack a tar stream (plain, gzip, bzip2, xz or zstd) read front to back."""
    unpacker = Unpacker(root, limits, compressed)
    # The decompressed stream has a budget of its own: it also counts headers and padding.
    plain = compression.decompressed(stream, ByteBudget(limits, compressed))
    try:
        with _TarReader.open(fileobj=cast(IO[bytes], plain), mode="r|", bufsize=CHUNK_SIZE) as tar:
            while (member := tar.next()) is not None:
                _unpack_tar_member(tar, member, unpacker)
                # Stream mode keeps every header it has read; 100,000 of them cost 100 MB.
                tar.members.clear()  # type: ignore[attr-defined]
            if not tar.ended_properly:
                raise CorruptArchiveError(
                    "the tar archive is truncated: it stops without its end-of-archive block"
                )
    except (tarfile.TarError, EOFError) as exc:
        raise CorruptArchiveError(f"corrupt tar archive: {exc}") from exc
    # Read what follows the end-of-archive block (padding), so that a compressed stream
    # is checked to its end marker and checksum.
    while plain.read(CHUNK_SIZE):
        pass
    unpacker.finish()


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
        info.offset = tarfile_.fileobj.tell() - tarfile.BLOCKSIZE
        return cast(Self, info._proc_member(tarfile_))  # type: ignore[attr-defined]


class _TarReader(tarfile.TarFile):
    tarinfo = _CheckedTarInfo
    ended_properly = False  # set on the instance when the end-of-archive block is read


def _unpack_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, unpacker: Unpacker) -> None:
    if member.issparse():
        raise ArchiveError(f"entry {member.name!r} is a sparse file; a SavedModel has none")
    if member.isdir():
        unpacker.directory(member.name)
    elif member.isreg():
        source = tar.extractfile(member)
        assert source is not None  # a regular member always has data
        unpacker.file(member.name, source, executable=bool(member.mode & stat.S_IXUSR))
    elif member.issym():
        unpacker.symlink(member.name, member.linkname)
    elif member.islnk():
        unpacker.hardlink(member.name, member.linkname)
    else:
        raise ArchiveError(f"entry {member.name!r} is a device, fifo or other special file")


def unpack_zip(path: Path, root: Path, limits: Limits) -> None:
    """Unpack a zip file that is already on local disk."""
    compressed_size = path.stat().st_size
    unpacker = Unpacker(root, limits, lambda: compressed_size)
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > limits.max_files:
                raise ArchiveError(
                    f"archive has more than {limits.max_files} entries (RECEIVER_MAX_FILES)"
                )
            _check_no_overlap(entries)
            for info in entries:
                _unpack_zip_member(archive, info, unpacker)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, zlib.error) as exc:
        raise CorruptArchiveError(f"corrupt zip archive: {exc}") from exc
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # an offset before the start of the file
            raise
        raise CorruptArchiveError(f"corrupt zip archive: {exc}") from exc
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, unknown compression
        raise ArchiveError(f"unsupported zip archive: {exc}") from exc
    unpacker.finish()


def _check_no_overlap(entries: list[zipfile.ZipInfo]) -> None:
    """Each entry's data must end before the next entry's header starts."""
    ordered = sorted(entries, key=lambda info: info.header_offset)
    for info, following in zip(ordered, ordered[1:], strict=False):
        if info.header_offset + info.compress_size > following.header_offset:
            raise ArchiveError(
                f"zip entries {info.filename!r} and {following.filename!r} overlap; "
                "refusing a likely zip bomb"
            )


def _unpack_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, unpacker: Unpacker) -> None:
    # Only Unix-made zips carry a file type; zipfile.writestr leaves the type bits at zero,
    # and other systems store DOS attributes there. No type bits means a regular file.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    executable = bool((info.external_attr >> 16) & stat.S_IXUSR)
    if info.is_dir() or file_type == stat.S_IFDIR:
        unpacker.directory(info.filename)
        return
    if info.compress_type not in _ZIP_METHODS:
        raise ArchiveError(
            f"zip entry {info.filename!r} uses compression method {info.compress_type}; "
            "only store and deflate (what zip tools use by default) are accepted"
        )
    if file_type == stat.S_IFLNK:
        with archive.open(info) as source:
            target = source.read(MAX_SYMLINK_TARGET + 1).decode("utf-8", "replace")
        unpacker.symlink(info.filename, target)
    elif file_type in (0, stat.S_IFREG):
        with archive.open(info) as source:
            unpacker.file(info.filename, source, executable=executable)
    else:
        raise ArchiveError(f"entry {info.filename!r} is a device, fifo or other special file")
