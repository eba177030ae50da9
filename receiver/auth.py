"""Verify the OIDC token Pub/Sub signs and sends with every authenticated push.

The signature, algorithm (RS256 only), `iat`/`exp` (allowing 60 s of clock skew either way)
and the token's shape are checked by `google.auth.jwt.decode`, the same code
`google.oauth2.id_token` uses; its refusals are passed on, except that a key id the certs
do not list and a token out of its time say so in words and ISO 8601 times. We add what it
leaves to the caller: the issuer, the audience (compared here so that a wrong audience is a
403, not a 401) and the sender's email, which must be verified and allow-listed, because
any Google account can mint a token for any audience.

Google's certs are cached by `receiver.certs.CertsCache`. A token whose signature was
checked is remembered (by its SHA-256, never the token itself) until it expires, so a
sender that reuses its token costs one RSA check; issuer, audience, sender and expiry are
checked every time.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from google.auth import exceptions as google_auth_errors
from google.auth import jwt

from receiver.certs import CertsCache
from receiver.errors import ForbiddenError, UnauthenticatedError

log = logging.getLogger(__name__)

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
CLOCK_SKEW_SECONDS = 60  # tolerate small clock differences between Google and this host
_VERIFIED_TOKENS_KEPT = 256


@dataclass(frozen=True)
class Sender:
    """Who sent an authenticated push."""

    email: str


class PushVerifier:
    """Checks a push request's `Authorization` header; `verify` returns the sender."""

    def __init__(self, certs: CertsCache, audience: str, allowed_senders: frozenset[str]) -> None:
        self._certs = certs
        self._audience = audience
        self._allowed_senders = allowed_senders
        self._signed = _SignedTokens(_VERIFIED_TOKENS_KEPT)

    def verify(self, authorization: str | None) -> Sender:
        token = _bearer_token(authorization)
        claims = self._signed.get(token)
        if claims is None:
            claims = self._decode(token)
            self._signed.add(token, claims)
        return self._check_claims(claims)

    def _decode(self, token: str) -> Mapping[str, object]:
        """The claims of a token whose signature, algorithm, iat and exp check out."""
        try:
            header = jwt.decode_header(token)
        except (google_auth_errors.GoogleAuthError, ValueError):
            raise UnauthenticatedError(
                "malformed token: not a signed JWT", label="malformed_token"
            ) from None
        kid = header.get("kid") if isinstance(header, dict) else None
        certs = self._certs.get(kid if isinstance(kid, str) else None)
        if isinstance(kid, str) and kid not in certs:
            raise UnauthenticatedError(
                f"token signed by an unknown key: key id {kid[:64]!r} is not in the certs "
                f"at {self._certs.url}",
                label="invalid_token",
            )
        try:
            # audience=None: the audience is compared below, so that a mismatch is a 403.
            claims: Mapping[str, object] = jwt.decode(
                token, certs=certs, audience=None, clock_skew_in_seconds=CLOCK_SKEW_SECONDS
            )
        except (google_auth_errors.GoogleAuthError, ValueError) as exc:
            raise UnauthenticatedError(
                _time_message(exc, token) or f"invalid token: {_safe_message(exc, token)}",
                label="invalid_token",
            ) from None
        except TypeError:  # google-auth does arithmetic on iat and exp as they come
            raise UnauthenticatedError(
                "invalid token: its iat and exp claims are not numbers", label="invalid_token"
            ) from None
        return claims

    def _check_claims(self, claims: Mapping[str, object]) -> Sender:
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise ForbiddenError(
                f"token issuer {claims.get('iss')!r} is not Google", label="wrong_issuer"
            )
        if claims.get("aud") != self._audience:
            raise ForbiddenError(
                f"token audience {claims.get('aud')!r} is not RECEIVER_AUDIENCE {self._audience!r}",
                label="wrong_audience",
            )
        email = claims.get("email")
        if not isinstance(email, str) or email not in self._allowed_senders:
            raise ForbiddenError(
                f"sender {email!r} is not in RECEIVER_ALLOWED_SENDERS", label="sender_not_allowed"
            )
        if claims.get("email_verified") is not True:
            raise ForbiddenError(
                f"sender {email!r} has no verified email claim", label="email_unverified"
            )
        return Sender(email=email)


class _SignedTokens:
    """Claims of tokens whose signature was checked, by the token's SHA-256, until `exp`."""

    def __init__(self, size: int, clock: Callable[[], float] = time.time) -> None:
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._claims: OrderedDict[bytes, Mapping[str, object]] = OrderedDict()

    def get(self, token: str) -> Mapping[str, object] | None:
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            claims = self._claims.get(key)
            if claims is None:
                return None
            expires = claims.get("exp")
            if not isinstance(expires, int | float) or self._clock() > expires + CLOCK_SKEW_SECONDS:
                del self._claims[key]  # decoded again, google-auth then says why it fails
                return None
            self._claims.move_to_end(key)
            return claims

    def add(self, token: str, claims: Mapping[str, object]) -> None:
        with self._lock:
            self._claims[hashlib.sha256(token.encode()).digest()] = claims
            while len(self._claims) > self._size:
                self._claims.popitem(last=False)


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise UnauthenticatedError("missing Authorization header", label="missing_token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError(
            "Authorization header is not 'Bearer <token>'", label="not_bearer"
        )
    return token.strip()


def _time_message(exc: Exception, token: str) -> str | None:
    """For a token whose signature checked out but whose time is up (or not yet come),
    the times in ISO 8601, as people compare them with a clock; else None.

    google-auth checks the signature first, so only then do these messages occur, and
    the claims quoted come from a token that is genuinely signed.
    """
    message = str(exc)
    if not message.startswith(("Token expired", "Token used too early")):
        return None
    claims = jwt.decode(token, verify=False)
    allowance = f"now {_iso(time.time())}; {CLOCK_SKEW_SECONDS} s clock skew allowed"
    if message.startswith("Token expired"):
        return f"token expired at {_iso(claims['exp'])} ({allowance})"
    return f"token not valid until {_iso(claims['iat'])} ({allowance})"


def _iso(seconds: float) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, ValueError, OSError):  # a claim far beyond any calendar
        return f"{seconds} (Unix time)"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _safe_message(exc: Exception, token: str) -> str:
    """google-auth's message, unless it would echo any part of the token."""
    message = str(exc)
    if any(part and part in message for part in token.split(".")):
        return "token could not be decoded"
    return message[:200]
