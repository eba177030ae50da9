"""A stream read front to back by readers written for files (tarfile, the zip reader).

They get a file's `tell`, a `seek` that may only skip ahead, and reads filled to the size
asked, so a header that straddles two of the stream's chunks is read whole. Bulk data is
taken with `read1`, a view into the chunk the stream returned: each byte of a member's
data then goes from the inflate to the `write` system call without being copied on the
way (copies held the GIL for a third of a tar install's main thread, docs/benchmarks.md),
and the inflaters take the download's chunks in bounded views the same way.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from receiver.unpack.base import Readable
from receiver.unpack.readahead import READ_BYTES

Watcher = Callable[[int, memoryview], None]  # told each view read, with its offset


class ForwardStream:
    """`source` read in `READ_BYTES` reads; `seek_back()` is raised for a seek backwards,
    and `watch`, if given, sees every byte as it passes."""

    def __init__(
        self,
        source: Readable,
        seek_back: Callable[[], Exception] | None = None,
        watch: Watcher | None = None,
    ) -> None:
        self._source = source
        self._seek_back = seek_back or (lambda: ValueError("a stream cannot seek back"))
        self._watch = watch
        self._chunk = memoryview(b"")
        self._position = 0

    def tell(self) -> int:
        return self._position

    def read1(self, size: int = -1, /) -> memoryview:
        """What comes next, at most `size` bytes (a whole chunk if `size` is negative),
        with no copy: empty only at the end of the stream."""
        if not self._chunk:
            self._chunk = memoryview(self._source.read(READ_BYTES))
        view = self._chunk if size < 0 else self._chunk[:size]
        self._chunk = self._chunk[len(view) :]
        if self._watch is not None and view:
            self._watch(self._position, view)
        self._position += len(view)
        return view

    def read(self, size: int = -1, /) -> bytes:
        """`size` bytes (a chunk's worth if negative), fewer only at the end."""
        if size < 0:
            return bytes(self.read1())
        first = self.read1(size)
        if len(first) == size or not first:
            return bytes(first)
        # Gathered into one buffer, not a list of views: a view costs ~200 bytes whatever
        # its length, and an inflate can hand on one byte a chunk (one-byte zstd frames),
        # so a 1 MiB tar header held ~450 MiB as a million views.
        data = bytearray(first)
        while len(data) < size and (view := self.read1(size - len(data))):
            data += view
        return bytes(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        target = offset if whence == io.SEEK_SET else self._position + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self._position:
            raise self._seek_back()
        while self._position < target and self.read1(target - self._position):
            pass
        return self._position

    def skip_to_end(self) -> None:
        while self.read1():
            pass
