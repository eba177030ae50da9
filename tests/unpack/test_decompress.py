"""Decompression: read from the bytes, bounded, ended properly; the -Z content encoding."""

import bz2
import io
import lzma
import random
import shutil
import struct
import subprocess
import sys
import tarfile

import pytest
from backports import zstd

from receiver.config import Limits
from receiver.dev.tools import archive_directory
from receiver.errors import ArchiveError, CorruptArchiveError
from receiver.unpack import decompressed
from receiver.unpack.base import ByteBudget
from tests import hostile
from tests.helpers import HALF_PLUS_TWO, PROJECT_ROOT, same_files
from tests.unpack.archives import model_tar, unpack


@pytest.mark.parametrize(
    "compress",
    [
        hostile.gzip,
        bz2.compress,
        lzma.compress,
        zstd.compress,
        lambda data: data,
        # `cat a.gz b.gz`: a gzip of several members is one stream
        lambda data: hostile.gzip(data[:1000]) + hostile.gzip(data[1000:]),
    ],
    ids=["gzip", "bzip2", "xz", "zstd", "plain", "multi-member-gzip"],
)
def test_every_compression_is_read_from_the_bytes_not_the_name(staging, compress):
    unpack(compress(model_tar()), staging, "tar")
    assert same_files(staging / "m")


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd is not installed (make test)")
def test_a_zstd_stream_whose_output_fills_a_read_exactly_is_not_called_truncated(staging):
    """zstd's decompressor can fill a read exactly and only then ask for more input: the
    next read must feed it, not report the stream cut short. The zstd command line (what
    users publish with) makes such a stream of float32 weights; before the fix every
    such .tar.zst was refused as truncated."""
    rng = random.Random(23)
    count = 2**18
    weights = struct.pack(f"<{count}f", *(rng.gauss(0, 0.05) for _ in range(count)))
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as archive:
        info = tarfile.TarInfo("m/variables/variables.data-00000-of-00001")
        info.size = len(weights)
        archive.addfile(info, io.BytesIO(weights))
    made = subprocess.run(
        ["zstd", "-q", "-3", "-c"], input=plain.getvalue(), capture_output=True, check=True
    )
    unpack(made.stdout, staging, "tar")
    assert (staging / info.name).read_bytes() == weights


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda gz: gz[:-200], "truncated"),
        (lambda gz: gz[:-8], "truncated"),  # the trailer alone: CRC and length missing
        (lambda gz: gz[:-8] + b"\0\0\0\0" + gz[-4:], "corrupt gzip data"),  # wrong CRC
        (lambda gz: gz[:-4] + b"\0\0\0\0", "corrupt gzip data"),  # wrong length
        (lambda gz: gz + b"trailing garbage", "not another complete gzip member"),
        (lambda gz: gz + gz[:100], "truncated"),  # a second member cut short
    ],
    ids=["cut-200", "no-trailer", "bad-crc", "bad-length", "garbage-after", "cut-member"],
)
def test_a_gzip_stream_must_end_properly(staging, mangle, reason):
    with pytest.raises(ArchiveError, match=reason):
        unpack(mangle(hostile.gzip(model_tar())), staging, "tar")


def named(gz: bytes, length: int) -> bytes:
    """The same gzip member with a file name (FNAME) of `length` bytes in its header."""
    return gz[:3] + b"\x08" + gz[4:10] + b"n" * length + b"\0" + gz[10:]


@pytest.mark.parametrize("later", [False, True], ids=["first-member", "later-member"])
@pytest.mark.parametrize("encoding", [None, "gzip"], ids=["gzip", "content-encoding"])
def test_a_gzip_header_too_long_to_read_is_corrupt(staging, later, encoding):
    """ISA-L's reader parses a member's header within its 512 KiB buffer; a longer name was
    an OverflowError, which the worker retried as an unexpected error."""
    data = model_tar()
    first, second = (hostile.gzip(data[:1000]), hostile.gzip(data[1000:]))
    gz = first + named(second, 1024 * 1024) if later else named(hostile.gzip(data), 1024 * 1024)
    with pytest.raises(CorruptArchiveError, match="header .*file name or comment.* too long"):
        unpack(gz, staging, "tar", content_encoding=encoding)


def test_a_gzip_member_with_a_long_name_is_read(staging):
    unpack(named(hostile.gzip(model_tar()), 256 * 1024), staging, "tar")
    assert same_files(staging / "m")


def test_a_plain_tar_cut_between_members_is_truncated(staging):
    data = model_tar()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        last = archive.getmembers()[-1]
    end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    with pytest.raises(ArchiveError, match="end-of-archive block"):
        unpack(data[:end], staging, "tar")


