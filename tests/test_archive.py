"""Unpacking, including hostile archives: nothing may land outside the staging dir."""

import bz2
import io
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from backports import zstd

from receiver.archive import ArchiveError, unpack_tar, unpack_zip
from receiver.compression import content_decoded, decompressed
from receiver.config import Limits
from receiver.dev.tools import archive_directory
from receiver.errors import PermanentError
from receiver.servable import find_saved_model
from receiver.unpacker import CHUNK_SIZE, ByteBudget
from tests import hostile
from tests.helpers import HALF_PLUS_TWO, PROJECT_ROOT, same_files

LIMITS = Limits(max_unpacked_bytes=1024**3, max_files=1000, max_ratio=200)


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """A staging dir inside `tmp_path/outer`; tests check `outer` for anything escaping."""
    outer = tmp_path / "outer"
    (outer / "staging").mkdir(parents=True)
    return outer / "staging"


def outside(staging: Path) -> list[str]:
    return sorted(p.name for p in staging.parent.iterdir() if p != staging)


def unpack(
    data: bytes,
    staging: Path,
    archive_format: str,
    limits: Limits = LIMITS,
    content_encoding: str | None = None,
) -> None:
    """As the installer unpacks a download: its stored encoding removed, then unpacked."""
    stored = io.BytesIO(data)
    stream = content_decoded(stored, content_encoding, limits, stored.tell)
    if archive_format == "zip":
        path = staging.parent.parent / "upload.zip"
        with path.open("wb") as out:
            shutil.copyfileobj(stream, out)
        unpack_zip(path, staging, limits)
    else:
        unpack_tar(stream, staging, limits, stored.tell)


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


@pytest.mark.parametrize("archive_format", ["tar.gz", "tgz", "tar", "zip"])
def test_every_format_unpacks_the_model_byte_for_byte(staging, archive_format):
    unpack(
        archive_directory(HALF_PLUS_TWO, archive_format, top="00000123"), staging, archive_format
    )
    assert same_files(staging / "00000123")
    assert outside(staging) == []


def test_modes_are_sane(staging):
    info = entry("tool.sh")
    info.mode = 0o4777  # setuid, world-writable
    unpack(tar_of((info, b"#!/bin/sh\n")), staging, "tar.gz")
    assert stat.S_IMODE((staging / "tool.sh").stat().st_mode) == 0o755


def test_links_inside_the_archive_are_kept(staging):
    unpack(
        tar_of(
            (entry("m/saved_model.pb"), b"graph"),
            (entry("m/alias.pb", tarfile.SYMTYPE, "saved_model.pb"), None),
            (entry("m/copy.pb", tarfile.LNKTYPE, "m/saved_model.pb"), None),
        ),
        staging,
        "tar.gz",
    )
    assert (staging / "m" / "alias.pb").read_bytes() == b"graph"
    assert (staging / "m" / "copy.pb").read_bytes() == b"graph"


HOSTILE_TARS: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
    "dot-dot": [(entry("../escaped.txt"), b"x")],
    "nested-dot-dot": [(entry("a/../../escaped.txt"), b"x")],
    "absolute": [(entry("/tmp/escaped.txt"), b"x")],
    "symlink-out": [(entry("link", tarfile.SYMTYPE, "../../escaped.txt"), None)],
    "absolute-symlink": [(entry("link", tarfile.SYMTYPE, "/etc/passwd"), None)],
    "write-through-symlink": [
        (entry("dir", tarfile.SYMTYPE, ".."), None),
        (entry("dir/escaped.txt"), b"x"),
    ],
    "file-over-symlink": [
        (entry("innocent", tarfile.SYMTYPE, "../escaped.txt"), None),
        (entry("innocent"), b"x"),
    ],
    "hardlink-out": [(entry("link", tarfile.LNKTYPE, "../../escaped.txt"), None)],
    "hardlink-to-host-file": [(entry("passwd", tarfile.LNKTYPE, "/etc/passwd"), None)],
    "device": [(entry("null", tarfile.CHRTYPE), None)],
    "block-device": [(entry("disk", tarfile.BLKTYPE), None)],
    "fifo": [(entry("pipe", tarfile.FIFOTYPE), None)],
    "duplicate": [(entry("a"), b"1"), (entry("a"), b"2")],
    "hardlink-named-dot": [(entry("a"), b"1"), (entry("./", tarfile.LNKTYPE, "a"), None)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
def test_hostile_tar_entries_are_refused(staging, case):
    with pytest.raises(ArchiveError):
        unpack(tar_of(*HOSTILE_TARS[case]), staging, "tar.gz")
    assert outside(staging) == []
    assert not Path("/tmp/escaped.txt").exists()


def zip_of(*entries: tuple[str, bytes, int]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "entries",
    [
        [("../escaped.txt", b"x", 0o100644)],
        [("/tmp/escaped.txt", b"x", 0o100644)],
        [("link", b"../../escaped.txt", 0o120777)],
        [("link", b"/etc/passwd", 0o120777)],
        [("pipe", b"", 0o010644)],
    ],
    ids=["dot-dot", "absolute", "symlink-out", "absolute-symlink", "fifo"],
)
def test_hostile_zip_entries_are_refused(staging, entries):
    with pytest.raises(ArchiveError):
        unpack(zip_of(*entries), staging, "zip")
    assert outside(staging) == []


def one_entry_zip(method: int = zipfile.ZIP_DEFLATED) -> tuple[bytes, bytes]:
    """A zip of one file, and that file's bytes (partly compressible, several chunks)."""
    data = os.urandom(512 * 1024) + bytes(2 * 1024 * 1024) + b"end"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        archive.writestr("variables/variables.data-00000-of-00001", data)
    return buffer.getvalue(), data


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_zip_entries_unpack_to_their_exact_bytes(staging, method):
    archive, data = one_entry_zip(method)
    unpack(archive, staging, "zip")
    assert (staging / "variables/variables.data-00000-of-00001").read_bytes() == data


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE])
@pytest.mark.parametrize("compressible", [True, False])
def test_zip_entries_of_any_size_unpack_whole(staging, size, compressible):
    """Around the read size: the inflater may hold output for input it took earlier."""
    data = bytes(size) if compressible else os.urandom(size)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("saved_model.pb", data)
    unpack(buffer.getvalue(), staging, "zip")
    assert (staging / "saved_model.pb").read_bytes() == data


