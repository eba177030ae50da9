"""Which pushes the peers hear of: every authenticated upload or delete that names a model
version, whatever this replica made of it (its disk and journal are its own, a peer's may
differ, and sync never withdraws), and none that the settings, the same on every replica,
rule out. The relaying itself (headers, retries, the queue): tests/test_relay.py."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from receiver import events, intake, relay
from receiver.config import Settings
from receiver.runtime import Runtime
from receiver.web import create_app
from tests.e2e.conftest import wait_for
from tests.helpers import push_body, upload_model
from tests.test_relay import Peer, post


def decide(rt: Runtime, blob: Any, event_type: str = "OBJECT_FINALIZE", **attributes: str) -> Any:
    """What this replica makes of a push about `blob`, and whether its peers hear of it."""
    envelope = json.loads(push_body(blob, event_type=event_type))
    envelope["message"]["attributes"].update(attributes)
    event = events.parse_delivery(
        json.dumps(envelope).encode(), {"Content-Type": "application/json"}
    )
    outcome = intake.accept(event, rt.settings, rt.journal)
    return outcome.outcome, relay.concerns_peers(outcome)


def replica(environ: dict[str, str], **settings: str) -> tuple[Runtime, Any]:
    app = create_app(Settings.from_env({**environ, **settings}))
    return app.extensions["receiver"], app.test_client()


def install(rt: Runtime, client: Any, blob: Any, token: str) -> None:
    assert post(client, push_body(blob), token).status_code == 202
    rt.worker.run_once()


def test_every_upload_naming_a_version_is_for_the_peers_whatever_came_of_it_here(environ, bucket):
    rt, _ = replica(environ, RECEIVER_KEEP_VERSIONS="1")
    nine = upload_model(bucket, 9)
    assert decide(rt, nine) == ("queued", True)
    assert decide(rt, nine) == ("duplicate", True)  # this replica's sync may have beaten it
    rt.worker.run_once()
    # Older than all this replica keeps; a replica without version 9 still wants it.
    assert decide(rt, upload_model(bucket, 8)) == ("skipped", True)


def test_every_delete_naming_a_version_is_for_the_peers_whatever_came_of_it_here(
    environ, bucket, token
):
    rt, client = replica(environ, RECEIVER_ON_DELETE="remove")
    seven, eight = upload_model(bucket, 7), upload_model(bucket, 8)
    install(rt, client, seven, token())
    install(rt, client, eight, token())
    assert decide(rt, seven, "OBJECT_DELETE") == ("removed", True)
    # Refused here, since TF Serving would be left with nothing; a peer has 7 and 8 still.
    assert decide(rt, eight, "OBJECT_DELETE") == ("ignored", True)
    assert decide(rt, upload_model(bucket, 6), "OBJECT_DELETE") == ("ignored", True)  # never here
    queued = upload_model(bucket, 9)
    assert decide(rt, queued) == ("queued", True)
    assert decide(rt, queued, "OBJECT_ARCHIVE") == ("withdrawing", True)


@pytest.mark.parametrize(
    ("case", "settings"),
    [
        ("another bucket", {}),
        ("not a model version", {}),
        ("not an upload", {}),
        ("deletes ignored", {}),
        ("an overwrite", {"RECEIVER_ON_DELETE": "remove"}),
    ],
)
def test_a_push_the_settings_rule_out_is_not_for_the_peers(case, settings, environ, bucket):
    rt, _ = replica(environ, **settings)
    blob = upload_model(bucket, 7)
    if case == "another bucket":
        other = SimpleNamespace(**{a: getattr(blob, a) for a in ("name", "generation", "size")})
        other.md5_hash, other.crc32c = blob.md5_hash, blob.crc32c
        other.bucket = SimpleNamespace(name="not-the-source")
        assert decide(rt, other) == ("ignored", False)
    elif case == "not a model version":
        readme = bucket.blob("elsewhere/readme.txt")
        readme.upload_from_string(b"not a model")
        assert decide(rt, readme) == ("ignored", False)
    elif case == "not an upload":
        assert decide(rt, blob, "OBJECT_METADATA_UPDATE") == ("ignored", False)
    elif case == "deletes ignored":
        assert decide(rt, blob, "OBJECT_DELETE") == ("ignored", False)
    else:  # the upload that replaced the object is its own push, and relayed
        assert decide(rt, blob, "OBJECT_DELETE", overwrittenByGeneration="9") == (
            "ignored",
            False,
        )


def test_a_delete_refused_here_as_the_last_version_still_reaches_the_peers(environ, bucket, token):
    """A rescheduled replica whose start sync installed only the newest version gets the
    delete of that version: it keeps it (its last), and its peers, which have older
    ones, must withdraw it all the same, or they serve it until a person steps in."""
    peer = Peer()
    try:
        rt, client = replica(environ, RECEIVER_PEERS=peer.url, RECEIVER_ON_DELETE="remove")
        eight = upload_model(bucket, 8)
        install(rt, client, eight, token())
        wait_for(lambda: len(peer.requests) == 1, what="the relay of the upload")
        deleted = post(client, push_body(eight, event_type="OBJECT_DELETE"), token())
        assert (deleted.status_code, deleted.get_json()["outcome"]) == (200, "ignored")
        assert "is the last one" in deleted.get_json()["reason"]
        wait_for(lambda: len(peer.requests) == 2, what="the relay of the refused delete")
        assert b"OBJECT_DELETE" in peer.requests[1][2]
    finally:
        peer.close()


def test_a_push_skipped_here_as_older_than_all_kept_still_reaches_the_peers(environ, bucket, token):
    peer = Peer()
    try:
        rt, client = replica(environ, RECEIVER_PEERS=peer.url, RECEIVER_KEEP_VERSIONS="1")
        install(rt, client, upload_model(bucket, 9), token())
        skipped = post(client, push_body(upload_model(bucket, 8)), token())
        assert skipped.get_json()["outcome"] == "skipped"
        wait_for(lambda: len(peer.requests) == 2, what="the relay of the skipped push")
        assert b"half_plus_two/8" in peer.requests[1][2]
    finally:
        peer.close()
