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

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
import urllib3.exceptions

from receiver.errors import TransientError

READ_SIZE = 512 * 1024
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
