"""Unpack a model archive into a staging directory, safely and within limits.

tarfile's own `filter="data"` is not relied on: this runtime (Python 3.11.7) predates
fixes to it (CVE-2025-4517 and friends). Instead every entry goes through `Unpacker`,
which only ever writes into directories it created itself (so no write can pass through
a link), opens files with O_EXCL|O_NOFOLLOW, accepts a symlink only when its target
stays inside the staging dir, a hard link only to a file it already wrote, and nothing
else (devices, fifos). Limits on bytes, entries and compression ratio stop bombs.

Tar formats are read as a stream (`r|*`, any compression), straight off the network.
Zip needs its central directory at the end, so it is read from a local file.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from receiver.config import Limits
from receiver.errors import PermanentError, TransientError

CHUNK_SIZE = 1024 * 1024
# Below this many unpacked bytes the ratio is not checked: small archives of text
# (a SavedModel's graph) compress well and are harmless whatever their ratio.
RATIO_FLOOR_BYTES = 16 * 1024 * 1024
_MAX_SYMLINK_TARGET = 4096


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ArchiveError(PermanentError):
    """The archive is corrupt, hostile, or over a limit."""


class CorruptArchiveError(ArchiveError):
    """The bytes do not parse as an archive (which a download mangled in transit looks like)."""


class Unpacker:
    """Creates entries under `root`, refusing anything that could escape it."""

    def __init__(self, root: Path, limits: Limits, compressed_bytes: Callable[[], int]) -> None:
        self.root = root
        self.limits = limits
        self._compressed_bytes = compressed_bytes
        self._dirs: set[tuple[str, ...]] = {()}
        self._files: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()  # directory uploads write several files at once
        self.entries = 0
        self.unpacked_bytes = 0

    def directory(self, name: str) -> None:
        parts = self._parts(name)
        if parts:
            self._make_dirs(parts)

    def file(self, name: str, source: Readable, executable: bool = False) -> None:
        parts = self._parts(name)
        if not parts:
            raise ArchiveError(f"entry {name!r} has no file name")
        self._make_dirs(parts[:-1])
        self._count_entry()
        path = self._path(parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o755 if executable else 0o644)
        except FileExistsError:
            raise ArchiveError(f"entry {name!r} appears twice or clashes with a link") from None
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK_SIZE):
                self._count_bytes(len(chunk))
                _write(out, chunk)
        with self._lock:
            self._files.add(parts)

    def symlink(self, name: str, target: str) -> None:
        parts = self._parts(name)
        if not parts or not target or len(target) > _MAX_SYMLINK_TARGET:
            raise ArchiveError(f"symlink {name!r} has no usable name or target")
        resolved = posixpath.normpath(posixpath.join(*parts[:-1], target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise ArchiveError(f"symlink {name!r} points outside the archive ({target!r})")
        self._make_dirs(parts[:-1])
        self._count_entry()
        try:
            os.symlink(target, self._path(parts))
        except FileExistsError:
            raise ArchiveError(f"entry {name!r} appears twice") from None

    def hardlink(self, name: str, target: str) -> None:
        parts, target_parts = self._parts(name), self._parts(target)
        if target_parts not in self._files:
            raise ArchiveError(
                f"hard link {name!r} points to {target!r}, which is not a file of the archive"
            )
        self._make_dirs(parts[:-1])
        self._count_entry()
        try:
            os.link(self._path(target_parts), self._path(parts), follow_symlinks=False)
        except FileExistsError:
            raise ArchiveError(f"entry {name!r} appears twice") from None

    def _parts(self, name: str) -> tuple[str, ...]:
        if "\x00" in name:
            raise ArchiveError(f"entry name {name!r} contains a NUL byte")
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise ArchiveError(f"entry {name!r} has an absolute path")
        parts = tuple(part for part in name.split("/") if part not in ("", "."))
        if ".." in parts:
            raise ArchiveError(f"entry {name!r} climbs out of the archive with '..'")
        return parts

    def _path(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.root, *parts)

    def _make_dirs(self, parts: tuple[str, ...]) -> None:
        with self._lock:
            self._make_dirs_locked(parts)

    def _make_dirs_locked(self, parts: tuple[str, ...]) -> None:
        for depth in range(1, len(parts) + 1):
            prefix = parts[:depth]
            if prefix in self._dirs:
                continue
            self._count_entry_locked()
            try:
                os.mkdir(self._path(prefix), 0o755)
            except FileExistsError:
                # Something that is not a directory we made (a file or a link) is there.
                raise ArchiveError(
                    f"entry {'/'.join(prefix)!r} is used both as a directory and as a file or link"
                ) from None
            self._dirs.add(prefix)

    def _count_entry(self) -> None:
        with self._lock:
            self._count_entry_locked()

    def _count_entry_locked(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise ArchiveError(
                f"archive has more than {self.limits.max_files} entries (RECEIVER_MAX_FILES)"
            )

    def _count_bytes(self, amount: int) -> None:
        with self._lock:
            self.unpacked_bytes += amount
        if self.unpacked_bytes > self.limits.max_unpacked_bytes:
            raise ArchiveError(
                f"archive unpacks to more than {self.limits.max_unpacked_bytes} bytes "
                "(RECEIVER_MAX_UNPACKED_BYTES)"
            )
        if self.unpacked_bytes > RATIO_FLOOR_BYTES:
            ratio = self.unpacked_bytes / max(self._compressed_bytes(), 1)
            if ratio > self.limits.max_ratio:
                raise ArchiveError(
                    f"archive expands more than {self.limits.max_ratio}x (RECEIVER_MAX_RATIO); "
                    "refusing a likely decompression bomb"
                )


def _write(out: IO[bytes], chunk: bytes) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TransientError(f"disk full while unpacking: {exc}") from exc
        raise


def unpack_tar(stream: Readable, root: Path, limits: Limits, compressed: Callable[[], int]) -> None:
    """Unpack a tar stream (plain, gzip, bzip2 or xz) read front to back."""
    unpacker = Unpacker(root, limits, compressed)
    try:
        with tarfile.open(fileobj=stream, mode="r|*", bufsize=CHUNK_SIZE) as tar:  # type: ignore[call-overload]
            for member in tar:
                _unpack_tar_member(tar, member, unpacker)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise CorruptArchiveError(f"corrupt tar archive: {exc}") from exc


def _unpack_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, unpacker: Unpacker) -> None:
    if member.isdir():
        unpacker.directory(member.name)
    elif member.isreg():
        source = tar.extractfile(member)
        assert source is not None  # a regular member always has data
        unpacker.file(member.name, source, executable=bool(member.mode & stat.S_IXUSR))
    elif member.issym():
        unpacker.symlink(member.name, member.linkname)
    elif member.islnk():
        unpacker.hardlink(member.name, member.linkname)
    else:
        raise ArchiveError(f"entry {member.name!r} is a device, fifo or other special file")


def unpack_zip(path: Path, root: Path, limits: Limits) -> None:
    """Unpack a zip file that is already on local disk."""
    compressed_size = path.stat().st_size
    unpacker = Unpacker(root, limits, lambda: compressed_size)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _unpack_zip_member(archive, info, unpacker)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise CorruptArchiveError(f"corrupt zip archive: {exc}") from exc
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, unknown compression
        raise ArchiveError(f"unsupported zip archive: {exc}") from exc


def _unpack_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, unpacker: Unpacker) -> None:
    unix_mode = info.external_attr >> 16
    if info.is_dir():
        unpacker.directory(info.filename)
    elif stat.S_ISLNK(unix_mode):
        with archive.open(info) as source:
            target = source.read(_MAX_SYMLINK_TARGET + 1).decode("utf-8", "replace")
        unpacker.symlink(info.filename, target)
    elif unix_mode and not stat.S_ISREG(unix_mode):
        raise ArchiveError(f"entry {info.filename!r} is a device, fifo or other special file")
    else:
        with archive.open(info) as source:
            unpacker.file(info.filename, source, executable=bool(unix_mode & stat.S_IXUSR))
