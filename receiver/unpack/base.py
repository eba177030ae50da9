"""What every archive format shares: the chunk size, readable streams, the byte budget,
and the rules an entry's name must keep."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from receiver.config import Limits
from receiver.errors import ArchiveError
from receiver.layout import PROVENANCE_FILE

CHUNK_SIZE = 512 * 1024
# Below this many unpacked bytes the ratio is not checked: small archives of text
# (a SavedModel's graph) compress well and are harmless whatever their ratio.
RATIO_FLOOR_BYTES = 16 * 1024 * 1024
MAX_NAME_BYTES = 1024  # a whole entry name
MAX_COMPONENT_BYTES = 255  # one path component (NAME_MAX on Linux filesystems)
MAX_SYMLINK_TARGET = 1024
MAX_LINK_TARGET_BYTES = 1024 * 1024  # all symlink targets together
# A SavedModel is a few levels deep (version/variables/…, assets/ of a few more); 64 leaves
# room for any real assets tree, and keeps each entry's cost (a dict step and a kernel
# path lookup per level) small: 500 levels times tens of thousands of entries is minutes.
MAX_DEPTH = 64
_MACOS_JUNK = ("__MACOSX", ".DS_Store")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ViewReadable(Protocol):
    """A file's data to write: its reads may be views into larger chunks, copied by no one."""

    def read(self, size: int = -1, /) -> bytes | memoryview: ...


class ByteBudget:
    """Counts unpacked bytes against RECEIVER_MAX_UNPACKED_BYTES and RECEIVER_MAX_RATIO."""

    def __init__(self, limits: Limits, compressed_bytes: Callable[[], int]) -> None:
        self.limits = limits
        self._compressed_bytes = compressed_bytes
        self._lock = threading.Lock()  # directory uploads write several files at once
        self.spent = 0

    def spend(self, amount: int) -> None:
        with self._lock:
            self.spent += amount
            spent = self.spent
        if spent > self.limits.max_unpacked_bytes:
            raise ArchiveError(
                f"archive unpacks to more than {self.limits.max_unpacked_bytes} bytes "
                f"({self.limits.unpacked_setting})"
            )
        if spent > RATIO_FLOOR_BYTES and spent > self.limits.max_ratio * max(
            self._compressed_bytes(), 1
        ):
            raise ArchiveError(
                f"archive expands more than {self.limits.max_ratio}x (RECEIVER_MAX_RATIO); "
                "refusing a likely decompression bomb"
            )


def check_name(name: str) -> tuple[str, ...]:
    """The path components of an entry name, or ArchiveError saying why it is unsafe."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ArchiveError(f"entry name {name[:64]!r}… is longer than {MAX_NAME_BYTES} bytes")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        raise ArchiveError(f"entry name {name!r} contains a control character")
    if any(0xDC80 <= ord(char) <= 0xDCFF for char in name):  # undecodable bytes
        raise ArchiveError(f"entry name {name!r} is not valid UTF-8")
    if "\\" in name:
        raise ArchiveError(
            f"entry name {name!r} contains a backslash; archives must use '/' between "
            "directories (re-create it with tar, zip or Python's zipfile)"
        )
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        raise ArchiveError(f"entry {name!r} has an absolute path")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"entry {name!r} climbs out of the archive with '..'")
    if parts and parts[-1] == PROVENANCE_FILE and len(parts) <= 2:
        raise ArchiveError(
            f"entry {name!r}: the archive has its own {PROVENANCE_FILE}, the name of the "
            "receiver's record of where a version came from; leave it out"
        )
    if any(len(part.encode()) > MAX_COMPONENT_BYTES for part in parts):
        raise ArchiveError(f"entry {name[:64]!r}… has a name part over {MAX_COMPONENT_BYTES} bytes")
    if len(parts) > MAX_DEPTH:
        raise ArchiveError(f"entry {name[:64]!r}… is more than {MAX_DEPTH} levels deep")
    return parts


def is_macos_junk(parts: tuple[str, ...]) -> bool:
    """Resource forks and Finder files that macOS puts into archives; never part of a model."""
    return any(part in _MACOS_JUNK or part.startswith("._") for part in parts)
