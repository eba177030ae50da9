"""Zips streamed (issue 23): the index read by ranges first, then the object in one stream;
zips of every layout install, and where streaming cannot apply the zip is spooled."""

import io
import logging
import os
import stat
import struct
import subprocess
import zipfile
import zlib

import pytest

from receiver.errors import ArchiveError, CorruptArchiveError, TransientError
from receiver.unpack.readahead import READ_BYTES
from receiver.unpack.zipstream import TAIL_BYTES
from tests.hostile import gzip
from tests.unpack.archives import MemoryStore, fetch_zip, outside, unpack

FILES = {
    "m/saved_model.pb": b"graph" * 1000,
    "m/variables/variables.index": os.urandom(3000),
    "m/variables/variables.data-00000-of-00001": os.urandom(300_000) + bytes(200_000),
}


def zip_bytes(files=FILES, comment=b"", method=zipfile.ZIP_DEFLATED, **open_args) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in files.items():
            with archive.open(name, "w", **open_args) as out:
                out.write(data)
        archive.comment = comment
    return buffer.getvalue()


def installed(staging) -> dict[str, bytes]:
    return {
        str(path.relative_to(staging)): path.read_bytes()
        for path in staging.rglob("*")
        if path.is_file()
    }


def streams(data: bytes, staging) -> MemoryStore:
    """Install `data` and check it was streamed: ranged reads, then one stream, no spool."""
    store = MemoryStore(data)
    fetch_zip(store, staging)
    assert store.streams == 1
    assert store.ranges[0] == (max(len(data) - TAIL_BYTES, 0), len(data))
    assert outside(staging) == []
    return store


def test_a_zip_larger_than_its_tail_streams_after_one_ranged_read(staging):
    data = zip_bytes()
    assert len(data) > TAIL_BYTES
    assert len(streams(data, staging).ranges) == 1
    assert installed(staging) == FILES


@pytest.mark.parametrize(
    "files",
    [FILES, {f"m/assets/a-file-of-the-vocabulary-{i:05d}.txt": b"%d" % i for i in range(900)}],
    ids=["3", "900"],
)
def test_a_directory_before_the_tail_is_read_by_a_second_range(staging, files):
    """A 64 KiB comment pushes the directory out of the tail; so does a large index."""
    data = zip_bytes(files, comment=b"c" * 0xFFFF if len(files) == 3 else b"")
    directory = struct.unpack_from("<L", data, data.rindex(b"PK\x05\x06") + 16)[0]
    assert directory < len(data) - TAIL_BYTES
    store = streams(data, staging)
    assert store.ranges[1] == (directory, len(data) - TAIL_BYTES)
    assert installed(staging) == files


class Unseekable(io.RawIOBase):
    """A pipe's end: zipfile writes data descriptors after each entry's data."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self.buffer.write(data)


def test_entries_with_data_descriptors_install(staging, tmp_path):
    pipe = Unseekable()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in FILES.items():
            archive.writestr(name, data)
    data = pipe.buffer.getvalue()
    assert all(info.flag_bits & 0x8 for info in zipfile.ZipFile(io.BytesIO(data)).infolist())
    streams(data, staging)
    assert installed(staging) == FILES


def test_info_zip_with_forced_data_descriptors_installs(staging, tmp_path):
    source = tmp_path / "source"
    for name, data in FILES.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    subprocess.run(["zip", "-q", "-r", "-fd", str(tmp_path / "m.zip"), "m"], cwd=source, check=True)
    streams((tmp_path / "m.zip").read_bytes(), staging)
    assert installed(staging) == FILES


def reorder_directory(data: bytes) -> bytes:
    """The same zip, its central directory's records in reverse order."""
    end = data.rindex(b"PK\x05\x06")
    size, offset = struct.unpack_from("<2L", data, end + 12)
    records, at = [], offset
    while at < offset + size:
        lengths = struct.unpack_from("<3H", data, at + 28)
        records.append(data[at : at + 46 + sum(lengths)])
        at += len(records[-1])
    return data[:offset] + b"".join(reversed(records)) + data[offset + size :]


def test_entries_listed_out_of_their_order_in_the_file_install(staging):
    data = reorder_directory(zip_bytes())
    listed = [info.filename for info in zipfile.ZipFile(io.BytesIO(data)).infolist()]
    assert listed == list(reversed(FILES))
    streams(data, staging)
    assert installed(staging) == FILES


def test_zip64_entries_and_a_prefix_before_the_zip_install(staging):
    """What a self-extracting archive looks like: zipfile reads past what precedes it."""
    data = b"#!/bin/sh\nexit 0\n" * 100 + zip_bytes(force_zip64=True)
    streams(data, staging)
    assert installed(staging) == FILES


def test_stored_entries_stream_too(staging):
    streams(zip_bytes(method=zipfile.ZIP_STORED), staging)
    assert installed(staging) == FILES


def test_a_stored_entry_across_many_reads_streams_whole(staging):
    """Its data goes to the writer as views of the download's reads, which do not line
    up with the entry's start or end."""
    files = {**FILES, "m/variables/variables.data-00000-of-00001": os.urandom(3 * READ_BYTES + 7)}
    streams(zip_bytes(files, method=zipfile.ZIP_STORED), staging)
    assert installed(staging) == files


