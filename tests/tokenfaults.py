"""Every way a push's token can be refused, written once: the Authorization header that
shows it, the status it gets and the reason it reads. tests/test_auth.py drives each
through `PushVerifier`, tests/test_web.py through the app, and tests/test_docs.py
checks the troubleshooting page lists each reason as printed."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.auth import crypt, jwt

from receiver.dev.keys import DevSigner
from tests.helpers import b64, good_claims, unsigned_token

Mint = Callable[..., str]  # the `token` fixture: a real signed token, claims overridden
_ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@dataclass(frozen=True)
class TokenFault:
    header: Callable[[Mint, DevSigner], str | None]  # None: no Authorization header
    status: int
    reason: str  # a regular expression the refusal's reason matches in full


def _with_kid(token: str, kid: str) -> str:
    return b64(json.dumps({"alg": "RS256", "kid": kid}).encode()) + token[token.index(".") :]


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    claims = b64(json.dumps({**good_claims(), "email": "attacker@x.com"}).encode())
    return f"{header}.{claims}.{signature}"


def _hs256_keyed_with_the_certificate(signer: DevSigner) -> str:
    """The classic algorithm-confusion attack: HMAC keyed with the published certificate."""
    certificate = json.loads(signer.certs_path.read_text())[signer.kid].encode()
    signing_input = unsigned_token({"alg": "HS256", "kid": signer.kid}, good_claims())
    mac = hmac.new(certificate, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _without_expiry(signer: DevSigner) -> str:
    """Signed by the dev key, as Google signs, but with no `exp` claim."""
    claims = {k: v for k, v in good_claims().items() if k != "exp"}
    rsa = crypt.RSASigner.from_string(signer.private_key_pem, key_id=signer.kid)
    token: bytes = jwt.encode(rsa, claims)
    return token.decode()


def _hours(n: int) -> int:
    return int(time.time()) + 3600 * n


TOKEN_FAULTS: dict[str, TokenFault] = {
    "no header": TokenFault(lambda t, s: None, 401, r"missing Authorization header"),
    "empty header": TokenFault(lambda t, s: "", 401, r"missing Authorization header"),
    "basic auth": TokenFault(
        lambda t, s: "Basic dXNlcjpwYXNz", 401, r"Authorization header is not 'Bearer <token>'"
    ),
    "bearer and nothing": TokenFault(
        lambda t, s: "Bearer ", 401, r"Authorization header is not 'Bearer <token>'"
    ),
    "garbage": TokenFault(lambda t, s: "Bearer garbage", 401, r"malformed token: not a signed JWT"),
    "three empty parts": TokenFault(
        lambda t, s: "Bearer a.b.c", 401, r"malformed token: not a signed JWT"
    ),
    "unknown key id": TokenFault(
        lambda t, s: "Bearer " + _with_kid(t(), "not-a-google-key"),
        401,
        r"token signed by an unknown key: key id 'not-a-google-key' is not in the certs at \S+",
    ),
    "tampered claims": TokenFault(
        lambda t, s: "Bearer " + _tampered(t()),
        401,
        r"invalid token: Could not verify token signature\.",
    ),
    "alg none": TokenFault(
        lambda t, s: f"Bearer {unsigned_token({'alg': 'none', 'kid': s.kid}, good_claims())}.",
        401,
        r"invalid token: Unsupported signature algorithm none",
    ),
    "HS256 keyed with the certificate": TokenFault(
        lambda t, s: "Bearer " + _hs256_keyed_with_the_certificate(s),
        401,
        r"invalid token: Unsupported signature algorithm HS256",
    ),
    "expired": TokenFault(
        lambda t, s: "Bearer " + t(iat=_hours(-2), exp=_hours(-1)),
        401,
        rf"token expired at {_ISO} \(now {_ISO}; 60 s clock skew allowed\)",
    ),
    "not yet valid": TokenFault(
        lambda t, s: "Bearer " + t(iat=_hours(1), exp=_hours(2)),
        401,
        rf"token not valid until {_ISO} \(now {_ISO}; 60 s clock skew allowed\)",
    ),
    "expiry not a number": TokenFault(
        lambda t, s: "Bearer " + t(exp="tomorrow"),
        401,
        r"invalid token: its iat and exp claims are not numbers",
    ),
    "no expiry": TokenFault(
        lambda t, s: "Bearer " + _without_expiry(s),
        401,
        r"invalid token: Token does not contain required claim exp",
    ),
    "wrong audience": TokenFault(
        lambda t, s: "Bearer " + t(aud="https://elsewhere.example.com/"),
        403,
        r"token audience 'https://elsewhere\.example\.com/' is not RECEIVER_AUDIENCE '\S+'",
    ),
    "wrong issuer": TokenFault(
        lambda t, s: "Bearer " + t(iss="https://login.example.com"),
        403,
        r"token issuer 'https://login\.example\.com' is not Google",
    ),
    "sender not allowed": TokenFault(
        lambda t, s: "Bearer " + t(email="someone@else.iam.gserviceaccount.com"),
        403,
        r"sender 'someone@else\.iam\.gserviceaccount\.com' is not in RECEIVER_ALLOWED_SENDERS",
    ),
    "email unverified": TokenFault(
        lambda t, s: "Bearer " + t(email_verified=False),
        403,
        r"sender '\S+' has no verified email claim",
    ),
    "email verified as a string": TokenFault(
        lambda t, s: "Bearer " + t(email_verified="true"),
        403,
        r"sender '\S+' has no verified email claim",
    ),
}