def _central(archive: bytes) -> int:
    return archive.rindex(b"PK\x01\x02")  # the one entry's central directory record


def _patch(archive: bytes, at: int, value: bytes) -> bytes:
    return archive[:at] + value + archive[at + len(value) :]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        # the CRC-32 in the index (central record offset 16)
        (lambda z: _patch(z, _central(z) + 16, b"\0\0\0\0"), "fails its CRC-32 check"),
        # a flipped byte in the middle of the stored data
        (lambda z: _patch(z, 100_000, bytes([z[100_000] ^ 1])), "CRC-32|corrupt"),
        # the uncompressed size in the index (offset 24), one byte more and one less
        (
            lambda z: _patch(z, _central(z) + 24, (2_621_444).to_bytes(4, "little")),
            "shorter than it says",
        ),
        (
            lambda z: _patch(z, _central(z) + 24, (2_621_442).to_bytes(4, "little")),
            "longer than it says",
        ),
        # the local header's name (offset 30) is not the index's
        (lambda z: _patch(z, 30, b"X"), "in the index and in its header differ"),
        # the local header's signature
        (lambda z: _patch(z, 0, b"PK\x05\x06"), "no local header"),
        # the encryption flag, in the local header (offset 6) and in the index (offset 8)
        (lambda z: _patch(z, 6, b"\x01"), "encrypted"),
        (lambda z: _patch(z, _central(z) + 8, b"\x01"), "encrypted"),
    ],
    ids=["crc", "flipped-byte", "size-short", "size-long", "name", "signature", "enc", "enc-idx"],
)
@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_zip_entry_must_be_what_the_index_says(staging, mangle, reason, method):
    archive, _ = one_entry_zip(method)
    with pytest.raises(ArchiveError, match=reason):
        unpack(mangle(archive), staging, "zip")


