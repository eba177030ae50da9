"""Put unpacked bytes on disk while the archive still inflates, not after it.

The install is durable only once every file is fsynced (`servable.install`). Left to the
end, that flush is a second pass over the model at disk speed, after the inflate (1 GiB:
about 1.4 s on this project's machines, docs/benchmarks.md). Instead, as a file grows,
its writer asks the kernel to start writing each finished stretch out
(`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which only queues the writes), and each
finished file is fsynced on a thread of its own while the next one inflates. The fsyncs
of `servable.install` still run and stay the guarantee; they find the files clean.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import threading
from collections.abc import Callable

from receiver.errors import TransientError

# How much of a file is written before its writeback is started: large enough that the
# kernel gets whole extents, small enough that the last stretch flushes fast.
WRITEBACK_BYTES = 8 * 1024 * 1024
# Finished files waiting for their fsync, each holding a file descriptor: an archive of
# many small files waits for the flusher rather than opening thousands.
MAX_PENDING_FILES = 64
_IDLE_SECONDS = 1.0  # the flusher thread ends after this long without work
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (Linux); None where there is none, and writeback waits."""
    function = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
    if function is not None:
        function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        function.restype = ctypes.c_int
    return function


_SYNC_RANGE = _sync_file_range()


class Flusher:
    """Starts writeback and fsyncs files on one thread, in the order they were handed over.

    `track(fd)` follows a file being written: its writer reports each size, which starts
    writeback of each full stretch, and `done()` queues its fsync. `wait()` returns once
    every fsync is done, raising the first failure."""

    def __init__(self) -> None:
        self._work: queue.Queue[Callable[[], None]] = queue.Queue()
        self._slots = threading.BoundedSemaphore(MAX_PENDING_FILES)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._error: BaseException | None = None

    def track(self, fd: int) -> TrackedFile:
        return TrackedFile(self, fd)

    def wait(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0)
            error, self._error = self._error, None
        if error is not None:
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise TransientError(f"disk full while unpacking: {error}") from error
            raise error

    def _submit(self, task: Callable[[], None]) -> None:
        with self._lock:  # with the put, so the thread cannot end between the two
            self._pending += 1
            self._work.put(task)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="unpack-flush", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                task = self._work.get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._work.empty():
                        self._thread = None
                        return
                continue
            try:
                task()
            except BaseException as exc:  # noqa: BLE001 - raised again by wait()
                with self._lock:
                    self._error = self._error or exc
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()


class TrackedFile:
    """One file being written. Only a file that grows past `WRITEBACK_BYTES` is flushed
    early: it gets a duplicate descriptor, owned by the flusher until its fsync is done.
    Small files are left to the final fsyncs, which the kernel serves in a batch (an
    archive of 100,000 tiny entries would otherwise wait for 100,000 fsyncs in a row)."""

    def __init__(self, flusher: Flusher, fd: int) -> None:
        self._flusher = flusher
        self._fd = fd
        self._own: int | None = None  # the duplicate, once the file is large
        self._started = 0  # bytes whose writeback has been asked for

    def written(self, size: int) -> None:
        """The file now holds `size` bytes: start writing out each full stretch."""
        if size - self._started < WRITEBACK_BYTES:
            return
        if self._own is None:
            self._flusher._slots.acquire()
            self._own = os.dup(self._fd)
        start, self._started = self._started, size
        if _SYNC_RANGE is not None:
            fd = self._own
            self._flusher._submit(lambda: _start_writeback(fd, start, size - start))

    def done(self) -> None:
        """No more writes: fsync a large file on the flusher's thread, then close it."""
        if self._own is not None:
            self._flusher._submit(self._fsync_and_close)

    def abandon(self) -> None:
        """The write failed: close without flushing (the staging directory goes away)."""
        if self._own is not None:
            self._flusher._submit(self._close)

    def _fsync_and_close(self) -> None:
        try:
            assert self._own is not None
            os.fsync(self._own)
        finally:
            self._close()

    def _close(self) -> None:
        assert self._own is not None
        os.close(self._own)
        self._flusher._slots.release()


def _start_writeback(fd: int, offset: int, length: int) -> None:
    assert _SYNC_RANGE is not None
    _SYNC_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advisory: a failure is harmless
