"""Cloud Storage access: stream one pinned object generation, checking its checksum.

Downloads bypass `Blob.download_to_filename` (measured here at 10-12x slower than curl
on a 500 MB object): the media is read over the client's own HTTP session in 512 KiB
chunks, its bytes fed to the caller (the unpacker) and to google-crc32c as they arrive,
so memory stays flat and the checksum costs almost nothing. `Accept-Encoding: gzip` and
`decode_content=False` keep the bytes exactly as stored, which is what the checksums cover;
an object stored gzip-encoded says so in `content_encoding`, and `compression.content_decoded`
removes that layer after the checksum has seen the bytes.

Third-party exceptions stop here: they become `TransientError` (worth a retry) or
`PermanentError` (the object generation is gone, or we may not read it).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, NoReturn
from urllib.parse import quote

import google.auth
import google_crc32c
import requests
import requests.adapters
import urllib3.exceptions
from google.api_core import exceptions as google_exceptions
from google.cloud import storage

from receiver.config import Slicing
from receiver.errors import PermanentError, TransientError
from receiver.objectref import ObjectRef
from receiver.sliced import READ_SIZE, SliceFetcher

log = logging.getLogger(__name__)

CHUNK_SIZE = READ_SIZE  # one read size for one stream and for slices
_READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
ONE_STREAM = Slicing(slices=1)  # tools and tests; the receiver passes its settings' own
PROBE_SLICES = 2  # slices' worth read as one stream and timed before slicing is decided
SLICE_WHEN_WAITING = 0.5  # share of that time spent waiting for bytes that calls for slices
# Bytes arriving this fast while the reader waits are held back by this machine, not by
# their connection: on loopback (0.8-3 GB/s) slices made installs slower. One Cloud
# Storage stream gives less.
FAST_STREAM = 512 * 1024 * 1024  # bytes/s


class ObjectStore:
    """Reads objects from Cloud Storage (or the emulator named by STORAGE_EMULATOR_HOST)."""

    def __init__(
        self,
        client: storage.Client,
        session: requests.Session,
        read_timeout: float = 60,
        slicing: Slicing = ONE_STREAM,
    ) -> None:
        self.client = client
        self._session = session
        self._timeout = (10.0, read_timeout)  # connect; longest silence between two reads
        self._slicing = slicing
        # One pooled connection per slice (requests keeps 10 per host by default).
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(slicing.slices, 10) * 2)
        session.mount("https://", adapter)
        session.mount("http://", adapter)

    @classmethod
    def from_environment(
        cls, read_timeout: float = 60, slicing: Slicing = ONE_STREAM
    ) -> ObjectStore:
        """Application Default Credentials, or anonymous access to the storage emulator."""
        session: requests.Session
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            session = requests.Session()
        else:
            from google.auth.transport.requests import AuthorizedSession

            credentials, _ = google.auth.default(scopes=[_READ_ONLY_SCOPE])
            session = AuthorizedSession(credentials)
        return cls(storage.Client(_http=session), session, read_timeout, slicing)

    def list_objects(self, bucket: str, prefix: str) -> list[ObjectRef]:
        """Every live object under `prefix`, at its current generation."""
        try:
            blobs = list(
                self.client.list_blobs(bucket, prefix=prefix, timeout=self._timeout, retry=None)
            )
        except (google_exceptions.GoogleAPICallError, requests.RequestException) as exc:
            status = getattr(exc, "code", None)
            if isinstance(status, int) and status in (401, 403, 404):
                raise PermanentError(f"cannot list gs://{bucket}/{prefix}: {exc}") from exc
            raise TransientError(f"cannot list gs://{bucket}/{prefix}: {exc}") from exc
        return [
            ObjectRef(
                bucket=bucket,
                name=blob.name,
                generation=int(blob.generation),
                size=blob.size,
                md5=blob.md5_hash,
                crc32c=blob.crc32c,
            )
            for blob in blobs
        ]

    def media_url(self, bucket: str, name: str, generation: int) -> str:
        return (
            f"{self.client.api_endpoint}/download/storage/v1/b/{quote(bucket, safe='')}"
            f"/o/{quote(name, safe='')}?alt=media&generation={generation}"
        )

    def open(self, obj: ObjectRef) -> ObjectStream:
        """Start streaming exactly this generation; its checksums are checked at the end.

        Objects of at least `slicing.threshold` bytes may go on as parallel ranged reads
        (`AdaptiveDownload`); the first request asks for every byte either way."""
        url = self.media_url(obj.bucket, obj.name, obj.generation)
        size = obj.size or 0
        may_slice = self._slicing.enabled and size >= self._slicing.threshold
        response = self._get(url, {"Range": "bytes=0-"} if may_slice else {})
        if response.status_code == 206:
            _check_range(response, 0, obj.url)
            # The generation's own length, should the event have carried a wrong size.
            total = response.headers["Content-Range"].rpartition("/")[2]
            size = int(total) if total.isdigit() else size
        elif response.status_code != 200:  # 200 to a range: a server without ranges
            response.close()
            _raise_for_status(response.status_code, obj.url)
        stored = _parse_goog_hash(response.headers.get("X-Goog-Hash", ""))
        crc32c = obj.crc32c or stored.get("crc32c")
        md5 = None if crc32c else (obj.md5 or stored.get("md5"))
        if response.status_code == 200:
            return Download(response, where=obj.url, crc32c=crc32c, md5=md5)

        def slices_from(start: int, first: requests.Response) -> SliceFetcher:
            log.info(
                "reading %s (%d bytes) from byte %d on as ranged reads of %d bytes, %d at a time",
                obj.url,
                size,
                start,
                self._slicing.slice_bytes,
                self._slicing.slices,
            )
            return SliceFetcher(
                lambda begin, end: self._ranged_get(url, obj.url, begin, end),
                where=obj.url,
                size=size,
                slices=self._slicing.slices,
                slice_bytes=self._slicing.slice_bytes,
                first=first,
                start=start,
            )

        probe_bytes = PROBE_SLICES * self._slicing.slice_bytes if self._slicing.adaptive else 0
        return AdaptiveDownload(response, obj.url, size, crc32c, md5, probe_bytes, slices_from)

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        try:
            return self._session.get(
                url,
                stream=True,
                timeout=self._timeout,
                headers={"Accept-Encoding": "gzip", **headers},
            )
        except requests.RequestException as exc:
            raise TransientError(f"cannot reach Cloud Storage: {exc}") from exc

    def _ranged_get(self, url: str, where: str, start: int, end: int) -> requests.Response:
        """A 206 response for bytes [start, end) of the pinned generation, or it raises."""
        response = self._get(url, {"Range": f"bytes={start}-{end - 1}"})
        _check_range(response, start, where)
        return response


def _check_range(response: requests.Response, start: int, where: str) -> None:
    if response.status_code == 206:
        answered = response.headers.get("Content-Range", "")
        if answered.startswith(f"bytes {start}-"):
            return
        response.close()
        raise TransientError(f"{where}: asked for bytes from {start}, got {answered!r}")
    response.close()
    if response.status_code == 200:
        raise TransientError(f"{where}: Cloud Storage ignored a range request")
    _raise_for_status(response.status_code, where)


def _raise_for_status(status: int, where: str) -> NoReturn:
    if status == 404:
        raise PermanentError(f"{where} does not exist (deleted or overwritten)")
    if status in (401, 403):
        raise PermanentError(
            f"{where}: permission denied (HTTP {status}); grant the receiver's service "
            "account roles/storage.objectViewer on the bucket, then retry the job"
        )
    if status in _RETRYABLE_STATUS:
        raise TransientError(f"{where}: Cloud Storage answered HTTP {status}")
    raise PermanentError(f"{where}: Cloud Storage answered HTTP {status}")


def _parse_goog_hash(header: str) -> dict[str, str]:
    """`X-Goog-Hash: crc32c=AAAAAA==,md5=...` -> {"crc32c": ..., "md5": ...}."""
    hashes = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if value:
            hashes[name] = value
    return hashes


class ObjectStream:
    """A file-like, read-only stream of one object's bytes that checksums what it yields.

    Subclasses say where the bytes come from (`_next`); counting, checksums and the
    final check are the same for one stream and for slices."""

    def __init__(self, where: str, size: int | None, crc32c: str | None, md5: str | None) -> None:
        self.where = where
        self.size = size
        self._expected_crc32c = crc32c
        self._expected_md5 = md5
        self._crc32c = google_crc32c.Checksum()
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self.bytes_read = 0
        # As served, which (asking with Accept-Encoding: gzip) is as stored: "gzip" for an
        # object uploaded with `gcloud storage cp -Z`. The bytes read are still encoded.
        self.content_encoding: str | None = None

    def _next(self, amount: int) -> bytes:
        raise NotImplementedError

    def read(self, size: int = -1) -> bytes:
        chunk = self._next(CHUNK_SIZE if size is None or size < 0 else size)
        self._crc32c.update(chunk)
        if self._md5 is not None:
            self._md5.update(chunk)
        self.bytes_read += len(chunk)
        return chunk

    def drain(self) -> None:
        """Read what the consumer left (tar padding), so the checksum covers every byte."""
        while self.read(CHUNK_SIZE):
            pass

    def verify(self) -> None:
        """Raise `TransientError` unless every byte arrived and matches the object's checksum."""
        self.drain()
        if self.size is not None and self.bytes_read != self.size:
            raise TransientError(
                f"{self.where}: got {self.bytes_read} of {self.size} bytes (truncated download)"
            )
        if self._expected_crc32c:
            actual = base64.b64encode(self._crc32c.digest()).decode()
            if actual != self._expected_crc32c:
                raise TransientError(
                    f"{self.where}: crc32c mismatch (expected {self._expected_crc32c}, "
                    f"got {actual})"
                )
        elif self._md5 is not None and self._expected_md5:
            actual = base64.b64encode(self._md5.digest()).decode()
            if actual != self._expected_md5:
                raise TransientError(
                    f"{self.where}: md5 mismatch (expected {self._expected_md5}, got {actual})"
                )

    @property
    def sliced(self) -> bool:
        """Whether the bytes come, or go on to come, as parallel ranged reads."""
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class Download(ObjectStream):
    """One HTTP response's body, read as it arrives."""

    def __init__(
        self, response: requests.Response, where: str, crc32c: str | None, md5: str | None
    ) -> None:
        size = int(response.headers.get("Content-Length", 0)) or None
        super().__init__(where, size, crc32c, md5)
        self._response = response
        self.content_encoding = response.headers.get("Content-Encoding")

    def _next(self, amount: int) -> bytes:
        try:
            chunk: bytes = self._response.raw.read(amount, decode_content=False)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise TransientError(
                f"{self.where}: download broke off after {self.bytes_read} bytes: {exc}"
            ) from exc
        return chunk

    def close(self) -> None:
        self._response.close()


