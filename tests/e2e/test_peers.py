"""Many replicas, each a real gunicorn receiver with its own model dir and journal,
told of each other by RECEIVER_PEERS (one list for all: each leaves itself out)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from receiver.relay import RELAYED_HEADER
from tests.e2e.conftest import Gunicorn, curl_push, wait_for
from tests.helpers import push_body, same_files, upload_model


def scrape(server: Gunicorn) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def relays(server: Gunicorn, outcome: str) -> float:
    return scrape(server).get(("receiver_relays_total", (("outcome", outcome),)), 0.0)


def pushes(server: Gunicorn) -> float:
    return sum(v for (name, _), v in scrape(server).items() if name == "receiver_pushes_total")


def installed(server: Gunicorn, version: int = 7) -> bool:
    return (Path(server.env["RECEIVER_MODEL_DIR"]) / "half_plus_two" / str(version)).is_dir()


@pytest.fixture
def fleet(
    environ: dict[str, str], emulator, tmp_path: Path
) -> Iterator[Callable[[int], list[Gunicorn]]]:
    """`fleet(n)`: n receivers, not started, each listing all n in RECEIVER_PEERS."""
    made: list[Gunicorn] = []

    def make(n: int) -> list[Gunicorn]:
        servers = []
        for i in range(n):
            home = tmp_path / f"replica-{i}"
            env = {
                **environ,
                "RECEIVER_MODEL_DIR": str(home / "models"),
                "RECEIVER_STATE_DIR": str(home / "state"),
                "STORAGE_EMULATOR_HOST": emulator.url,
                "RECEIVER_SYNC_ON_START": "false",
                "WEB_CONCURRENCY": "2",
                "RECEIVER_LOG_FORMAT": "text",
            }
            home.mkdir()
            servers.append(Gunicorn(env, home / "gunicorn.log"))
        peers = ",".join(server.url for server in servers)
        for server in servers:
            server.env["RECEIVER_PEERS"] = peers
        made.extend(servers)
        return servers

    yield make
    for server in made:
        server.stop(signal.SIGKILL)


def test_a_push_to_one_replica_installs_on_every_replica(fleet, bucket, token, tmp_path):
    replicas = [server.start() for server in fleet(3)]
    blob = upload_model(bucket, 7)
    status, answer = curl_push(replicas[0].url, token(), push_body(blob), tmp_path)
    assert (status, answer["outcome"]) == (202, "queued")
    for server in replicas:
        wait_for(partial(installed, server), what=f"the install on {server.url}")
        assert same_files(Path(server.env["RECEIVER_MODEL_DIR"]) / "half_plus_two" / "7")
    # "Are all replicas on this generation": the same gauge on every replica.
    generations = {
        scrape(server)[("receiver_installed_generation", (("model", "half_plus_two"),))]
        for server in replicas
    }
    assert generations == {blob.generation}


def test_a_relayed_push_is_never_relayed_again(fleet, bucket, token, tmp_path):
    first, *others = replicas = [server.start() for server in fleet(3)]
    curl_push(first.url, token(), push_body(upload_model(bucket, 7)), tmp_path)
    for server in replicas:
        wait_for(partial(installed, server), what=f"the install on {server.url}")
    wait_for(lambda: relays(first, "delivered") == 2, what="both relays to be answered")
    # A peer logs its decision before it answers the relay: both answered, both decided.
    assert "relaying to the peers" in first.log()
    for server in others:
        assert "(relayed): queued" in server.log()
        assert "relaying to the peers" not in server.log()
        assert pushes(server) == 1  # the relay from `first`, and no relay of another's


def test_a_peer_verifies_a_relayed_token_itself(fleet, bucket, token, tmp_path):
    first, strict = fleet(2)
    # The second trusts another sender: the token `first` accepted is no good to it.
    strict.env["RECEIVER_ALLOWED_SENDERS"] = "someone-else@example.iam.gserviceaccount.com"
    first.start(), strict.start()
    body = push_body(upload_model(bucket, 7))
    assert curl_push(first.url, token(), body, tmp_path)[0] == 202
    wait_for(lambda: relays(first, "refused") == 1, what="the relay to be refused")
    assert not installed(strict)
    # Marked as relayed or not, a forged or an expired token gets what it always gets.
    now = int(time.time())
    relayed = {RELAYED_HEADER: "1"}
    expired = token(iat=now - 7200, exp=now - 3600)
    for server in (first, strict):
        assert curl_push(server.url, "forged.token.here", body, tmp_path, relayed)[0] == 401
        assert curl_push(server.url, expired, body, tmp_path, relayed)[0] == 401
    assert not installed(strict)


def test_a_peer_that_was_down_converges_by_sync_at_its_start(fleet, bucket, token, tmp_path):
    up, down = fleet(2)
    up.start()
    assert curl_push(up.url, token(), push_body(upload_model(bucket, 7)), tmp_path)[0] == 202
    wait_for(lambda: installed(up), what="the install on the replica that got the push")
    wait_for(lambda: relays(up, "failed") == 1, what="the relay to the down peer to give up")
    down.env["RECEIVER_SYNC_ON_START"] = "true"
    down.start()
    wait_for(lambda: installed(down), what="the replica that was down to sync")
    assert same_files(Path(down.env["RECEIVER_MODEL_DIR"]) / "half_plus_two" / "7")


def test_a_delete_the_replica_refuses_as_its_last_version_is_withdrawn_by_its_peers(
    fleet, bucket, token, tmp_path
):
    """`a` came up after version 7 and has only 8; `b` has both. Deleting 8 through `a`
    leaves `a` its one version, and must still take 8 from `b` (sync never withdraws)."""
    a, b = fleet(2)
    for server in (a, b):
        server.env["RECEIVER_ON_DELETE"] = "remove"
    b.start()
    curl_push(b.url, token(), push_body(upload_model(bucket, 7)), tmp_path)
    wait_for(lambda: installed(b, 7), what="version 7 on b")
    wait_for(lambda: relays(b, "failed") == 1, what="the relay of 7 to a, down, to give up")
    a.start()
    eight = upload_model(bucket, 8)
    curl_push(b.url, token(), push_body(eight), tmp_path)
    for server in (a, b):
        wait_for(partial(installed, server, 8), what=f"version 8 on {server.url}")
    body = push_body(eight, event_type="OBJECT_DELETE")
    eight.delete()
    status, answer = curl_push(a.url, token(), body, tmp_path)
    assert (status, answer["outcome"]) == (200, "ignored") and "last one" in answer["reason"]
    wait_for(lambda: not installed(b, 8), what="b to withdraw version 8")
    assert installed(b, 7) and installed(a, 8) and not installed(a, 7)
