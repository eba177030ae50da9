"""A corpus of hostile archives, each with the reason the receiver must give for refusing it.

`builders` makes them (tarfile, zipfile, the compressors, GNU tar for sparse files, and
byte by byte what no tool writes); `CORPUS` lists each case with its reason.
"""

import bz2
import tarfile
import zipfile

from tests.helpers import HALF_PLUS_TWO
from tests.hostile.builders import (
    MIB,
    Hostile,
    better_zip_bomb,
    bomb,
    chained_long_names,
    deep_and_wide,
    empty_gzip_members,
    gzip,
    gzip_bomb,
    link_chain,
    member,
    sparse_tar,
    tar,
    tar_header,
    xz,
    zip_index,
    zip_of,
    zstd_,
    zstd_one_byte_frames,
)

__all__ = ["CORPUS", "Hostile", "gzip", "gzip_bomb", "zip_index"]

CORPUS = [
    Hostile("gzip-bomb", "tar.gz", "RECEIVER_MAX_RATIO", gzip_bomb),
    Hostile("bzip2-bomb", "tar.bz2", "RECEIVER_MAX_RATIO", lambda: bomb(bz2.compress, gib=1)),
    Hostile("xz-bomb", "tar.xz", "RECEIVER_MAX_RATIO", lambda: bomb(xz, gib=1)),
    Hostile("zstd-bomb", "tar.zst", "RECEIVER_MAX_RATIO", lambda: bomb(zstd_)),
    Hostile("zip-bomb-overlapping", "zip", "overlap", better_zip_bomb),
    Hostile(
        "zip-bomb-deflate",
        "zip",
        "RECEIVER_MAX_RATIO",
        lambda: zip_of(("m/saved_model.pb", b"graph"), ("m/variables/bomb", bytes(256 * MIB))),
    ),
    Hostile(
        "pax-header-huge",
        "tar.gz",
        "extended header claims",
        lambda: tar((tar_header(tarfile.XHDTYPE, 4 * 1024**3), None), model=False),
    ),
    Hostile(
        "gnu-long-name-huge",
        "tar.gz",
        "extended header claims",
        lambda: tar((tar_header(tarfile.GNUTYPE_LONGNAME, 4 * 1024**3), None), model=False),
    ),
    Hostile("sparse-gnu", "tar.gz", "sparse", lambda: sparse_tar("gnu")),
    Hostile("sparse-pax", "tar.gz", "sparse", lambda: sparse_tar("posix")),
    Hostile(
        "many-tiny-entries",
        "tar.gz",
        "RECEIVER_MAX_FILES",
        lambda: tar(*(member(f"m/assets/f{i}") for i in range(100_001))),
    ),
    Hostile(
        "deep-directories",
        "tar.gz",
        "longer than",
        lambda: tar(member("m/" + "d/" * 1000 + "f", b"x")),
    ),
    Hostile("long-name-part", "tar.gz", "over 255 bytes", lambda: tar(member("m/" + "a" * 300))),
    Hostile("control-character", "tar.gz", "control character", lambda: tar(member("m/a\nb"))),
    Hostile("backslash", "tar.gz", "backslash", lambda: tar(member("m\\..\\..\\escaped"))),
    Hostile("backslash-zip", "zip", "backslash", lambda: zip_of(("..\\escaped", b"x"))),
    Hostile("drive-letter", "zip", "absolute path", lambda: zip_of(("C:/escaped", b"x"))),
    Hostile("dot-dot", "tar.gz", "climbs out", lambda: tar(member("m/../../escaped", b"x"))),
    Hostile("absolute", "tar.gz", "absolute path", lambda: tar(member("/tmp/escaped", b"x"))),
    Hostile(
        "duplicate-name",
        "tar.gz",
        "appears twice",
        lambda: tar(member("m/assets/foo.txt", b"again")),
    ),
    Hostile(
        "file-then-directory",
        "tar.gz",
        "both",
        lambda: tar(member("m/x", b"file"), member("m/x", kind=tarfile.DIRTYPE)),
    ),
    Hostile(
        "directory-then-file",
        "tar.gz",
        "appears twice|both",
        lambda: tar(member("m/x", kind=tarfile.DIRTYPE), member("m/x", b"file")),
    ),
    Hostile(
        "symlink-out",
        "tar.gz",
        "points outside",
        lambda: tar(member("m/link", kind=tarfile.SYMTYPE, link="../../../etc/passwd")),
    ),
    Hostile(
        "symlink-chain-out",
        "tar.gz",
        "through other links",
        lambda: tar(
            member("m/here", kind=tarfile.SYMTYPE, link="."),
            member("m/up", kind=tarfile.SYMTYPE, link="here/here/../.."),
        ),
    ),
    Hostile(
        "hardlink-out",
        "tar.gz",
        "not a file of the archive",
        lambda: tar(member("m/passwd", kind=tarfile.LNKTYPE, link="/etc/passwd")),
    ),
    Hostile("device", "tar.gz", "device", lambda: tar(member("m/null", kind=tarfile.CHRTYPE))),
    Hostile(
        "saved-model-symlink",
        "tar.gz",
        "saved_model.pb is a link",
        lambda: tar(
            member("m/graph.pb", (HALF_PLUS_TWO / "saved_model.pb").read_bytes()),
            member("m/saved_model.pb", kind=tarfile.SYMTYPE, link="graph.pb"),
            model=False,
        ),
    ),
    Hostile(
        "saved-model-directory",
        "tar.gz",
        "saved_model.pb is a link or directory",
        lambda: tar(member("m/saved_model.pb/x", b"x"), model=False),
    ),
    Hostile(
        "zip-bzip2-method",
        "zip",
        "compression method",
        lambda: zip_of(("m/saved_model.pb", b"graph"), method=zipfile.ZIP_BZIP2),
    ),
    Hostile("truncated-tar-gz", "tar.gz", "truncated", lambda: tar(model=True)[:-200]),
    Hostile(
        "symlink-up-out-of-version",
        "tar.gz",
        "outside the model version",
        lambda: tar(member("m/up", kind=tarfile.SYMTYPE, link="..")),
    ),
    Hostile(
        "symlink-through-another-version",
        "tar.gz",
        "outside the model version",
        lambda: tar(member("m/assets/esc", kind=tarfile.SYMTYPE, link="../../1/up/..")),
    ),
    Hostile("symlink-chain-2000", "tar.gz", "more than 40 links", lambda: link_chain(2000)),
    Hostile(
        "symlink-loop",
        "tar.gz",
        "loop of links",
        lambda: tar(
            member("m/a", kind=tarfile.SYMTYPE, link="b"),
            member("m/b", kind=tarfile.SYMTYPE, link="a"),
        ),
    ),
    Hostile("deep-and-wide-directories", "tar.gz", "more than 64 levels deep", deep_and_wide),
    Hostile(
        "symlink-targets-100k",
        "tar.gz",
        "symlink targets add up to more than",
        lambda: tar(
            *(
                member(f"m/l{i}", kind=tarfile.SYMTYPE, link="./" * 400 + "saved_model.pb")
                for i in range(3000)
            )
        ),
    ),  # fmt: skip
    Hostile(
        "provenance-link-to-graph",
        "tar.gz",
        "has its own .receiver.json",
        lambda: tar(member("m/.receiver.json", kind=tarfile.SYMTYPE, link="saved_model.pb")),
    ),
    Hostile("gnu-long-name-chain", "tar.gz", "headers in a row", chained_long_names),
    Hostile(
        "zstd-empty-frames",
        "tar.zst",
        "more than 64 members averaging under 64 KiB",
        lambda: zstd_(b"") * 1000 + tar(compress=zstd_),
    ),
    Hostile(
        "zstd-one-byte-frames",
        "tar.zst",
        "more than 64 members averaging under 64 KiB",
        lambda: tar(compress=zstd_one_byte_frames),
    ),
    Hostile(
        "content-encoding-gzip-bomb",
        "tar.gz",
        "RECEIVER_MAX_RATIO",
        lambda: gzip(gzip_bomb()),
        content_encoding="gzip",
    ),
    Hostile(
        "content-encoding-empty-members",
        "tar.gz",
        "RECEIVER_MAX_RATIO",
        empty_gzip_members,
        content_encoding="gzip",
    ),
    Hostile(
        "content-encoding-brotli",
        "tar.gz",
        "Content-Encoding: br.*cp -Z",
        lambda: tar(),
        content_encoding="br",
    ),
    Hostile(
        "zip-index-million-entries",
        "zip",
        "RECEIVER_MAX_FILES.*before reading",
        lambda: zip_index(1_000_000),
    ),
    Hostile(
        "zip-index-count-lies",
        "zip",
        "RECEIVER_MAX_FILES.*before reading",
        lambda: zip_index(100_001, claimed=1),
    ),
    Hostile(
        "zip-index-huge-extra-fields",
        "zip",
        r"index \(central directory\) is",
        lambda: zip_index(270, extra=65535),
    ),
]
