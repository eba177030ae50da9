"""Write an archive's entries under a staging directory, refusing anything that could escape it.

Every entry, whatever archive format it came from, goes through `SafeWriter`, which
- only ever writes into directories it created itself, so no write passes through a link;
- opens files with O_EXCL|O_NOFOLLOW, so a duplicate or a planted link is an error;
- takes a symlink only if, once every entry is written, it resolves inside the directory
  that becomes the version (followed through other links as the kernel will follow
  them, in the archive's own tree: `entrytree`), a hard link only to a file it
  wrote itself, and nothing else (devices, fifos, sparse files);
- takes names only if they are plain relative UTF-8 paths a Linux filesystem can hold,
  at most `MAX_DEPTH` levels deep;
- counts entries and bytes against the limits, so bombs stop early;
- skips what macOS adds to archives (`__MACOSX/`, `._*` AppleDouble files, `.DS_Store`).

tarfile's `filter="data"` is not relied on: this runtime (Python 3.11.7) predates fixes to
it (CVE-2025-4517 and friends), and it does not cover zip or directory uploads.
"""

from __future__ import annotations

import errno
import os
import posixpath
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from receiver.config import Limits
from receiver.errors import ArchiveError, TransientError
from receiver.unpack.base import (
    MAX_LINK_TARGET_BYTES,
    MAX_SYMLINK_TARGET,
    ByteBudget,
    ViewReadable,
    check_name,
    is_macos_junk,
)
from receiver.unpack.entrytree import FILE, EntryTree, Link, Node
from receiver.unpack.flush import Flusher
from receiver.unpack.readahead import READ_BYTES


