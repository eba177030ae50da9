"""Two gunicorn masters on one model dir and state dir, as a RollingUpdate on a shared volume."""

import os
import signal

import requests

from tests.e2e.conftest import Gunicorn, wait_for


def test_a_second_master_waits_for_the_first_and_leaves_its_work_alone(
    gunicorn, settings, tmp_path
):
    first = gunicorn.start()
    # An install of the first receiver in flight: its staging, as a worker leaves it mid-unpack.
    staging = settings.model_dir / "half_plus_two" / ".staging-6-0123abcd"
    staging.mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"half")
    second = Gunicorn(first.env, tmp_path / "second.log")
    second.start(wait=False)
    try:
        wait_for(lambda: "waiting for the state dir" in second.log(), what="the second to wait")
        assert f"pid {first.process.pid}" in second.log()  # it names who holds the lock
        assert staging.exists()
        assert requests.get(f"{first.url}/healthz", timeout=10).status_code == 200
        assert second.process.poll() is None  # waiting, not crash-looping
        first.stop(signal.SIGTERM)
        second.wait_healthy()
        assert not staging.exists()  # debris now: its receiver is gone, the second cleans up
        assert os.listdir(settings.model_dir / "half_plus_two") == []
    finally:
        second.stop(signal.SIGKILL)
