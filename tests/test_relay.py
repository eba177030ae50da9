"""Relaying pushes to peers: what is forwarded, what is not, retries, and a bounded queue.

The peers here are real HTTP servers on 127.0.0.1 that record what they get; the
receiver is the real app. Receivers relaying to each other: tests/e2e/test_peers.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from receiver import metrics, relay
from receiver.config import Settings
from receiver.peers import Peers
from receiver.relay import RELAYED_HEADER, Relay
from receiver.web import create_app
from tests.e2e.conftest import wait_for
from tests.helpers import push_body, upload_model
from tests.stubserver import Reply, Request, StubServer


class Peer:
    """A stand-in peer: records every request; answers `statuses` in turn (then 202)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.server = StubServer({"POST": self._post})
        self.url = self.server.url

    def _post(self, request: Request) -> Reply:
        self.hold.wait(30)
        self.requests.append((request.path, request.headers, request.body))
        return Reply(self.statuses.pop(0) if self.statuses else 202, b"{}")

    def close(self) -> None:
        self.hold.set()
        self.server.close()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made = [Peer(), Peer()]
    yield made
    for peer in made:
        peer.close()


@pytest.fixture
def relaying(environ: dict[str, str], peers: list[Peer]) -> Any:
    urls = ",".join(peer.url for peer in peers)
    app = create_app(Settings.from_env({**environ, "RECEIVER_PEERS": urls}))
    return app.test_client()


def relays(client: Any) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "receiver_relays_total"
    }


def counted(outcome: str) -> float:
    """This process's relays with `outcome` so far (no app needed)."""
    registry = CollectorRegistry()
    registry.register(metrics.RELAYS)
    return registry.get_sample_value("receiver_relays_total", {"outcome": outcome}) or 0.0


def grew(before: dict[str, float], client: Any, outcome: str) -> Callable[[], bool]:
    return lambda: relays(client).get(outcome, 0) > before.get(outcome, 0)


def post(client: Any, body: bytes, token: str, **headers: str) -> Any:
    return client.post(
        "/push",
        data=body,
        headers={"Authorization": f"Bearer {token}", **headers},
        content_type="application/json",
    )


def test_a_queued_push_reaches_every_peer_with_its_body_token_and_event_headers(
    relaying, peers, bucket, token
):
    body, signed = push_body(upload_model(bucket, 7)), token()
    extra = {"X-Goog-Pubsub-Message-Id": "42", "Cookie": "session=secret", "X-Other": "no"}
    assert post(relaying, body, signed, **extra).status_code == 202
    wait_for(lambda: all(p.requests for p in peers), what="the relays")
    for peer in peers:
        ((path, headers, forwarded),) = peer.requests
        assert (path, forwarded) == ("/push", body)
        assert headers["Authorization"] == f"Bearer {signed}"
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Goog-Pubsub-Message-Id"] == "42"
        assert headers[RELAYED_HEADER] == "1"
        assert "Cookie" not in headers and "X-Other" not in headers


def test_a_relayed_push_is_verified_and_acted_on_but_never_relayed_again(
    relaying, peers, bucket, token
):
    before = relays(relaying)
    body = push_body(upload_model(bucket, 7))
    assert post(relaying, body, token(), **{RELAYED_HEADER: "1"}).status_code == 202
    # The marker stops nothing but the relay: a forged token is refused as ever.
    forged = post(relaying, push_body(upload_model(bucket, 8)), token(aud="https://other/"))
    assert forged.status_code == 403
    forged_relay = post(relaying, body, "nonsense", **{RELAYED_HEADER: "1"})
    assert forged_relay.status_code == 401
    # A push that queues something is relayed; the two above never were.
    assert post(relaying, push_body(upload_model(bucket, 9)), token()).status_code == 202
    wait_for(lambda: all(len(p.requests) == 1 for p in peers), what="the one relay")
    assert all(b'"objectId": "models/half_plus_two/9' in p.requests[0][2] for p in peers)
    assert relays(relaying).get("delivered", 0) - before.get("delivered", 0) == 2


def test_a_duplicate_is_relayed_and_an_ignored_push_is_not(relaying, peers, bucket, token):
    """This replica's sync may have installed a version before its push came: a duplicate
    here is news to peers that have not synced yet (they dedupe it if it is not)."""
    body = push_body(upload_model(bucket, 7))
    post(relaying, body, token())
    wait_for(lambda: all(p.requests for p in peers), what="the first relay")
    assert post(relaying, body, token()).get_json()["outcome"] == "duplicate"
    wait_for(lambda: all(len(p.requests) == 2 for p in peers), what="the duplicate's relay")
    other = bucket.blob("elsewhere/readme.txt")
    other.upload_from_string(b"not a model")
    assert post(relaying, push_body(other), token()).get_json()["outcome"] == "ignored"
    # Sent after the ignored one: had it been relayed, it would have arrived first.
    post(relaying, push_body(upload_model(bucket, 8)), token())
    wait_for(lambda: all(len(p.requests) == 3 for p in peers), what="the third relay")
    assert all(b"half_plus_two/8" in p.requests[2][2] for p in peers)


def test_a_delete_of_a_version_never_installed_here_is_relayed(environ, peers, bucket, token):
    """The replica that gets the delete may have missed the install (restarting, or its
    install failed) while its peers serve the version: they must hear of the delete."""
    app = create_app(
        Settings.from_env(
            {**environ, "RECEIVER_PEERS": peers[0].url, "RECEIVER_ON_DELETE": "remove"}
        )
    )
    client = app.test_client()
    blob = upload_model(bucket, 7)  # never pushed here, so never installed here
    deleted = post(client, push_body(blob, event_type="OBJECT_DELETE"), token())
    assert deleted.get_json()["outcome"] == "ignored"
    wait_for(lambda: len(peers[0].requests) == 1, what="the relay of the delete")
    assert b"OBJECT_DELETE" in peers[0].requests[0][2]


