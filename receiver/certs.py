"""Google's token-signing certificates, fetched sparingly and kept while they are valid.

Caching: `google.oauth2.id_token.verify_token` fetches Google's certs on every call.
`CertsCache` keeps them for the response's Cache-Control max-age and refetches early only
when a token names an unknown key id, at most once a minute (counting attempts, so a
failing endpoint is not asked again for every forged push). If a refresh fails while older
certs are held, they keep serving; with no certs at all the push gets a 503 (Pub/Sub
retries), never a 401.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests

from receiver.errors import AuthUnavailableError

log = logging.getLogger(__name__)

_DEFAULT_MAX_AGE = 60.0  # when the certs response says nothing about caching
_UNKNOWN_KID_REFRESH_INTERVAL = 60.0
_FAILED_REFRESH_INTERVAL = 5.0  # with no certs at all: each push is a 503 until one works
_MAX_AGE_RE = re.compile(r"max-age=(\d+)")


class CertsCache:
    """Google's signing certificates ({kid: PEM}), fetched once and cached by max-age.

    Refreshes are limited by attempt, not by success: while the endpoint fails, pushes
    naming an unknown key id (anyone can send those) cause one fetch a minute, and with
    no certs at all one fetch every few seconds, the rest answered from the last failure.
    One fetch runs at a time and everyone who waited for it takes its result; tokens whose
    key is cached and fresh never wait for a fetch at all.
    """

    def __init__(
        self,
        url: str,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._session = session or requests.Session()
        self._clock = clock
        self._fetching = threading.Lock()
        # Replaced whole, never changed in place: readers without the lock see one or the other.
        self._certs: dict[str, str] = {}
        self._expires_at = 0.0
        self._attempts = 0  # fetches finished, whatever their outcome
        self._attempted_at: float | None = None
        self._failure: AuthUnavailableError | None = None  # the last attempt's, if it failed

    @property
    def url(self) -> str:
        return self._url

    def get(self, kid: str | None) -> Mapping[str, str]:
        """The current certs, refreshed if expired or if `kid` is unknown (rate-limited)."""
        certs = self._certs
        if self._clock() < self._expires_at and (kid is None or kid in certs):
            return certs
        attempts_seen = self._attempts
        with self._fetching:
            if self._attempts == attempts_seen and self._refresh_due(kid):
                self._refresh()
            if not self._certs and self._failure is not None:
                raise self._failure
            return self._certs

    def _refresh_due(self, kid: str | None) -> bool:
        now = self._clock()
        if self._attempted_at is None:
            return True
        since = now - self._attempted_at
        if now >= self._expires_at:
            return self._failure is None or since >= _FAILED_REFRESH_INTERVAL
        unknown_kid = kid is not None and kid not in self._certs
        return unknown_kid and since >= _UNKNOWN_KID_REFRESH_INTERVAL

    def _refresh(self) -> None:
        try:
            certs, max_age = self._fetch()
        except AuthUnavailableError as exc:
            self._failure = exc
            if self._certs:
                log.warning("could not refresh certs from %s; using the cached ones", self._url)
                self._expires_at = self._clock() + _DEFAULT_MAX_AGE
        else:
            self._failure = None
            self._certs = certs
            self._expires_at = self._clock() + max_age
        finally:
            # Counted when the fetch ends, so a fetch that hung does not make the next due.
            self._attempted_at = self._clock()
            self._attempts += 1

    def _fetch(self) -> tuple[dict[str, str], float]:
        if self._url.startswith("file://"):
            path = Path(unquote(urlparse(self._url).path))
            try:
                return _parse_certs(path.read_bytes(), self._url), _DEFAULT_MAX_AGE
            except OSError as exc:
                raise AuthUnavailableError(f"cannot read certs file {path}: {exc}") from exc
        try:
            response = self._session.get(self._url, timeout=10)
        except requests.RequestException as exc:
            raise AuthUnavailableError(f"cannot fetch certs from {self._url}: {exc}") from exc
        if response.status_code != 200:
            raise AuthUnavailableError(
                f"cannot fetch certs from {self._url}: HTTP {response.status_code}"
            )
        return _parse_certs(response.content, self._url), _max_age(response.headers)


def _parse_certs(raw: bytes, url: str) -> dict[str, str]:
    try:
        certs = json.loads(raw)
    except ValueError:
        raise AuthUnavailableError(f"certs at {url} are not JSON") from None
    if not isinstance(certs, dict) or not all(isinstance(v, str) for v in certs.values()):
        raise AuthUnavailableError(f"certs at {url} are not a {{kid: PEM}} map")
    return certs


def _max_age(headers: Mapping[str, str]) -> float:
    cache_control = headers.get("Cache-Control", "")
    if "no-store" in cache_control or "no-cache" in cache_control:
        return 0.0
    match = _MAX_AGE_RE.search(cache_control)
    return float(match.group(1)) if match else _DEFAULT_MAX_AGE
