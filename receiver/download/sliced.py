"""Sliced downloads: one large object read as several ranged GETs at once, in order.

On Cloud Storage one HTTP stream is usually the ceiling for a multi-gigabyte object
(`gcloud storage cp` slices large downloads for this reason). Here the object, from byte
`start` on, is cut into slices of `slice_bytes`; `slices` threads fetch them with ranged
GETs on the pinned generation, and the reader gets the bytes back in order, so the same
streaming unpacker and the same whole-object crc32c (`ObjectStream`) apply. A thread
takes the next slice only when fewer than `slices` are fetched but not yet read, so
memory held is at most `slices × slice_bytes` however large the object is.

A slice whose connection breaks is asked again from the byte where it stopped (a few
times); anything else ends the whole download with the same errors as one stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
import urllib3.exceptions

from receiver.download.stream import READ_SIZE, Download
from receiver.errors import TransientError

log = logging.getLogger(__name__)

# A large object's first bytes are timed in windows of one slice's worth, at most this many,
# before slicing is decided. One window is not enough: the unpacker's read-ahead takes its
# first few MiB without a pause whatever the unpacker's speed, and a stream's first bytes
# come slower than the rest (on loopback, the first 8 MiB at 130-700 MB/s while waited
# for, the later ones at 0.8-3 GB/s): timed over its first 8 MiB alone, 1 GiB installs
# here went on in slices two times in three, 1.9x slower and with 50 MiB more memory
# (docs/benchmarks.md).
PROBE_WINDOWS = 8
SLICE_WHEN_WAITING = 0.5  # share of a window spent waiting for bytes that calls for slices
# Bytes arriving this fast while the reader waits are held back by this machine, not by
# their connection: on loopback (0.8-3 GB/s) slices made installs slower. One Cloud
# Storage stream gives less.
FAST_STREAM = 512 * 1024 * 1024  # bytes/s
SLICE_ATTEMPTS = 3  # tries of one slice's bytes before the download (and the job) fails
# (start, end exclusive) -> a streaming 206 response for exactly those bytes, or it raises
RangedGet = Callable[[int, int], requests.Response]


@dataclass
class _Slice:
    start: int
    end: int  # exclusive
    chunks: deque[bytes] = field(default_factory=deque)
    received: int = 0
    done: bool = False
    response: requests.Response | None = None


class SliceFetcher:
    """The fetching half: threads filling slices; `read` hands their bytes out in order."""

    def __init__(
        self,
        request: RangedGet,
        where: str,
        size: int,
        slices: int,
        slice_bytes: int,
        first: requests.Response,
        start: int = 0,
    ) -> None:
        """`first` is a response already open at byte `start` (checked by the caller); it
        becomes the first slice's, read to that slice's end however far it reaches."""
        self._request = request
        self._where = where
        self._parts = [
            _Slice(offset, min(offset + slice_bytes, size))
            for offset in range(start, size, slice_bytes)
        ]
        self._parts[0].response = first
        self._pending = b""
        self._cond = threading.Condition()
        self._window = threading.Semaphore(slices)  # slices fetched or held, not yet read
        self._next_to_fetch = 0
        self._next_to_read = 0
        self._error: BaseException | None = None
        self._closed = False
        self._threads = [
            threading.Thread(target=self._fetch_loop, name=f"slice-{n}", daemon=True)
            for n in range(min(slices, len(self._parts)))
        ]
        for thread in self._threads:
            thread.start()

    def read(self, amount: int) -> bytes:
        """At most `amount` of the next bytes in order; b"" at the object's end."""
        if not self._pending:
            self._pending = self._next_chunk()
        chunk, self._pending = self._pending[:amount], self._pending[amount:]
        return chunk

    def _next_chunk(self) -> bytes:
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                if self._next_to_read == len(self._parts):
                    return b""
                part = self._parts[self._next_to_read]
                if part.chunks:
                    return part.chunks.popleft()
                if part.done:
                    self._next_to_read += 1
                    self._window.release()
                    continue
                self._cond.wait()

    def close(self) -> None:
        """Stop every thread (those blocked on the window or on a socket) and wait for them."""
        with self._cond:
            self._closed = True
            responses = [part.response for part in self._parts if part.response is not None]
        for _ in self._threads:
            self._window.release()
        for response in responses:
            response.close()  # a thread blocked in a read wakes with an error and sees _closed
        for thread in self._threads:
            thread.join(timeout=10)

    def _take(self) -> _Slice | None:
        self._window.acquire()
        with self._cond:
            if self._closed or self._error is not None or self._next_to_fetch == len(self._parts):
                self._window.release()  # keep the count right for the others
                return None
            part = self._parts[self._next_to_fetch]
            self._next_to_fetch += 1
            return part

    def _fetch_loop(self) -> None:
        while (part := self._take()) is not None:
            try:
                self._fetch(part)
            except BaseException as exc:  # handed to the reader, who raises it
                with self._cond:
                    if self._error is None and not self._closed:
                        self._error = exc
                    self._cond.notify_all()
                return
            finally:
                if part.response is not None:
                    part.response.close()

    def _fetch(self, part: _Slice) -> None:
        failures = 0
        while part.start + part.received < part.end:
            try:
                chunk = self._read(part)
            except TransientError as exc:
                if self._closed:
                    return
                failures += 1
                if failures >= SLICE_ATTEMPTS:
                    raise TransientError(
                        f"{self._where}: the slice at byte {part.start} failed {failures} "
                        f"times ({part.received} of {part.end - part.start} bytes read): {exc}"
                    ) from exc
                continue
            if self._closed:
                return
            with self._cond:
                part.chunks.append(chunk)
                part.received += len(chunk)
                self._cond.notify_all()
        with self._cond:
            part.done = True
            self._cond.notify_all()

    def _read(self, part: _Slice) -> bytes:
        """The slice's next bytes, reopening it where it stopped; TransientError if it broke."""
        if part.response is None:
            part.response = self._request(part.start + part.received, part.end)
        try:
            chunk: bytes = part.response.raw.read(READ_SIZE, decode_content=False)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            part.response.close()
            part.response = None
            raise TransientError(f"connection broke: {exc}") from exc
        if not chunk:
            part.response.close()
            part.response = None
            raise TransientError("the response ended early")
        return chunk[: part.end - part.start - part.received]