def test_a_hung_peer_holds_one_sender_and_the_healthy_peer_gets_every_push(bucket, token):
    hung, healthy = Peer(), Peer()
    hung.hold.clear()  # takes each request and answers nothing until released
    try:
        sender = Relay(Peers(urls=(f"{hung.url}/push", f"{healthy.url}/push")), 8080, senders=2)
        for n in range(5):
            sender.forward(f"push {n}".encode(), {"Authorization": "Bearer x"})
        wait_for(lambda: len(healthy.requests) == 5, what="every push at the healthy peer")
        assert not hung.requests  # still holding the first one, the others wait their turn
    finally:
        hung.close()
        healthy.close()


def test_a_failing_peer_is_retried_then_left_to_sync_and_a_refusal_is_final(
    environ, peers, bucket, token
):
    failing, refusing = peers
    failing.statuses = [503] * relay.ATTEMPTS
    refusing.statuses = [401]
    app = create_app(
        Settings.from_env({**environ, "RECEIVER_PEERS": f"{failing.url},{refusing.url}"})
    )
    rt = app.extensions["receiver"]
    rt.relay = Relay(rt.relay.peers, rt.relay.own_port, first_retry=0.01)
    client = app.test_client()
    before = relays(client)
    assert post(client, push_body(upload_model(bucket, 7)), token()).status_code == 202
    wait_for(grew(before, client, "failed"), what="the relay to fail")
    wait_for(grew(before, client, "refused"), what="the refusal")
    assert len(failing.requests) == relay.ATTEMPTS
    assert len(refusing.requests) == 1


def test_a_peer_that_recovers_gets_the_push_on_a_retry(peers, bucket, token):
    flaky = peers[0]
    flaky.statuses = [503, 500]
    before = counted("delivered")
    sender = Relay(Peers(urls=(f"{flaky.url}/push",)), own_port=8080, first_retry=0.01)
    sender.forward(push_body(upload_model(bucket, 7)), {"Authorization": f"Bearer {token()}"})
    wait_for(lambda: counted("delivered") > before, what="the third attempt to be delivered")
    assert len(flaky.requests) == 3


def test_pushes_for_a_stuck_peer_never_pile_up_past_the_limit(peers, bucket, token):
    stuck = peers[0]
    stuck.hold.clear()  # takes each request and answers nothing until released
    before = counted("dropped")
    sender = Relay(Peers(urls=(f"{stuck.url}/push",)), own_port=8080, senders=1, limit=3)
    for n in range(20):
        sender.forward(f"push {n}".encode(), {"Authorization": "Bearer x"})
        assert sender.pending() <= 3 + 1  # the limit, and the one being sent
    assert (
        counted("dropped") - before >= 20 - 3 - 2
    )  # at most the limit waits, the sender holds one or two
    stuck.hold.set()
    wait_for(lambda: sender.pending() == 0, what="the relay queue to drain")


def test_a_withdrawal_is_relayed_too(environ, peers, bucket, token):
    app = create_app(
        Settings.from_env(
            {**environ, "RECEIVER_PEERS": peers[0].url, "RECEIVER_ON_DELETE": "remove"}
        )
    )
    client = app.test_client()
    blob = upload_model(bucket, 7)
    post(client, push_body(blob), token())
    app.extensions["receiver"].worker.run_once()
    newer = upload_model(bucket, 8)  # the last version is never withdrawn: one more
    post(client, push_body(newer), token())
    app.extensions["receiver"].worker.run_once()
    deleted = post(client, push_body(blob, event_type="OBJECT_DELETE"), token())
    assert deleted.get_json()["outcome"] == "removed"
    wait_for(lambda: len(peers[0].requests) == 3, what="the relay of the delete")
    assert b"OBJECT_DELETE" in peers[0].requests[2][2]


def test_a_relayed_push_is_answered_once_journaled_even_in_installed_mode(environ, bucket, token):
    app = create_app(
        Settings.from_env({**environ, "RECEIVER_ACK": "installed", "RECEIVER_ACK_TIMEOUT": "1"})
    )
    client = app.test_client()  # no install thread: a push that waits would time out
    direct = post(client, push_body(upload_model(bucket, 7)), token())
    assert (direct.status_code, direct.get_json()["outcome"]) == (503, "retry")
    relayed = post(client, push_body(upload_model(bucket, 8)), token(), **{RELAYED_HEADER: "1"})
    assert (relayed.status_code, relayed.get_json()["outcome"]) == (202, "queued")


def test_no_peers_no_relay(app, client, bucket, push):
    assert app.extensions["receiver"].relay is None
    assert push(upload_model(bucket, 7)).status_code == 202


def test_more_peers_than_the_queue_holds_is_said_once_without_a_token(caplog):
    crowd = [Peer() for _ in range(3)]
    try:
        sender = Relay(Peers(urls=tuple(f"{p.url}/push" for p in crowd)), 8080, limit=2)
        for n in range(3):
            sender.forward(f"push {n}".encode(), {"Authorization": "Bearer secret-token"})
            wait_for(lambda: sender.pending() == 0, what="the fan-out and its sends")
        said = [r.getMessage() for r in caplog.records if "RECEIVER_PEERS" in r.getMessage()]
        assert len(said) == 1 and "3 peers" in said[0] and "(2 " in said[0]
        assert "secret-token" not in caplog.text
        assert sum(len(p.requests) for p in crowd) == 3 * 2  # the others are left to sync
    finally:
        for peer in crowd:
            peer.close()
