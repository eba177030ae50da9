"""Token verification, with real RS256 tokens and a real local certs endpoint."""

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate

from receiver.auth import CertsCache, PushVerifier, _SignedTokens
from receiver.dev.keys import DEV_SENDER
from receiver.errors import AuthUnavailableError, ForbiddenError, UnauthenticatedError
from tests.helpers import AUDIENCE, b64, good_claims, serve_in_thread, unsigned_token


@pytest.fixture
def verifier(certs_endpoint):
    return PushVerifier(CertsCache(certs_endpoint.url), AUDIENCE, frozenset({DEV_SENDER}))


def test_a_good_token_names_its_sender(verifier, token):
    assert verifier.verify(f"Bearer {token()}").email == DEV_SENDER


def test_legacy_issuer_is_accepted(verifier, token):
    assert verifier.verify(f"Bearer {token(iss='accounts.google.com')}").email == DEV_SENDER


def test_hs256_signed_with_the_public_key_is_refused(verifier, signer):
    # The classic algorithm-confusion attack: HMAC keyed with the published certificate.
    certificate = json.loads(signer.certs_path.read_text())[signer.kid]
    public_pem = (
        load_pem_x509_certificate(certificate.encode())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = unsigned_token({"alg": "HS256", "kid": signer.kid}, good_claims())
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(UnauthenticatedError):
        verifier.verify(f"Bearer {signing_input}.{b64(mac)}")


def test_alg_none_is_refused(verifier, signer):
    forged = unsigned_token({"alg": "none", "kid": signer.kid}, good_claims()) + "."
    with pytest.raises(UnauthenticatedError):
        verifier.verify(f"Bearer {forged}")


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, "missing Authorization header"),
        ("", "missing Authorization header"),
        ("Basic dXNlcjpwYXNz", "not 'Bearer <token>'"),
        ("Bearer ", "not 'Bearer <token>'"),
        ("Bearer garbage", "malformed token"),
        ("Bearer a.b.c", "malformed token"),
    ],
)
def test_missing_or_malformed_tokens_are_401(verifier, header, error):
    with pytest.raises(UnauthenticatedError, match=error):
        verifier.verify(header)


def test_tampered_claims_fail_the_signature(verifier, token):
    header, _, signature = token().split(".")
    forged_claims = b64(json.dumps({**good_claims(), "email": "attacker@x.com"}).encode())
    with pytest.raises(UnauthenticatedError, match="signature"):
        verifier.verify(f"Bearer {header}.{forged_claims}.{signature}")


def test_unknown_kid_is_401(verifier, token, signer):
    header, claims, signature = token().split(".")
    other_header = b64(json.dumps({"alg": "RS256", "kid": "not-a-google-key"}).encode())
    with pytest.raises(UnauthenticatedError, match="not-a-google-key"):
        verifier.verify(f"Bearer {other_header}.{claims}.{signature}")


def test_expired_token_is_401(verifier, token):
    now = int(time.time())
    with pytest.raises(UnauthenticatedError, match="expired"):
        verifier.verify(f"Bearer {token(iat=now - 7200, exp=now - 3600)}")


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"aud": "https://someone-else.example.com/"}, "audience"),
        ({"iss": "https://evil.example.com"}, "issuer"),
        ({"email": "stranger@other-project.iam.gserviceaccount.com"}, "not in RECEIVER_ALLOWED"),
        ({"email_verified": False}, "no verified email"),
        ({"email_verified": "true"}, "no verified email"),
    ],
)
def test_valid_tokens_for_someone_else_are_403(verifier, token, claims, error):
    with pytest.raises(ForbiddenError, match=error):
        verifier.verify(f"Bearer {token(**claims)}")


def test_error_messages_never_echo_the_token(verifier, token):
    secret = token()
    mangled = secret[:-10] + "AAAAAAAAAA"
    with pytest.raises(UnauthenticatedError) as error:
        verifier.verify(f"Bearer {mangled}")
    for part in secret.split("."):
        assert part not in str(error.value)


def test_certs_are_fetched_once_for_many_tokens(verifier, token, certs_endpoint):
    for _ in range(200):
        verifier.verify(f"Bearer {token()}")
    assert certs_endpoint.fetches == 1


def test_certs_are_refetched_when_max_age_runs_out(certs_endpoint, token):
    now = [1000.0]
    certs_endpoint.max_age = 10
    cache = CertsCache(certs_endpoint.url, clock=lambda: now[0])
    verifier = PushVerifier(cache, AUDIENCE, frozenset({DEV_SENDER}))
    verifier.verify(f"Bearer {token(jti='1')}")  # distinct tokens: none is remembered
    now[0] += 9
    verifier.verify(f"Bearer {token(jti='2')}")
    assert certs_endpoint.fetches == 1
    now[0] += 2
    verifier.verify(f"Bearer {token(jti='3')}")
    assert certs_endpoint.fetches == 2


def test_unknown_kid_refreshes_at_most_once_a_minute(certs_endpoint):
    now = [1000.0]
    cache = CertsCache(certs_endpoint.url, clock=lambda: now[0])
    cache.get("a")
    for _ in range(50):
        cache.get("rotated-key")
    assert certs_endpoint.fetches == 1
    now[0] += 61
    cache.get("rotated-key")
    assert certs_endpoint.fetches == 2


def test_unreachable_certs_endpoint_is_transient_not_401(token):
    cache = CertsCache("http://127.0.0.1:9/certs")
    verifier = PushVerifier(cache, AUDIENCE, frozenset({DEV_SENDER}))
    with pytest.raises(AuthUnavailableError):
        verifier.verify(f"Bearer {token()}")