def _patch(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    "where",
    [
        lambda data: len(data) - 10,  # in the comment: the index still reads
        lambda data: data.rindex(b"PK\x01\x02") + 16,  # an entry's CRC-32 in the index
        lambda data: len(data) - TAIL_BYTES + 5,  # entry data inside the tail
    ],
    ids=["comment", "index-crc", "data-in-tail"],
)
def test_a_range_that_differs_from_the_stream_is_a_retry(staging, where):
    """The download is the object (its checksum says so); a range that disagrees with it
    was damaged on the way (a range carries no checksum), so the install is tried again."""
    data = zip_bytes(comment=b"a comment")
    store = MemoryStore(data, ranged=flipped(data, where(data)))
    with pytest.raises(TransientError, match="index as read first differs"):
        fetch_zip(store, staging)
    assert store.streams == 1


@pytest.mark.parametrize(
    "where",
    [
        lambda data: data.rindex(b"PK\x03\x04") + 1000,  # inside the last entry's data
        lambda data: len(data) - 10,  # in the comment: every entry unpacks whole
    ],
    ids=["entry-data", "comment"],
)
def test_a_stream_damaged_on_the_way_fails_its_checksum_and_is_a_retry(staging, where):
    """The ranges are whole, the stream is not: whatever the unpack made of it (a CRC-32
    failure, or a mismatch with the index read first), the checksum says retry."""
    data = zip_bytes(comment=b"a comment")
    store = MemoryStore(data, streamed=flipped(data, where(data)))
    with pytest.raises(TransientError, match="crc32c mismatch"):
        fetch_zip(store, staging)
    assert store.streams == 1


def test_a_damaged_end_record_in_the_range_is_read_again_from_the_whole_object(staging, caplog):
    """The end record looks corrupt in the range: only the object's checksum can tell
    whether the zip is, so it is downloaded whole, checked, and then it installs."""
    data = zip_bytes()
    store = MemoryStore(data, ranged=flipped(data, data.rindex(b"PK\x05\x06")))
    with caplog.at_level(logging.INFO, "receiver.fetch"):
        fetch_zip(store, staging)
    assert "downloading the zip whole before unpacking it: its index looks corrupt" in caplog.text
    assert installed(staging) == FILES
    assert outside(staging) == []  # the spool file is gone


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_gzip_encoded_zip_is_spooled(staging, caplog, method):
    """Ranges of an object stored with `cp -Z` are ranges of the gzip stream. A stored
    entry's views are then of the spool file's reads, several of them here."""
    files = {**FILES, "m/variables/variables.data-00000-of-00001": os.urandom(3 * READ_BYTES + 7)}
    store = MemoryStore(gzip(zip_bytes(files, method=method)), content_encoding="gzip")
    with caplog.at_level(logging.INFO, "receiver.fetch"):
        fetch_zip(store, staging)
    assert "it is stored gzip-encoded" in caplog.text
    assert installed(staging) == files
    assert (store.streams, outside(staging)) == (1, [])


def test_a_gzip_encoded_zip_damaged_on_the_way_is_a_retry(staging):
    """Spooled, its gzip layer fails first (a CRC-32): the checksum says retry, as for a tar."""
    encoded = gzip(zip_bytes())
    store = MemoryStore(encoded, "gzip", streamed=flipped(encoded, len(encoded) // 2))
    with pytest.raises(TransientError, match="crc32c mismatch"):
        fetch_zip(store, staging)
    assert outside(staging) == []


def test_an_empty_object_is_not_a_zip(staging):
    with pytest.raises(CorruptArchiveError, match="not a zip file"):
        fetch_zip(MemoryStore(b""), staging)


@pytest.mark.parametrize("spooled", [False, True], ids=["streamed", "spooled"])
def test_a_local_header_running_into_the_next_entry_is_an_overlap(staging, spooled):
    """The index alone cannot see a local header's extra fields: reading the entries can,
    streamed or from a spool file (a gzip-encoded object is spooled)."""
    data = zip_bytes({"m/a": b"a", "m/b": b"b"}, method=zipfile.ZIP_STORED)
    # Entry a's local header claims 40 bytes of extra fields: its byte of data is then one
    # past entry b, and the index gives that byte's CRC-32, so a itself reads as whole.
    mangled = data[:28] + struct.pack("<H", 40) + data[30:]
    crc = zlib.crc32(mangled[30 + 3 + 40 : 30 + 3 + 40 + 1])
    mangled = _patch(mangled, mangled.index(b"PK\x01\x02") + 16, struct.pack("<L", crc))
    store = MemoryStore(gzip(mangled), "gzip") if spooled else MemoryStore(mangled)
    with pytest.raises(ArchiveError, match="'m/a' and 'm/b' overlap"):
        fetch_zip(store, staging)
    assert outside(staging) == []


def test_a_stream_cut_short_is_corrupt(staging):
    """The stream stops inside an entry (the ranges saw the whole object): corrupt, and the
    size check of the download (`verify`) then makes it a retry."""
    data = zip_bytes()
    with pytest.raises(TransientError, match="truncated download"):
        fetch_zip(MemoryStore(data, streamed=data[:1000]), staging)


def _padded_zip(pad: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("m/pad.bin", b"x" * pad)
        archive.writestr("m/dir/target_file_long_name", b"hello")
        link = zipfile.ZipInfo("m/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, b"dir/target_file_long_name")
    return buffer.getvalue()


@pytest.mark.parametrize("pad", range(READ_BYTES - 220, READ_BYTES - 100, 4))
def test_headers_and_link_targets_across_the_downloads_read_boundaries_are_read_whole(staging, pad):
    """The download's reads end where its 2 MiB chunks do, wherever a header or a link's
    target lies: each is read whole (before, one layout in three failed or cut a link)."""
    unpack(_padded_zip(pad), staging, "zip")
    assert os.readlink(staging / "m" / "link") == "dir/target_file_long_name"
    assert (staging / "m" / "dir" / "target_file_long_name").read_bytes() == b"hello"
