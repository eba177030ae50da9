"""Unpacking, including hostile archives: nothing may land outside the staging dir."""

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from receiver.config import Limits
from receiver.dev.tools import archive_directory
from receiver.errors import ArchiveError, PermanentError
from receiver.servable import find_saved_model
from receiver.unpack import unpack_tar
from tests import hostile
from tests.helpers import HALF_PLUS_TWO, same_files
from tests.unpack.archives import entry, outside, tar_of, unpack, zip_of


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