def worth_slicing(waited: float, elapsed: float, received: int) -> bool:
    """Whether a stream that delivered `received` bytes in `elapsed` seconds, `waited` of
    them spent by the reader waiting for bytes, would go faster as parallel ranged reads.

    Only if the reader waits on the network for most of the time (slices can make it at
    most 1 / (1 - waited share) faster), and the bytes it waited for came slowly enough
    that their connection, not this machine, is the limit."""
    return waited >= SLICE_WHEN_WAITING * elapsed and received < FAST_STREAM * waited


class AdaptiveDownload(Download):
    """A large object: one stream, going on in slices if the network is what holds it up.

    The reads of the first `probe_bytes` are timed; if `worth_slicing` says the
    connection is what holds the reader up, the rest is fetched as parallel ranged reads,
    the open response becoming the first. Otherwise the one stream goes on, with no
    threads and no read-ahead: slices would only take CPU and memory from the unpacker.
    `probe_bytes` 0 slices from the first byte."""

    def __init__(
        self,
        response: requests.Response,
        where: str,
        size: int,
        crc32c: str | None,
        md5: str | None,
        probe_bytes: int,
        slices_from: Callable[[int, requests.Response], SliceFetcher],
    ) -> None:
        super().__init__(response, where, crc32c, md5)
        self.size = size
        self._probe_bytes = probe_bytes
        self._slices_from = slices_from
        self._fetcher: SliceFetcher | None = None
        self._probe_started: float | None = None
        self._waited = 0.0
        self.waiting_share: float | None = None  # of the probe's time; None until measured
        if probe_bytes == 0:
            self._fetcher = slices_from(0, response)

    @property
    def sliced(self) -> bool:
        return self._fetcher is not None

    def _next(self, amount: int) -> bytes:
        if self._fetcher is not None:
            return self._fetcher.read(amount)
        started = time.perf_counter()
        chunk = super()._next(amount)
        if self.waiting_share is None:
            self._probe_started = self._probe_started or started
            self._waited += time.perf_counter() - started
            reached = self.bytes_read + len(chunk)
            if reached >= self._probe_bytes and chunk:
                self._decide(reached)
        return chunk

    def _decide(self, reached: int) -> None:
        elapsed = max(time.perf_counter() - (self._probe_started or 0.0), 1e-9)
        self.waiting_share = self._waited / elapsed
        slicing = worth_slicing(self._waited, elapsed, reached) and reached < (self.size or 0)
        log.info(
            "%s: its first %d bytes took %.3f s, %.0f%% of it waiting for them (%d MB/s "
            "while waited for): %s",
            self.where,
            reached,
            elapsed,
            100 * self.waiting_share,
            reached / max(self._waited, 1e-9) / 1e6,
            "slices for the rest" if slicing else "one stream for the rest",
        )
        if slicing:
            self._fetcher = self._slices_from(reached, self._response)

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
        super().close()
