"""Token verification, with real RS256 tokens and a real local certs endpoint."""

import re
import threading
from collections.abc import Iterator

import pytest

from receiver.auth import PushVerifier, _SignedTokens
from receiver.certs import CertsCache
from receiver.dev.keys import DEV_SENDER, DevSigner
from receiver.errors import AuthUnavailableError, ForbiddenError, UnauthenticatedError
from tests.helpers import AUDIENCE, b64
from tests.stubserver import Reply, Request, StubServer
from tests.tokenfaults import TOKEN_FAULTS


@pytest.fixture
def verifier(certs_endpoint):
    return PushVerifier(CertsCache(certs_endpoint.url), AUDIENCE, frozenset({DEV_SENDER}))


def test_a_good_token_names_its_sender(verifier, token):
    assert verifier.verify(f"Bearer {token()}").email == DEV_SENDER


def test_legacy_issuer_is_accepted(verifier, token):
    assert verifier.verify(f"Bearer {token(iss='accounts.google.com')}").email == DEV_SENDER


@pytest.mark.parametrize("fault", sorted(TOKEN_FAULTS))
def test_each_token_fault_is_refused_with_its_reason(verifier, token, signer, fault):
    case = TOKEN_FAULTS[fault]
    refusal = UnauthenticatedError if case.status == 401 else ForbiddenError
    with pytest.raises(refusal) as error:
        verifier.verify(case.header(token, signer))
    assert re.fullmatch(case.reason, error.value.reason), error.value.reason


def test_an_expired_token_says_when_it_expired_and_when_it_is_now(verifier, token):
    with pytest.raises(UnauthenticatedError) as error:
        verifier.verify(f"Bearer {token(iat=999996400, exp=1000000000)}")
    assert error.value.reason.startswith("token expired at 2001-09-09T01:46:40Z (now 20")


def test_a_token_from_another_dev_key_names_its_key_id(verifier, tmp_path):
    stranger = DevSigner.create(tmp_path / "other-keys")
    with pytest.raises(UnauthenticatedError) as error:
        verifier.verify(f"Bearer {stranger.mint(AUDIENCE)}")
    assert f"unknown key: key id {stranger.kid!r}" in error.value.reason


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
        self.server = StubServer({"GET": self._get})
        self.url = f"{self.server.url}/certs"

    def _get(self, request: Request) -> Reply:
        self.fetches += 1
        self.arrived.set()
        self.release.wait(30)
        return Reply(503)

    def close(self) -> None:
        self.release.set()
        self.server.close()


@pytest.fixture
def held_endpoint() -> Iterator[HeldCertsEndpoint]:
    endpoint = HeldCertsEndpoint()
    yield endpoint
    endpoint.close()


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
        held.close()


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
