"""The checksumming stream: one object's bytes, counted and checked as they are read.

Whether the bytes come from one response (`Download`) or from slices
(`receiver.download.sliced`), the crc32c (or md5) and the length are checked the same
way, over the bytes exactly as stored, once the consumer has read them all.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import google_crc32c
import requests
import urllib3.exceptions

from receiver.errors import TransientError

READ_SIZE = 512 * 1024  # one read size for one stream and for slices


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
        chunk = self._next(READ_SIZE if size is None or size < 0 else size)
        self._crc32c.update(chunk)
        if self._md5 is not None:
            self._md5.update(chunk)
        self.bytes_read += len(chunk)
        return chunk

    def drain(self) -> None:
        """Read what the consumer left (tar padding), so the checksum covers every byte."""
        while self.read(READ_SIZE):
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
