"""receiver/unpack/gzipstream.py: what ISA-L's reader reports, named by the stream's end."""

import gzip

import pytest

from receiver.errors import CorruptArchiveError
from tests import hostile
from tests.unpack.archives import model_tar, unpack

STRAY = "not another complete gzip member .too few bytes for a member's header"


@pytest.mark.parametrize(
    ("stray", "count"),
    [(b"\x01", 1), (b"junk\n", 5), (b"\x01" * 9, 9), (b"\0" * 5 + b"\x01\x01", 7)],
    ids=["one-byte", "five-bytes", "nine-bytes", "after-zero-padding"],
)
def test_a_few_stray_bytes_after_the_member_are_not_called_a_truncated_stream(
    staging, stray, count
):
    """The reader needs ten bytes for a header and calls fewer an early end: "truncated"
    sent a user looking for a cut-off upload where the archive had a tail of junk."""
    with pytest.raises(CorruptArchiveError, match=f"{STRAY}: {count}\\)"):
        unpack(hostile.gzip(model_tar()) + stray, staging, "tar")
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize(
    "cut",
    [
        lambda: hostile.gzip(model_tar()) + b"\x1f\x8b\x08",  # a second member's header cut
        lambda: gzip.compress(model_tar(), mtime=0)[:12],  # inside the first deflate block
        lambda: gzip.compress(b"", mtime=0)[:-3],  # an empty member's trailer cut
        lambda: gzip.compress(model_tar(), mtime=0)[:-5],  # the trailer's length cut
    ],
    ids=["next-header", "near-the-start", "empty-member", "in-the-trailer"],
)
def test_a_stream_cut_short_is_still_called_truncated(staging, cut):
    """A header with mtime 0 (`gzip -n`) holds four zero bytes, the length of nothing
    inflated yet: a stream cut just after them must not read as stray bytes."""
    with pytest.raises(CorruptArchiveError, match="truncated: it stops before its end marker"):
        unpack(cut(), staging, "tar")


def test_stray_bytes_after_several_members_are_refused_as_truncated(staging):
    """Only a single member's length is the whole stream's: after several the reader's
    count cannot place the last trailer, and the wording falls back to truncated."""
    data = model_tar()
    members = hostile.gzip(data[:1000]) + hostile.gzip(data[1000:])
    with pytest.raises(CorruptArchiveError, match="truncated"):
        unpack(members + b"\x01", staging, "tar")
