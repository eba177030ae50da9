"""Read a stream a few chunks ahead on a thread of its own, so its work overlaps the reader's.

Inflating holds one core for the whole install of a gzip archive of weights (they barely
compress, so it is all Huffman decoding, docs/benchmarks.md), and the socket, the
checksum and ISA-L release the GIL while they work. Reading the decompressed stream
ahead on its own thread lets tarfile's parsing and copying and the writes run on the
other core beside it, instead of in turns. Memory stays bounded: at most `depth` reads
wait. Whatever the stream raises is raised to the reader at the point it happened.
"""

from __future__ import annotations

import queue
import threading

from receiver.unpack.base import CHUNK_SIZE, Readable

# Each read asks for this much: every read of the decompressed stream is one inflate call
# and a turn of the GIL, and a turn can wait out the holder's switch interval (5 ms), so
# few large reads beat many small ones (512 KiB reads: about 15% slower in
# docs/benchmarks.md). Memory: at most `depth` reads wait (DEPTH unless the caller says),
# 4 MiB a stream. Two are enough slack: the reader is faster than the inflate, so the
# queue fills only while a write stalls, and a 5 GiB tar.gz install peaked about 5 MiB
# lower with two than with four, with no loss the machine's noise let alternating runs
# show (docs/benchmarks.md, the goals' round and "Memory").
READ_BYTES = 4 * CHUNK_SIZE
DEPTH = 2
# Reads of the download waiting for the inflate (tar's and zip's): one is enough to keep
# the socket busy beside it, and a deeper queue only hid from the download's probe whether
# the unpacker keeps up (`download.sliced`); a 1 GiB install peaked 6-8 MiB lower, no slower.
DOWNLOAD_DEPTH = 1
_POLL_SECONDS = 0.5  # how often a blocked producer looks whether it was closed


class ReadAhead:
    """`read(n)` as the wrapped stream's, served from chunks a thread reads ahead.

    Use as a context manager (or call `close`): closing stops the thread once its current
    read returns, before the stream under it is closed."""

    def __init__(self, source: Readable, depth: int = DEPTH, name: str = "unpack-inflate") -> None:
        self._source = source
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._closed = threading.Event()
        self._current = b""
        self._offset = 0
        self._ended = False
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, size: int = -1, /) -> bytes:
        size = CHUNK_SIZE if size is None or size < 0 else size
        if self._offset == len(self._current):
            if self._ended:
                return b""
            item = self._chunks.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if not item:
                self._ended = True
                return b""
            self._current, self._offset = item, 0
        if self._offset == 0 and size >= len(self._current):
            self._offset = len(self._current)
            return self._current  # the whole chunk: no copy
        chunk = self._current[self._offset : self._offset + size]
        self._offset += len(chunk)
        return chunk

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def _produce(self) -> None:
        while not self._closed.is_set():
            try:
                item: bytes | BaseException = self._source.read(READ_BYTES)
            except BaseException as exc:  # noqa: BLE001 - raised again by read()
                item = exc
            if not self._put(item) or not isinstance(item, bytes) or not item:
                return

    def _put(self, item: bytes | BaseException) -> bool:
        while not self._closed.is_set():
            try:
                self._chunks.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False
