"""Size up a zip's central directory before `zipfile.ZipFile` reads it.

zipfile reads the whole central directory into memory and builds a `ZipInfo` (about
500 bytes) for every record in it, before any of our limits could look at the entry
count: a 48 MiB zip of a million empty entries took a worker to 469 MiB. So first, the
end-of-central-directory record (and the zip64 one) is read with zipfile's own reader
(`_EndRecData`, so both agree on which record counts), and the central directory's
records are walked header to header, as zipfile walks them, keeping nothing. A zip is
refused if its index claims more entries than RECEIVER_MAX_FILES, holds more records,
or is larger than `INDEX_BYTES_PER_FILE` per file allowed. `directory`, the end records'
part alone, also tells a zip read over the network (`zipstream`) which bytes to fetch.
"""

from __future__ import annotations

import struct
import zipfile
from typing import IO, Any

from receiver.config import Limits
from receiver.errors import ArchiveError

# A central record is 46 bytes plus its name, extra fields and comment; 176 bytes each
# on average leaves 130 for name and extras (real zips: a path plus 20-40 bytes of
# timestamps and zip64 sizes). At the default RECEIVER_MAX_FILES, an index of up to
# 16.8 MiB, which zipfile holds in about 75 MiB.
INDEX_BYTES_PER_FILE = 176

# zipfile's own reader and record layout: private names, stable since Python 2, and the
# point is to agree with zipfile exactly on where the directory is and how it is walked.
_ZIPFILE: Any = zipfile
_CENTRAL_SIZE = struct.calcsize(_ZIPFILE.structCentralDir)  # 46
_NAME_LENGTH_AT = 28  # then the extra fields' length and the comment's (2 bytes each)
_READ_SIZE = 1024 * 1024


def check_index(raw: IO[bytes], limits: Limits) -> None:
    """Refuse a zip whose central directory is over the limits; leave corrupt ones to zipfile.

    `raw` is the zip file, opened for reading; its position is left anywhere."""
    found = directory(raw, limits)
    if found is not None and found[0] >= 0:
        _count_records(raw, *found, limits)


def directory(raw: IO[bytes], limits: Limits) -> tuple[int, int] | None:
    """Where zipfile will read the central directory and its size, from the end records
    alone, once the count and the size they give are within the limits; None if there is
    no end record (not a zip). The start may be negative: zipfile then refuses it."""
    end = _ZIPFILE._EndRecData(raw)
    if not end:
        return None  # not a zip: zipfile says so in its own words
    if end[_ZIPFILE._ECD_ENTRIES_TOTAL] > limits.max_files:
        raise _too_many(limits)
    size = end[_ZIPFILE._ECD_SIZE]
    most = limits.max_files * INDEX_BYTES_PER_FILE
    if size > most:
        raise ArchiveError(
            f"the zip's index (central directory) is {size} bytes, more than {most} "
            f"({INDEX_BYTES_PER_FILE} bytes for each of RECEIVER_MAX_FILES)"
        )
    start = end[_ZIPFILE._ECD_LOCATION] - size  # where zipfile looks, even after a prefix
    if end[_ZIPFILE._ECD_SIGNATURE] == _ZIPFILE.stringEndArchive64:
        start -= _ZIPFILE.sizeEndCentDir64 + _ZIPFILE.sizeEndCentDir64Locator
    return start, size


def _count_records(raw: IO[bytes], start: int, size: int, limits: Limits) -> None:
    """Walk the records' headers as zipfile will, counting them; stop where it would fail."""
    buffer = b""
    buffered_from = 0  # the directory offset buffer[0] holds
    at = 0  # directory offset of the next record
    records = 0
    while at < size:
        if at + _CENTRAL_SIZE > buffered_from + len(buffer):
            raw.seek(start + at)
            buffer, buffered_from = raw.read(_READ_SIZE), at
        head = buffer[at - buffered_from : at - buffered_from + _CENTRAL_SIZE]
        if len(head) < _CENTRAL_SIZE or head[:4] != _ZIPFILE.stringCentralDir:
            return  # truncated or garbled: zipfile's error, in its words
        name, extra, comment = struct.unpack_from("<3H", head, _NAME_LENGTH_AT)
        records += 1
        if records > limits.max_files:
            raise _too_many(limits)
        at += _CENTRAL_SIZE + name + extra + comment


def _too_many(limits: Limits) -> ArchiveError:
    return ArchiveError(
        f"archive has more than {limits.max_files} entries (RECEIVER_MAX_FILES); "
        "refused before reading the zip's index"
    )
