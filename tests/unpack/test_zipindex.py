"""A zip's index is sized up before zipfile reads it (issue 20): counts and bytes over the
limits are refused while the worker's memory stays where it was."""

import io
import subprocess
import sys
import zipfile

import pytest

from receiver.config import Limits
from receiver.errors import ArchiveError
from receiver.unpack.zipindex import INDEX_BYTES_PER_FILE, check_index
from tests import hostile
from tests.helpers import PROJECT_ROOT


def limits(max_files: int) -> Limits:
    return Limits(max_unpacked_bytes=10**12, max_files=max_files, max_ratio=200)


def test_a_million_entry_zip_is_refused_before_zipfile_holds_its_index(tmp_path):
    """In a fresh process, so its peak RSS (VmHWM) is this unpack's alone."""
    bomb = tmp_path / "index.zip"
    bomb.write_bytes(hostile.zip_index(1_000_000))
    (tmp_path / "out").mkdir()
    script = f"""
from pathlib import Path
from receiver.errors import ArchiveError
from receiver.unpack import unpack_zip
from receiver.config import Limits
from tests.helpers import peak_rss_mib
try:
    unpack_zip(Path({str(bomb)!r}), Path({str(tmp_path)!r}) / "out", Limits(10**12, 100_000, 200))
except ArchiveError as exc:
    print(peak_rss_mib(), exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    assert result.returncode == 0, result.stderr
    peak, _, reason = result.stdout.strip().partition(" ")
    assert "RECEIVER_MAX_FILES" in reason
    assert int(peak) < 100, f"peak RSS {peak} MiB"  # zipfile's index alone is ~450 MiB


def zip64_of(entries: int) -> io.BytesIO:
    """A zip of more entries than the plain end record counts: zipfile writes zip64 ends."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(entries):
            archive.writestr(f"a/{i}", b"")
    return buffer


def test_zip64_end_records_are_read_for_the_count():
    buffer = zip64_of(0x10000 + 10)
    check_index(buffer, limits(0x10000 + 10))  # at the limit: zipfile may read it
    with pytest.raises(ArchiveError, match="more than 65545 entries"):
        check_index(buffer, limits(0x10000 + 9))


def test_records_are_counted_whatever_the_end_record_claims():
    buffer = io.BytesIO(hostile.zip_index(1001, claimed=1))
    check_index(buffer, limits(1001))
    with pytest.raises(ArchiveError, match="more than 1000 entries"):
        check_index(buffer, limits(1000))


def test_an_index_over_its_byte_allowance_is_refused():
    records = 10
    each = 47 + 1000  # a record with a 1000-byte extra field
    buffer = io.BytesIO(hostile.zip_index(records, extra=1000))
    check_index(buffer, limits(-(-records * each // INDEX_BYTES_PER_FILE)))
    with pytest.raises(ArchiveError, match="central directory"):
        check_index(buffer, limits(records * each // INDEX_BYTES_PER_FILE - 1))


@pytest.mark.parametrize("data", [b"", b"not a zip", hostile.zip_index(3)[:-5]])
def test_what_is_not_a_zip_is_left_to_zipfile(data):
    check_index(io.BytesIO(data), limits(10))  # zipfile then says why, in its words
