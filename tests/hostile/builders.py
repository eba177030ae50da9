"""How the hostile archives are built: with tarfile, zipfile and the compressors (and GNU tar
for sparse files); the one structure no tool writes, the overlapping zip of the "better zip
bomb" (https://www.bamsoftware.com/hacks/zipbomb/), is laid out here byte by byte.
"""

from __future__ import annotations

import io
import lzma
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backports import zstd

from tests.helpers import HALF_PLUS_TWO

MIB = 1024 * 1024


@dataclass(frozen=True)
class Hostile:
    name: str
    suffix: str  # the object name's extension: tar.gz, zip, ...
    reason: str  # a regular expression the job's failure reason must match
    build: Callable[[], bytes]
    content_encoding: str | None = None  # stored as, e.g. "gzip" (`gcloud storage cp -Z`)


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size = kind, link, 0o644, len(data)
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def tar(
    *members: tuple, model: bool = True, compress: Callable[[bytes], bytes] | None = None
) -> bytes:
    """A tar of the given members, after the half_plus_two model unless `model` is False."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        if model:
            archive.add(HALF_PLUS_TWO, arcname="m")
        for info, data in members:
            archive.addfile(info, data)
    return (compress or gzip)(buffer.getvalue())


def gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def zip_of(*entries: tuple[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def bomb(compress: Callable[[bytes], bytes], gib: int = 3) -> bytes:
    """A tar whose one member is `gib` GiB of zeros, as concatenated compressed members.

    Every tool reads concatenated members as one stream (gzip, bzip2, xz and zstd all allow
    it), so one compressed block of 64 MiB of zeros, repeated, makes gigabytes in a few MB.
    """
    header, blocks, end = bomb_parts(gib)
    block = compress(bytes(64 * MIB))
    return b"".join([compress(header)] + [block] * blocks + [compress(end)])


def bomb_parts(gib: int) -> tuple[bytes, int, bytes]:
    header = tarfile.TarInfo("m/variables/variables.data-00000-of-00001")
    header.size = gib * 1024 * MIB
    return header.tobuf(format=tarfile.USTAR_FORMAT), header.size // (64 * MIB), bytes(1024)


def gzip_bomb(gib: int = 3) -> bytes:
    """The same as one gzip member, as `tar -cz` of a file of zeros would make it.

    After a full flush deflate starts afresh, so each 64 MiB of zeros compresses to the
    same bytes: compressed once, repeated, and the trailer's CRC computed over the whole.
    """
    header, blocks, end = bomb_parts(gib)
    zeros = bytes(64 * MIB)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    start = packer.compress(header) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    finish = (packer.compress(end) + packer.flush())[:-8]  # without its trailer
    crc = zlib.crc32(header)
    for _ in range(blocks):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(end, crc)
    size = len(header) + blocks * len(zeros) + len(end)
    return start + block * blocks + finish + struct.pack("<2L", crc, size & 0xFFFFFFFF)


def xz(data: bytes) -> bytes:
    return lzma.compress(data, preset=0)


def zstd_(data: bytes) -> bytes:
    return zstd.compress(data)


def zstd_one_byte_frames(data: bytes) -> bytes:
    """`data` as one zstd frame per byte: each a few bytes, each a decompressor to make."""
    return b"".join(zstd.compress(data[i : i + 1]) for i in range(len(data)))


def better_zip_bomb(files: int = 32, kernel_bytes: int = 4 * MIB) -> bytes:
    """Fifield's overlapping zip: every entry's data runs on through the next entries' headers.

    Entry i's deflate stream starts with a stored block that quotes entry i+1's local
    header, so all entries share one compressed kernel at the end.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(kernel_bytes)
    kernel = packer.compress(zeros) + packer.flush()
    names = [f"m/variables/bomb{i:03d}".encode() for i in range(files)]
    headers: list[bytes] = [b""] * files
    quoted = b""  # what entry i inflates to before the kernel: every header after it
    for i in reversed(range(files)):
        crc = zlib.crc32(zeros, zlib.crc32(quoted))
        stored = sum(len(h) + 5 for h in headers[i + 1 :]) + len(kernel)
        fields = (20, 0, 8, 0, 0, crc, stored, len(quoted) + kernel_bytes, len(names[i]), 0)
        headers[i] = struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields) + names[i]
        quoted = headers[i] + quoted
    body = b""
    offsets = []
    for i, header in enumerate(headers):
        offsets.append(len(body))
        body += header
        if i + 1 < files:
            size = len(headers[i + 1])
            body += struct.pack("<BHH", 0, size, size ^ 0xFFFF)
    body += kernel
    central = b""
    for i, header in enumerate(headers):
        crc, stored, unpacked = struct.unpack("<3L", header[14:26])
        entry = (20, 20, 0, 8, 0, 0, crc, stored, unpacked, len(names[i]), 0, 0, 0, 0)
        central += (
            struct.pack("<4s6H3L5H2L", b"PK\x01\x02", *entry, 0o100644 << 16, offsets[i]) + names[i]
        )
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, files, files, len(central), len(body), 0)
    return body + central + end