def worth_slicing(waited: float, elapsed: float, received: int) -> bool:
    """Whether a stream that delivered `received` bytes in `elapsed` seconds, `waited` of
    them spent by the reader waiting for bytes, would go faster as parallel ranged reads.

    Only if the reader waits on the network for most of the time (slices can make it at
    most 1 / (1 - waited share) faster), and the bytes it waited for came slowly enough
    that their connection, not this machine, is the limit."""
    return waited >= SLICE_WHEN_WAITING * elapsed and received < FAST_STREAM * waited


class AdaptiveDownload(Download):
    """A large object: one stream, going on in slices if the network is what holds it up.

    The reads are timed in windows of `window_bytes`. As soon as one window shows that
    the connection is not what holds the reader up (`worth_slicing`), the one stream
    goes on, with no threads and no read-ahead: slices would only take CPU and memory
    from the unpacker. If `PROBE_WINDOWS` windows in a row show that it is, the rest is
    fetched as parallel ranged reads, the open response becoming the first.
    `window_bytes` 0 slices from the first byte."""

    def __init__(
        self,
        response: requests.Response,
        where: str,
        size: int,
        crc32c: str | None,
        md5: str | None,
        window_bytes: int,
        slices_from: Callable[[int, requests.Response], SliceFetcher],
    ) -> None:
        super().__init__(response, where, crc32c, md5)
        self.size = size
        self._window_bytes = window_bytes
        self._slices_from = slices_from
        self._fetcher: SliceFetcher | None = None
        self._deciding = window_bytes > 0
        self._probe_started = 0.0
        self._window_started: float | None = None
        self._window_received = 0
        self._waited = 0.0
        self._windows = 0
        self.waiting_share: float | None = None  # of the last window timed; None until then
        if window_bytes == 0:
            self._fetcher = slices_from(0, response)

    @property
    def sliced(self) -> bool:
        return self._fetcher is not None

    def _next(self, amount: int) -> bytes:
        if self._fetcher is not None:
            return self._fetcher.read(amount)
        started = time.perf_counter()
        chunk = super()._next(amount)
        if self._deciding:
            if self._window_started is None:
                self._window_started = started
                self._probe_started = self._probe_started or started
            self._waited += time.perf_counter() - started
            self._window_received += len(chunk)
            if self._window_received >= self._window_bytes and chunk:
                self._judge_window(self.bytes_read + len(chunk))
        return chunk

    def _judge_window(self, reached: int) -> None:
        assert self._window_started is not None
        now = time.perf_counter()
        elapsed = max(now - self._window_started, 1e-9)
        self.waiting_share = self._waited / elapsed
        self._windows += 1
        held_up = worth_slicing(self._waited, elapsed, self._window_received)
        rate = self._window_received / max(self._waited, 1e-9) / 1e6
        self._window_started, self._window_received, self._waited = None, 0, 0.0
        if held_up and self._windows < PROBE_WINDOWS and reached < (self.size or 0):
            return  # held up so far: time another window
        self._deciding = False
        slicing = held_up and reached < (self.size or 0)
        log.info(
            "%s: its first %d bytes took %.3f s; of the last %d, %.0f%% of the time went "
            "waiting for them (%d MB/s while waited for): %s",
            self.where,
            reached,
            now - self._probe_started,
            self._window_bytes,
            100 * self.waiting_share,
            rate,
            "slices for the rest" if slicing else "one stream for the rest",
        )
        if slicing:
            self._fetcher = self._slices_from(reached, self._response)

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
        super().close()
