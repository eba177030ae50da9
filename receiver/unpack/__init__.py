"""Unpack: an archive's bytes into a staging directory, safely, within limits.

    base        the one chunk size, `Readable`, the byte budget, the rules for names
    decompress  the format from the first bytes; bzip2, xz and zstd in bounded steps;
                the -Z content encoding
    gzipstream  gzip through ISA-L's reader, its errors named by the stream's end
    tar         a tar stream read front to back
    zip         a zip's index read and checked, then its entries (`unpack_zip`: spooled)
    zipstream   a zip streamed: its index read by ranged reads first, then its entries
                as the download passes them, front to back (as tar's)
    zipindex    a zip's index sized up before zipfile reads it
    readahead   a stream read a few chunks ahead on its own thread (inflate beside the rest)
    forward     a stream read front to back as a file (tell, forward seek), data as views
    writer      the safe writer: entries under staging, nothing escaping it
    flush       writeback started as files grow, finished files fsynced on a thread
    entrytree   the archive's own tree: where links lead, without the disk

Every refusal is an `ArchiveError` (`receiver.errors`) that names the entry and the
rule; `CorruptArchiveError` when the bytes are not a whole archive, as a download cut
short or mangled in transit looks, and the checksum then tells a retry from a failure.
"""

from receiver.unpack import zipstream
from receiver.unpack.decompress import content_decoded, decompressed, is_encoded
from receiver.unpack.tar import unpack_tar
from receiver.unpack.zip import unpack_zip

__all__ = [
    "content_decoded",
    "decompressed",
    "is_encoded",
    "unpack_tar",
    "unpack_zip",
    "zipstream",
]