def sparse_tar(tar_format: str) -> bytes:
    """GNU tar's own sparse member: a 1 GiB file of one hole and a few bytes."""
    with tempfile.TemporaryDirectory() as scratch:
        holey = Path(scratch) / "m" / "variables" / "variables.data-00000-of-00001"
        shutil.copytree(HALF_PLUS_TWO, Path(scratch) / "m")
        holey.unlink()
        with holey.open("wb") as out:
            out.truncate(1024 * MIB)
            out.write(b"weights")
        return subprocess.run(
            ["tar", "-czS", f"--format={tar_format}", "-C", scratch, "m"],
            check=True,
            capture_output=True,
        ).stdout


def chained_long_names(count: int = 400) -> bytes:
    """`count` GNU long-name headers in a row, each naming the next, then one file.

    tarfile reads each one by recursing into the next header: 400 overflow Python's stack."""
    block = b""
    for i in range(count):
        name = f"m/long-{i}".encode() + b"\0"
        info = tar_header(tarfile.GNUTYPE_LONGNAME, len(name))
        padding = -len(name) % tarfile.BLOCKSIZE
        block += info.tobuf(format=tarfile.GNU_FORMAT) + name + bytes(padding)
    last, _ = member("m/saved_model.pb", b"graph")
    data = block + last.tobuf(format=tarfile.GNU_FORMAT) + b"graph".ljust(tarfile.BLOCKSIZE, b"\0")
    return gzip(data + bytes(2 * tarfile.BLOCKSIZE))


def link_chain(length: int) -> bytes:
    """`m/l1 -> saved_model.pb`, `m/l2 -> l1`, …: opening the last follows `length` links."""
    links = [
        member(f"m/l{i}", kind=tarfile.SYMTYPE, link=f"l{i - 1}") for i in range(2, length + 1)
    ]
    return tar(member("m/l1", kind=tarfile.SYMTYPE, link="saved_model.pb"), *links)


def deep_and_wide(depth: int = 500, width: int = 45_000) -> bytes:
    """A chain of `depth` directories with `width` directories at its bottom."""
    bottom = "m/" + "d/" * depth
    return tar(*(member(f"{bottom}{i}", kind=tarfile.DIRTYPE) for i in range(width)))


def zip_index(records: int, claimed: int | None = None, extra: int = 0) -> bytes:
    """One empty entry, and an index of `records` records that all name it.

    zipfile builds a ZipInfo for every record before anything can count them: a million
    records (47 MB) cost it about 450 MB. `claimed` is the count the end record gives
    (zip64 end records when it needs them); `extra` adds an extra field to each record."""
    name = b"x"
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
    field = struct.pack("<HH", 0xCAFE, extra - 4) + bytes(extra - 4) if extra else b""
    fields = (20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), len(field), 0, 0, 0, 0o100644 << 16, 0)
    central = (struct.pack("<4s6H3L5H2L", b"PK\x01\x02", *fields) + name + field) * records
    count = records if claimed is None else claimed
    if count <= 0xFFFF:
        end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), 30 + 1, 0)
        return local + central + end
    at = len(local) + len(central)
    end64 = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), len(local)
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, at, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return local + central + end64 + locator + end


def empty_gzip_members(total: int = 20 * MIB) -> bytes:
    """`total` bytes of empty gzip members, gzip-encoded: a million members of nothing."""
    empty = gzip(b"")
    return gzip(empty * (total // len(empty)))


def tar_header(kind: bytes, size: int) -> tarfile.TarInfo:
    """A header that announces `size` bytes of data that never follow."""
    info = tarfile.TarInfo("././@LongLink")
    info.type = kind
    info.size = size
    return info