class SafeWriter:
    """Creates entries under `root`; call `finish()` once every entry is written."""

    def __init__(self, root: Path, limits: Limits, compressed_bytes: Callable[[], int]) -> None:
        self.root = root
        self._link_bytes = 0
        self.limits = limits
        self.budget = ByteBudget(limits, compressed_bytes)
        self._tree = EntryTree()  # what has been written, to check clashes and links
        self._lock = threading.Lock()
        self.entries = 0
        self.skipped = 0
        self._flusher = Flusher()  # writes and fsyncs files while the next ones inflate

    @property
    def unpacked_bytes(self) -> int:
        return self.budget.spent

    def directory(self, name: str) -> None:
        parts = check_name(name)
        if parts and not self._skip(parts):
            with self._lock:
                self._make_dirs(parts)

    def file(
        self,
        name: str,
        source: ViewReadable,
        executable: bool = False,
        read_bytes: int = READ_BYTES,
    ) -> None:
        """`source` written as file `name`, read `read_bytes` at a time (an archive's
        read-ahead chunk by default, whose reads are views)."""
        parts = check_name(name)
        if not parts:
            raise ArchiveError(f"entry {name!r} has no file name")
        if self._skip(parts):
            return
        with self._lock:
            self._claim(parts, name, FILE)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self._path(parts), flags, 0o755 if executable else 0o644)
        except FileExistsError:
            raise ArchiveError(f"entry {name!r} appears twice or clashes with a link") from None
        tracked = self._flusher.track(fd)
        try:
            with os.fdopen(fd, "wb") as out:
                _copy(source, out, self.budget.spend, tracked.written, read_bytes)
        except BaseException:
            tracked.abandon()
            raise
        tracked.done()

    def symlink(self, name: str, target: str) -> None:
        parts = check_name(name)
        if not parts or not target or "\x00" in target:
            raise ArchiveError(f"symlink {name!r} has no usable name or target")
        # In bytes as the filesystem stores them: a character of UTF-8 may be four.
        target_bytes = len(target.encode("utf-8", "surrogateescape"))
        if target_bytes > MAX_SYMLINK_TARGET:
            raise ArchiveError(
                f"symlink {name!r} has a target of more than {MAX_SYMLINK_TARGET} bytes"
            )
        if self._skip(parts):
            return
        resolved = posixpath.normpath(posixpath.join(*parts[:-1], target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise ArchiveError(f"symlink {name!r} points outside the archive ({target!r})")
        with self._lock:
            # Every target is kept until `finish` resolves them: their bytes are bounded
            # on their own (a SavedModel has a handful of links, if any).
            self._link_bytes += target_bytes
            if self._link_bytes > MAX_LINK_TARGET_BYTES:
                raise ArchiveError(
                    f"the archive's symlink targets add up to more than "
                    f"{MAX_LINK_TARGET_BYTES} bytes; a SavedModel needs few links, if any"
                )
            self._claim(parts, name, Link(target))
            self._tree.links.append(parts)
        try:
            os.symlink(target, self._path(parts))
        except FileExistsError:
            raise ArchiveError(f"entry {name!r} appears twice") from None

    def hardlink(self, name: str, target: str) -> None:
        parts = check_name(name)
        if not parts:
            raise ArchiveError(f"hard link {name!r} has no file name")
        if self._skip(parts):
            return
        try:
            target_parts = check_name(target)
        except ArchiveError:
            target_parts = ()
        with self._lock:
            if self._tree.lookup(target_parts) is not FILE:
                raise ArchiveError(
                    f"hard link {name!r} points to {target!r}, which is not a file of the archive"
                )
            self._claim(parts, name, FILE)
        try:
            os.link(self._path(target_parts), self._path(parts), follow_symlinks=False)
        except FileExistsError:
            raise ArchiveError(f"entry {name!r} appears twice") from None

    def finish(self) -> None:
        """Check what only the whole tree shows: links that leave the version, whether by
        `..` or through other links. The version is the tree's single top-level directory
        if it has one (`servable.find_saved_model` installs only that), else the tree.
        Returns once every file is fsynced."""
        self._flusher.wait()
        version = self._tree.version_root()
        for parts in self._tree.links:
            reason = self._tree.escapes(parts, version)
            if reason is not None:
                raise ArchiveError(f"symlink {'/'.join(parts)!r} {reason}")

    def _skip(self, parts: tuple[str, ...]) -> bool:
        if is_macos_junk(parts):
            self.skipped += 1
            return True
        return False

    def _path(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.root, *parts)

    def _claim(self, parts: tuple[str, ...], name: str, node: object) -> None:
        """Record a new file or link at `parts` (its directories made); refuse a clash."""
        parent = self._make_dirs(parts[:-1])
        existing = parent.get(parts[-1])
        if isinstance(existing, dict):
            raise ArchiveError(f"entry {name!r} is both a directory and a file")
        if existing is not None:
            raise ArchiveError(f"entry {name!r} appears twice")
        self._count_entry()
        parent[parts[-1]] = node

    def _make_dirs(self, parts: tuple[str, ...]) -> dict[str, Node]:
        """The directory at `parts`, made with any missing parents: one dict step a level."""
        node = self._tree.top
        for depth, part in enumerate(parts):
            child = node.get(part)
            if child is None:
                self._count_entry()
                try:
                    os.mkdir(self._path(parts[: depth + 1]), 0o755)
                except FileExistsError:
                    raise ArchiveError(f"entry {'/'.join(parts)!r} is already on disk") from None
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ArchiveError(
                    f"entry {'/'.join(parts[: depth + 1])!r} is used both as a directory "
                    "and as a file or link"
                )
            node = child
        return node

    def _count_entry(self) -> None:
        self.entries += 1  # under self._lock
        if self.entries > self.limits.max_files:
            raise ArchiveError(
                f"archive has more than {self.limits.max_files} entries (RECEIVER_MAX_FILES)"
            )


def _copy(
    source: ViewReadable,
    out: IO[bytes],
    spend: Callable[[int], None],
    written: Callable[[int], None],
    read_bytes: int,
) -> None:
    """Copy `source` to `out`, each chunk counted before it is written, `written` told
    the file's size after each write.

    A file of more than one chunk is written by a second thread while the next chunk is
    read: the `write` system call releases the GIL, so inflating and reading on this
    thread overlap the kernel's copy into the page cache (docs/benchmarks.md). Chunks are
    asked for `read_bytes` at a time: from an archive a read-ahead chunk (`READ_BYTES`),
    so each is handed on whole, with no slice copied and one hand-over per chunk."""
    chunk = source.read(read_bytes)
    following = source.read(read_bytes) if chunk else b""
    if not following:
        spend(len(chunk))
        _write(out, chunk)
        return
    size = 0

    def write(data: bytes | memoryview) -> None:
        nonlocal size
        _write(out, data)
        size += len(data)
        written(size)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unpack-write") as writer:
        spend(len(chunk))
        pending = writer.submit(write, chunk)
        while following:
            spend(len(following))
            pending.result()  # one write in flight: memory stays at two chunks
            pending = writer.submit(write, following)
            following = source.read(read_bytes)
        pending.result()


def _write(out: IO[bytes], chunk: bytes | memoryview) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TransientError(f"disk full while unpacking: {exc}") from exc
        raise
