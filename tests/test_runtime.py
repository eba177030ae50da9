"""Start-up of a host (receiver/runtime.py's `prepare_host`), on a temporary directory."""

from __future__ import annotations

import logging

import pytest

from receiver import runtime
from receiver.config import Settings
from receiver.runtime import prepare_host


@pytest.mark.parametrize(
    ("extra", "warned"),
    [
        ({"RECEIVER_AUTH": "none", "RECEIVER_PEERS": "http://10.0.0.2:8080/push"}, 2),
        ({"RECEIVER_AUTH": "none"}, 1),
        ({"RECEIVER_PEERS": "http://10.0.0.2:8080/push"}, 0),
    ],
)
def test_authentication_off_is_said_at_start_and_so_is_relaying_it(tmp_path, caplog, extra, warned):
    environ = {
        "RECEIVER_SOURCE": "gs://my-models/prod",
        "RECEIVER_MODEL_DIR": str(tmp_path / "models"),
        "RECEIVER_AUDIENCE": "https://receiver.example.com/push",
        "RECEIVER_ALLOWED_SENDERS": "pusher@p.iam.gserviceaccount.com",
        **extra,
    }
    settings = Settings.from_env(environ)
    with caplog.at_level(logging.WARNING, logger="receiver.runtime"):
        prepare_host(settings)
    runtime._held.pop(settings.state_dir / runtime.STATE_LOCK).close()  # the process lives on
    lines = [r.getMessage() for r in caplog.records if r.name == "receiver.runtime"]
    said = [line for line in lines if "authentication is OFF" in line or "relayed" in line]
    assert len(said) == warned, lines
    if warned == 2:
        assert said[1].endswith("(RECEIVER_PEERS=http://10.0.0.2:8080/push)")