def test_decompressed_reads_are_bounded_whatever_the_ratio():
    bomb = hostile.gzip(bytes(256 * 1024 * 1024))
    source = io.BytesIO(bomb)
    budget = ByteBudget(Limits(10**12, 10, 10**9), source.tell)
    stream = decompressed(source, budget)
    sizes = {len(stream.read(65536)) for _ in range(100)}
    assert max(sizes) <= 65536


def test_memory_stays_flat_while_unpacking_a_gigabyte_of_zeros(tmp_path):
    """Run in a fresh process so its peak RSS is the unpacker's alone (VmHWM: ru_maxrss
    would include the forking pytest's)."""
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(hostile.gzip_bomb(gib=1))
    script = f"""
from pathlib import Path
from receiver.unpack import unpack_tar
from receiver.config import Limits
from tests.helpers import peak_rss_mib
source = open({str(bomb)!r}, "rb")
unpack_tar(source, Path({str(tmp_path)!r}) / "out", Limits(10**12, 10, 10**9), source.tell)
print(peak_rss_mib())
"""
    (tmp_path / "out").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 150, f"peak RSS {result.stdout.strip()} MiB"
    assert (
        tmp_path / "out" / "m/variables/variables.data-00000-of-00001"
    ).stat().st_size == 1024**3


@pytest.mark.parametrize("archive_format", ["tar.gz", "tar", "zip"])
def test_a_gzip_encoded_archive_unpacks_as_the_archive(staging, archive_format):
    data = archive_directory(HALF_PLUS_TWO, archive_format, top="m")
    unpack(hostile.gzip(data), staging, archive_format, content_encoding="gzip")
    assert same_files(staging / "m")


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda gz: gz[:-100], "Content-Encoding: gzip .*truncated"),
        (lambda gz: gz[:-8] + b"\0\0\0\0" + gz[-4:], "corrupt Content-Encoding: gzip"),
        (lambda gz: gz[2:], "cp -Z.* not gzip"),
    ],
    ids=["truncated", "bad-crc", "not-gzip"],
)
def test_a_gzip_encoding_must_be_whole_gzip(staging, mangle, reason):
    encoded = hostile.gzip(archive_directory(HALF_PLUS_TWO, "tar.gz", top="m"))
    with pytest.raises(ArchiveError, match=reason):
        unpack(mangle(encoded), staging, "tar", content_encoding="gzip")


def test_no_encoding_and_identity_pass_the_bytes_through(staging):
    data = archive_directory(HALF_PLUS_TWO, "tar.gz", top="m")
    unpack(data, staging, "tar", content_encoding="identity")
    assert same_files(staging / "m")


@pytest.mark.parametrize("one_byte", [False, True], ids=["empty", "one-byte"])
@pytest.mark.parametrize(("frames", "refused"), [(63, False), (64, True)])
def test_a_stream_of_tiny_zstd_frames_is_refused_past_64(staging, one_byte, frames, refused):
    """Each costs a decompressor made in Python, and the byte budget cannot stop a frame
    that unpacks to nothing or one byte: a 10 MB archive of them took over a minute."""
    plain = model_tar()
    if one_byte:  # the tar's first bytes a frame each, then the rest in one
        data = hostile.builders.zstd_one_byte_frames(plain[:frames])
        data += zstd.compress(plain[frames:])
    else:
        data = zstd.compress(b"") * frames + zstd.compress(plain)
    if refused:
        with pytest.raises(ArchiveError, match="more than 64 members averaging under 64 KiB"):
            unpack(data, staging, "tar")
    else:
        unpack(data, staging, "tar")
        assert same_files(staging / "m")


def test_many_frames_of_real_size_are_read(staging):
    """As multi-frame tools write (pzstd, seekable zstd): 200 frames of 64 KiB each."""
    payload = random.randbytes(200 * 64 * 1024)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("m/variables/variables.data-00000-of-00001")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    plain = buffer.getvalue()
    frames = b"".join(
        zstd.compress(plain[at : at + 64 * 1024]) for at in range(0, len(plain), 64 * 1024)
    )
    unpack(frames, staging, "tar")
    assert (staging / "m/variables/variables.data-00000-of-00001").read_bytes() == payload


def test_empty_gzip_members_and_zero_padding_are_read_past_as_gzip_does(staging):
    """ISA-L's reader walks gzip members in C: a run of empty ones costs it next to nothing."""
    data = hostile.gzip(b"") * 100_000 + hostile.gzip(model_tar()) + bytes(1000)
    unpack(data, staging, "tar")
    assert same_files(staging / "m")
