"""Unpacking, including hostile archives: nothing may land outside the staging dir."""

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from receiver.archive import ArchiveError, unpack_tar, unpack_zip
from receiver.config import Limits
from receiver.devtools import archive_directory
from tests.helpers import HALF_PLUS_TWO, same_files

LIMITS = Limits(max_unpacked_bytes=1024**3, max_files=1000, max_ratio=200)


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """A staging dir inside `tmp_path/outer`; tests check `outer` for anything escaping."""
    outer = tmp_path / "outer"
    (outer / "staging").mkdir(parents=True)
    return outer / "staging"


def outside(staging: Path) -> list[str]:
    return sorted(p.name for p in staging.parent.iterdir() if p != staging)


def unpack(data: bytes, staging: Path, archive_format: str, limits: Limits = LIMITS) -> None:
    if archive_format == "zip":
        path = staging.parent.parent / "upload.zip"
        path.write_bytes(data)
        unpack_zip(path, staging, limits)
    else:
        stream = io.BytesIO(data)
        unpack_tar(stream, staging, limits, stream.tell)


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
