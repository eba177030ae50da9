"""Zip: each entry exactly what the index says, and hostile zips refused."""

import io
import os
import zipfile

import pytest

from receiver.errors import ArchiveError
from receiver.unpack.base import CHUNK_SIZE
from tests import hostile
from tests.helpers import HALF_PLUS_TWO, same_files
from tests.unpack.archives import outside, unpack, zip_of


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
@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_zip_entries_of_any_size_unpack_whole(staging, size, compressible, method):
    """Around the read size: the inflater may hold output for input it took earlier, and
    a stored entry's views end where the stream's chunks do."""
    data = bytes(size) if compressible else os.urandom(size)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
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
        # the version needed to extract, in the index (offset 6): zipfile refuses over 6.3
        (lambda z: _patch(z, _central(z) + 6, (64).to_bytes(2, "little")), "version 6.4"),
    ],
    ids=[
        "crc",
        "flipped-byte",
        "size-short",
        "size-long",
        "name",
        "signature",
        "enc",
        "enc-idx",
        "version",
    ],
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


def test_two_index_records_of_one_local_header_overlap(staging):
    """Read at random, the second was a duplicate name; streamed, it would lie behind."""
    with pytest.raises(ArchiveError, match="overlap"):
        unpack(hostile.zip_index(2), staging, "zip")


def test_a_zip_entry_name_with_a_nul_is_refused(staging):
    """zipfile cuts a name at a NUL: m/saved_model.pb<NUL>.txt would have been installed
    as m/saved_model.pb, a name the index does not hold."""
    archive = zip_of(("m/saved_model.pbX.txt", b"x", 0o100644)).replace(b"pbX.txt", b"pb\0.txt")
    with pytest.raises(ArchiveError, match="control character"):
        unpack(archive, staging, "zip")
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_zip_links_target_over_the_bound_in_bytes_is_refused(staging, method):
    """A target of 1024 two-byte characters passes a bound counted in characters: it was
    taken cut off after 2048 of its 5000 bytes, its CRC-32 and size never checked."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        link = zipfile.ZipInfo("m/link")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, ("é" * 2500).encode(), compress_type=method)
        archive.writestr("m/saved_model.pb", b"graph")
    with pytest.raises(ArchiveError, match="target"):
        unpack(buffer.getvalue(), staging, "zip")
    assert outside(staging) == []