def test_cached_certs_keep_serving_when_a_refresh_fails(certs_endpoint, token):
    now = [1000.0]
    certs_endpoint.max_age = 10
    verifier = PushVerifier(
        CertsCache(certs_endpoint.url, clock=lambda: now[0]), AUDIENCE, frozenset({DEV_SENDER})
    )
    verifier.verify(f"Bearer {token()}")
    certs_endpoint.failing = True
    now[0] += 3600
    assert verifier.verify(f"Bearer {token()}").email == DEV_SENDER


def test_a_failing_endpoint_is_asked_once_a_minute_however_many_unknown_kids(certs_endpoint):
    now = [1000.0]
    cache = CertsCache(certs_endpoint.url, clock=lambda: now[0])
    held = dict(cache.get(None))
    certs_endpoint.failing = True
    now[0] += 61
    for n in range(100):  # forged pushes, each naming a key Google never had
        assert cache.get(f"forged-{n}") == held
    assert certs_endpoint.fetches == 2
    now[0] += 61
    cache.get("forged")
    assert certs_endpoint.fetches == 3


def test_with_no_certs_a_failing_endpoint_is_asked_once_per_retry_interval(certs_endpoint):
    now = [1000.0]
    certs_endpoint.failing = True
    cache = CertsCache(certs_endpoint.url, clock=lambda: now[0])
    for _ in range(100):
        with pytest.raises(AuthUnavailableError, match="HTTP 500"):
            cache.get("forged")
    assert certs_endpoint.fetches == 1
    now[0] += 5
    with pytest.raises(AuthUnavailableError):
        cache.get("forged")
    assert certs_endpoint.fetches == 2
    certs_endpoint.failing = False
    now[0] += 5
    assert cache.get(None)  # recovers as soon as the endpoint does


class HeldCertsEndpoint:
    """A certs endpoint that fails, and holds each request until `release` is set."""

    def __init__(self) -> None:
        self.fetches = 0
        self.arrived = threading.Event()
        self.release = threading.Event()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.fetches += 1
                endpoint.arrived.set()
                endpoint.release.wait(30)
                self.send_error(503)

            def log_message(self, *args: object) -> None:
                pass

        self.server = serve_in_thread(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"


@pytest.fixture
def held_endpoint() -> Iterator[HeldCertsEndpoint]:
    endpoint = HeldCertsEndpoint()
    yield endpoint
    endpoint.release.set()
    endpoint.server.shutdown()
    endpoint.server.server_close()


def test_pushes_that_wait_for_a_fetch_share_its_outcome(held_endpoint):
    cache = CertsCache(held_endpoint.url)
    failures: list[Exception] = []

    def push() -> None:
        try:
            cache.get("forged")
        except AuthUnavailableError as exc:
            failures.append(exc)

    pushes = [threading.Thread(target=push) for _ in range(20)]
    for thread in pushes:
        thread.start()
    assert held_endpoint.arrived.wait(30)
    held_endpoint.release.set()
    for thread in pushes:
        thread.join()
    assert len(failures) == 20
    assert held_endpoint.fetches == 1


def test_a_token_with_a_cached_key_does_not_wait_for_a_refresh(certs_endpoint, signer):
    now = [1000.0]
    cache = CertsCache(certs_endpoint.url, clock=lambda: now[0])
    cache.get(signer.kid)
    held = HeldCertsEndpoint()
    refreshed = threading.Event()

    def forged_push() -> None:
        cache.get("forged")
        refreshed.set()

    try:
        cache._url = held.url  # the endpoint now hangs: a refresh for a forged kid waits on it
        now[0] += 61
        forged = threading.Thread(target=forged_push)
        forged.start()
        assert held.arrived.wait(30)
        assert signer.kid in cache.get(signer.kid)
        assert not refreshed.is_set()  # answered while the refresh still hung
    finally:
        held.release.set()
        forged.join()
        held.server.shutdown()
        held.server.server_close()


def test_certs_from_a_file_url(signer, token):
    verifier = PushVerifier(CertsCache(signer.certs_url), AUDIENCE, frozenset({DEV_SENDER}))
    assert verifier.verify(f"Bearer {token()}").email == DEV_SENDER


# --- Tokens remembered after their signature checked out ------------------------------


def test_a_remembered_token_does_not_vouch_for_a_copy_with_another_signature(verifier, token):
    good = token()
    verifier.verify(f"Bearer {good}")
    header, payload, _ = good.split(".")
    forged = f"{header}.{payload}.{b64(b'another signature' * 8)}"
    with pytest.raises(UnauthenticatedError, match="invalid token"):
        verifier.verify(f"Bearer {forged}")


def test_a_remembered_token_still_meets_the_sender_rules_every_time(certs_endpoint, token):
    verifier = PushVerifier(CertsCache(certs_endpoint.url), AUDIENCE, frozenset({"x@y.z"}))
    reused = token()
    for _ in range(2):
        with pytest.raises(ForbiddenError, match="not in RECEIVER_ALLOWED_SENDERS"):
            verifier.verify(f"Bearer {reused}")


def test_remembered_tokens_are_forgotten_once_expired_and_when_crowded_out():
    now = [1000.0]
    signed = _SignedTokens(size=2, clock=lambda: now[0])
    signed.add("a", {"exp": 1100})
    assert signed.get("a") == {"exp": 1100}
    now[0] = 1100 + 61  # past exp and the clock skew allowed
    assert signed.get("a") is None
    for name in ("b", "c", "d"):
        signed.add(name, {"exp": 5000})
    assert signed.get("b") is None and signed.get("d") == {"exp": 5000}