def test_a_deflated_zip_entry_cut_short_is_truncated(staging):
    archive, _ = one_entry_zip()
    central = _central(archive)
    compressed = int.from_bytes(archive[central + 20 : central + 24], "little")
    # the index claims half the compressed bytes: the deflate stream has no end
    mangled = _patch(archive, central + 20, (compressed // 2).to_bytes(4, "little"))
    with pytest.raises(ArchiveError, match="truncated"):
        unpack(mangled, staging, "zip")


@pytest.mark.parametrize("archive_format", ["tar.gz", "zip"])
def test_decompression_bomb_is_stopped_by_the_ratio_limit(staging, archive_format):
    zeros = b"\0" * (64 * 1024 * 1024)
    data = (
        zip_of(("variables/bomb", zeros, 0o100644))
        if archive_format == "zip"
        else tar_of((entry("variables/bomb"), zeros))
    )
    assert len(data) < 1024 * 1024
    with pytest.raises(ArchiveError, match="RECEIVER_MAX_RATIO"):
        unpack(data, staging, archive_format)


def test_total_size_limit(staging):
    limits = Limits(max_unpacked_bytes=1000, max_files=1000, max_ratio=200)
    with pytest.raises(ArchiveError, match="RECEIVER_MAX_UNPACKED_BYTES"):
        unpack(tar_of((entry("big"), os.urandom(2000))), staging, "tar.gz", limits)


def test_file_count_limit(staging):
    limits = Limits(max_unpacked_bytes=10**9, max_files=10, max_ratio=200)
    members = [(entry(f"f{i}"), b"x") for i in range(11)]
    with pytest.raises(ArchiveError, match="RECEIVER_MAX_FILES"):
        unpack(tar_of(*members), staging, "tar.gz", limits)


@pytest.mark.parametrize("archive_format", ["tar.gz", "zip"])
def test_corrupt_archives_fail_with_a_reason(staging, archive_format):
    good = archive_directory(HALF_PLUS_TWO, archive_format)
    with pytest.raises(ArchiveError, match="corrupt|truncated"):
        unpack(good[: len(good) // 2], staging, archive_format)


def test_not_an_archive_at_all(staging):
    with pytest.raises(ArchiveError, match="corrupt"):
        unpack(b"this is a text file, not a tarball\n" * 100, staging, "tar.gz")


# --- The hostile corpus (tests/hostile.py), unit level; tests/e2e/test_hostile.py runs it
# --- through real gunicorn and measures memory.

DEFAULT_LIMITS = Limits(max_unpacked_bytes=64 * 1024**3, max_files=100_000, max_ratio=200)


@pytest.fixture(scope="session")
def corpus_bytes() -> dict[str, bytes]:
    return {case.name: case.build() for case in hostile.CORPUS}


@pytest.mark.parametrize("case", hostile.CORPUS, ids=lambda case: case.name)
def test_hostile_corpus_is_refused_with_a_precise_reason(staging, corpus_bytes, case):
    archive_format = "zip" if case.suffix == "zip" else "tar"
    with pytest.raises(PermanentError, match=case.reason):
        unpack(
            corpus_bytes[case.name], staging, archive_format, DEFAULT_LIMITS, case.content_encoding
        )
        find_saved_model(staging)
    assert outside(staging) == []


def test_zips_written_by_zipfile_writestr_install(staging):
    """writestr leaves the file-type bits at zero: those entries are regular files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(HALF_PLUS_TWO.rglob("*")):
            if path.is_file():
                archive.writestr(str(path.relative_to(HALF_PLUS_TWO)), path.read_bytes())
    assert all(info.external_attr >> 16 == 0o600 for info in archive.infolist())
    unpack(buffer.getvalue(), staging, "zip")
    assert same_files(staging)


def test_macos_resource_forks_and_finder_files_are_left_out(staging):
    unpack(
        tar_of(
            (entry("m/saved_model.pb"), b"graph"),
            (entry("m/._saved_model.pb"), b"\x00\x05\x16\x07AppleDouble"),
            (entry("__MACOSX/m/._saved_model.pb"), b"\x00\x05\x16\x07"),
            (entry("m/.DS_Store"), b"Bud1"),
        ),
        staging,
        "tar.gz",
    )
    assert sorted(str(p.relative_to(staging)) for p in staging.rglob("*")) == [
        "m",
        "m/saved_model.pb",
    ]


def model_tar() -> bytes:
    return archive_directory(HALF_PLUS_TWO, "tar", top="m")


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
from receiver.archive import unpack_tar
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


# --- Objects stored gzip-encoded (`gcloud storage cp -Z`): one layer removed, strictly


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


@pytest.mark.parametrize(("empty", "refused"), [(16, False), (17, True)])
def test_a_run_of_empty_gzip_members_is_refused_past_sixteen(staging, empty, refused):
    """Each costs a decompressor and unpacks to nothing: a million of them cost minutes."""
    data = hostile.gzip(b"") * empty + hostile.gzip(model_tar())
    if refused:
        with pytest.raises(ArchiveError, match="more than 16 empty gzip members"):
            unpack(data, staging, "tar")
    else:
        unpack(data, staging, "tar")
        assert same_files(staging / "m")


def test_symlink_targets_adding_up_past_their_budget_are_refused(tmp_path):
    """Every target is held until the links are resolved: 2,000 links of 1,000-byte
    targets would hold 2 MB (100,000 of them, within RECEIVER_MAX_FILES, 100 MB)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for number in range(2000):
            info = tarfile.TarInfo(f"m/link{number}")
            info.type, info.linkname = tarfile.SYMTYPE, "./" * 499 + "x"
            tar.addfile(info)
    (tmp_path / "staging").mkdir()
    with pytest.raises(ArchiveError, match="symlink targets add up to more than 1048576 bytes"):
        unpack_tar(io.BytesIO(buffer.getvalue()), tmp_path / "staging", DEFAULT_LIMITS, lambda: 0)
