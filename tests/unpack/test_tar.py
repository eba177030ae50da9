"""receiver/unpack/tar.py: tarfile reads the headers, the data is read off the stream."""

import io
import os
import tarfile

import pytest

from receiver.errors import ArchiveError
from receiver.unpack import unpack_tar
from tests.unpack.archives import LIMITS, unpack


def _sparse_pax(map_text: bytes) -> bytes:
    """A GNU sparse 1.0 member (pax): its map is the first bytes of its data."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("m/a")
        info.pax_headers = {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": "m/a",
            "GNU.sparse.realsize": "10",
        }
        archive.addfile(info)
    return buffer.getvalue()[: 3 * tarfile.BLOCKSIZE] + map_text + bytes(2 * tarfile.BLOCKSIZE)


@pytest.mark.parametrize(
    "map_text",
    [b"5\n1\n", b"1\n" + b"9" * 5000 + b"\n", b"100000\n" + b"0\n" * 200_000],
    ids=["cut-short", "huge-number", "long-map"],
)
def test_a_sparse_member_is_refused_before_its_map_is_read(staging, map_text):
    """tarfile reads a GNU 1.0 map into lists with no bound (32 MB of map took 945 MB),
    and a garbled one raised ValueError, which was retried as unexpected."""
    with pytest.raises(ArchiveError, match="sparse"):
        unpack(_sparse_pax(map_text), staging, "tar")


class _OddReads:
    """A stream whose reads end every 1,003 bytes, wherever headers fall."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        return self._data.read(min(size if size > 0 else 1 << 20, 1003))


def test_headers_split_across_reads_are_read_whole(staging):
    buffer = io.BytesIO()
    files = {f"m/f{number}": os.urandom(3001) for number in range(50)}
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    unpack_tar(_OddReads(data), staging, LIMITS, lambda: len(data))
    assert {f"m/{path.name}": path.read_bytes() for path in (staging / "m").iterdir()} == files


def test_a_tar_links_target_over_the_bound_in_bytes_is_refused(staging):
    """A pax header holds a target in UTF-8: 600 characters of four bytes each are 2,400
    bytes, over the 1,024-byte bound a count of characters would let pass."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        link = tarfile.TarInfo("m/link")
        link.type, link.linkname = tarfile.SYMTYPE, "\U0001f600" * 600
        archive.addfile(link)
    with pytest.raises(ArchiveError, match="target of more than 1024 bytes"):
        unpack(buffer.getvalue(), staging, "tar")
    assert not (staging / "m" / "link").is_symlink()
