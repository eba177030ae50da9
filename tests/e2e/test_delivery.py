"""Delivery semantics with real processes: ack modes, kills, restarts, sync, readiness.

Storage traffic goes through the fault proxy (tests/faultproxy.py), which can hold a
download halfway, slow it down or break it, so each test acts at a known point.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from receiver.modeldir import installed_versions
from tests.e2e.conftest import curl_push, wait_for
from tests.helpers import (
    FIXTURES,
    HALF_PLUS_TWO,
    PROJECT_ROOT,
    push_body,
    same_files,
    upload_model,
)

BIG = 24 * 2**20  # weights large enough that a download is seen in progress


@pytest.fixture
def proxied(gunicorn, fault_proxy):
    gunicorn.env.update(STORAGE_EMULATOR_HOST=fault_proxy.url, RECEIVER_RETRY_DELAY="0.2")
    return gunicorn


@pytest.fixture
def big_model(tmp_path):
    model = tmp_path / "big_model"
    shutil.copytree(HALF_PLUS_TWO, model)
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(BIG))
    return model


def hidden_debris(model_root: Path) -> list[str]:
    """Hidden leftovers in a model's directory (gone altogether if nothing was installed)."""
    if not model_root.exists():
        return []
    return sorted(p.name for p in model_root.iterdir() if p.name.startswith("."))


def job_state(server):
    return server.status()["recent_jobs"][0]


# --- RECEIVER_ACK=installed -------------------------------------------------------------


def test_installed_mode_answers_when_the_version_is_there(
    proxied, bucket, token, settings, tmp_path
):
    proxied.env["RECEIVER_ACK"] = "installed"
    proxied.start()
    status, answer = curl_push(proxied.url, token(), push_body(upload_model(bucket, 123)), tmp_path)
    assert (status, answer["outcome"]) == (200, "installed")
    assert same_files(settings.model_dir / "half_plus_two" / "123")


def test_redeliveries_join_the_running_job(proxied, fault_proxy, bucket, token, tmp_path):
    proxied.env["RECEIVER_ACK"] = "installed"
    proxied.start()
    fault_proxy.faults = ["hold"]
    blob = upload_model(bucket, 123)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [
            pool.submit(
                curl_push, proxied.url, token(), push_body(blob, message_id=str(n)), tmp_path
            )
            for n in range(4)
        ]
        assert fault_proxy.holding.wait(60)
        fault_proxy.release.set()
        results = [future.result() for future in answers]
    # Each answer waited for the one install (or, arriving after it, found it done).
    assert {(status, answer["outcome"]) for status, answer in results} <= {
        (200, "installed"),
        (200, "duplicate"),
    }
    assert (200, "installed") in {(status, answer["outcome"]) for status, answer in results}
    assert fault_proxy.downloads == 1


def test_a_transient_failure_is_a_503_and_the_redelivery_installs(
    proxied, fault_proxy, bucket, token, tmp_path
):
    proxied.env["RECEIVER_ACK"] = "installed"
    proxied.start()
    # Sync on start must have listed the bucket before the upload, or it could take the fault.
    wait_for(lambda: requests.get(f"{proxied.url}/readyz", timeout=5).ok, what="first sync")
    fault_proxy.faults = ["503"]
    body = push_body(upload_model(bucket, 123))
    status, answer = curl_push(proxied.url, token(), body, tmp_path)
    assert (status, answer["outcome"]) == (503, "retry")
    assert "HTTP 503" in answer["reason"]
    status, answer = curl_push(proxied.url, token(), body, tmp_path)  # Pub/Sub redelivers
    assert (status, answer["outcome"]) == (200, "installed")
    assert fault_proxy.downloads == 2


def test_a_wait_that_runs_out_is_a_503_and_never_a_second_download(
    proxied, fault_proxy, bucket, token, tmp_path
):
    proxied.env.update(RECEIVER_ACK="installed", RECEIVER_ACK_TIMEOUT="1")
    proxied.start()
    fault_proxy.faults = ["hold"]
    body = push_body(upload_model(bucket, 123))
    status, answer = curl_push(proxied.url, token(), body, tmp_path)
    assert (status, answer["outcome"]) == (503, "retry")
    assert "still running" in answer["reason"]
    fault_proxy.release.set()
    wait_for(lambda: job_state(proxied)["state"] == "installed", what="the install")
    status, answer = curl_push(proxied.url, token(), body, tmp_path)  # the redelivery
    assert (status, answer["outcome"]) == (200, "duplicate")
    assert "already installed" in answer["reason"]
    assert fault_proxy.downloads == 1


def test_gunicorn_timeout_must_exceed_the_ack_wait(gunicorn):
    gunicorn.env.update(RECEIVER_ACK="installed", GUNICORN_TIMEOUT="60")
    gunicorn.start(wait=False)
    assert gunicorn.process.wait(timeout=60) != 0
    assert "GUNICORN_TIMEOUT (60s) must exceed RECEIVER_ACK_TIMEOUT" in gunicorn.log()


# --- Restarts -----------------------------------------------------------------------------


def test_kill_9_mid_download_then_restart_resumes_and_completes(
    proxied, fault_proxy, bucket, token, settings, big_model, tmp_path
):
    proxied.start()
    fault_proxy.faults = ["hold"]
    assert (
        curl_push(
            proxied.url, token(), push_body(upload_model(bucket, 123, source=big_model)), tmp_path
        )[0]
        == 202
    )
    assert fault_proxy.holding.wait(60)
    model_root = settings.model_dir / "half_plus_two"
    wait_for(lambda: hidden_debris(model_root), what="the staging dir")

    proxied.stop(signal.SIGKILL)  # every receiver process, mid-download
    fault_proxy.release.set()
    assert not (model_root / "123").exists()
    assert hidden_debris(model_root)  # what a crash leaves

    proxied.start()
    wait_for(lambda: job_state(proxied)["state"] == "installed", what="the resumed install")
    job = job_state(proxied)
    assert job["attempts"] == 2
    assert same_files(model_root / "123", big_model)
    assert hidden_debris(model_root) == []


def test_sigterm_mid_download_stops_cleanly_and_resumes_after_restart(
    proxied, fault_proxy, bucket, token, settings, big_model, tmp_path
):
    proxied.env["GUNICORN_GRACEFUL_TIMEOUT"] = "8"  # 3 s for the install to finish, then cancel
    fault_proxy.throttle = BIG / 30  # far longer than the grace period
    proxied.start()
    assert (
        curl_push(
            proxied.url, token(), push_body(upload_model(bucket, 123, source=big_model)), tmp_path
        )[0]
        == 202
    )
    wait_for(lambda: job_state(proxied)["bytes_done"] > 0, what="download progress")

    proxied.stop(signal.SIGTERM)
    assert proxied.process.returncode == 0
    model_root = settings.model_dir / "half_plus_two"
    assert hidden_debris(model_root) == []  # cancelled cleanly, staging removed
    assert "interrupted by shutdown" in proxied.log()

    fault_proxy.throttle = None
    proxied.start()
    wait_for(lambda: job_state(proxied)["state"] == "installed", what="the resumed install")
    assert job_state(proxied)["attempts"] == 1  # the interrupted attempt does not count
    assert same_files(model_root / "123", big_model)


# --- Sync and readiness ------------------------------------------------------------------


def test_a_fresh_pod_syncs_and_is_ready_only_when_the_models_are_there(
    proxied, fault_proxy, bucket, settings
):
    for model, version in [("a", 1), ("a", 2), ("b", 5)]:
        upload_model(bucket, version, model=model)
    proxied.env["RECEIVER_SYNC_ON_START"] = "true"
    fault_proxy.faults = ["hold"]
    proxied.start()
    assert fault_proxy.holding.wait(60)
    readyz = requests.get(f"{proxied.url}/readyz", timeout=10)
    assert readyz.status_code == 503
    assert "installing what the first sync found" in readyz.json()["reason"]
    fault_proxy.release.set()
    wait_for(
        lambda: requests.get(f"{proxied.url}/readyz", timeout=10).status_code == 200, what="ready"
    )
    assert proxied.status()["models"] == {"a": [2], "b": [5]}
    assert same_files(settings.model_dir / "a" / "2")


def test_periodic_sync_heals_a_missed_push(gunicorn, bucket, settings):
    gunicorn.env.update(RECEIVER_SYNC_ON_START="true", RECEIVER_SYNC_INTERVAL="0.5")
    gunicorn.start()
    wait_for(lambda: requests.get(f"{gunicorn.url}/readyz", timeout=10).status_code == 200)
    upload_model(bucket, 3)  # uploaded, but its notification never arrives
    wait_for(lambda: (settings.model_dir / "half_plus_two" / "3").exists(), what="the sync")
    assert gunicorn.status()["last_sync"] is not None


def run_sync_command(environ, emulator):
    return subprocess.run(
        [sys.executable, "-m", "receiver", "sync"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **environ, "STORAGE_EMULATOR_HOST": emulator.url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sync_command_installs_and_exits(environ, emulator, bucket, settings):
    upload_model(bucket, 4)
    result = run_sync_command(environ, emulator)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r"job 1 installed: half_plus_two version 4 from gs://\S+/4\.tar\.gz#\d+\n", result.stdout
    ), result.stdout
    assert same_files(settings.model_dir / "half_plus_two" / "4")


def test_sync_command_falls_back_past_a_broken_newest_version(environ, emulator, bucket, settings):
    """An init container running `receiver sync` must let the pod start on version 4."""
    upload_model(bucket, 4)
    upload_model(bucket, 5, source=FIXTURES / "tfserving_configs")  # not a SavedModel
    result = run_sync_command(environ, emulator)
    assert result.returncode == 0, result.stderr
    assert installed_versions(settings.model_dir / "half_plus_two") == [4]
    assert "falling back to version 4" in result.stderr
    again = run_sync_command(environ, emulator)  # and on every later run
    assert again.returncode == 0, again.stderr


def test_a_model_with_nothing_installable_fails_sync_and_readiness(
    environ, emulator, bucket, settings, gunicorn
):
    upload_model(bucket, 5, source=FIXTURES / "tfserving_configs")
    result = run_sync_command(environ, emulator)
    assert result.returncode == 1
    assert "no version installed for half_plus_two" in result.stderr
    assert "not a SavedModel" in result.stderr
    assert not (settings.model_dir / "half_plus_two").exists()  # no empty model dir
    gunicorn.env["RECEIVER_SYNC_ON_START"] = "true"
    gunicorn.start()
    wait_for(lambda: gunicorn.status()["jobs"]["queued"] == 0, what="the first sync's job")

    def readyz():
        return requests.get(f"{gunicorn.url}/readyz", timeout=10)

    wait_for(lambda: readyz().json()["reason"] != "the first sync of the bucket has not finished")
    assert readyz().status_code == 503
    assert "no version installed for half_plus_two" in readyz().json()["reason"]
    assert not (settings.model_dir / "half_plus_two").exists()


def test_a_large_object_installs_through_parallel_slices_one_of_them_broken(
    proxied, fault_proxy, big_model, bucket, token, tmp_path, settings
):
    proxied.env.update(
        RECEIVER_ACK="installed",
        RECEIVER_SLICE_BYTES=str(2**20),
        RECEIVER_SLICED_DOWNLOAD_THRESHOLD=str(2**20),
        RECEIVER_SLICING="always",
    )
    proxied.start()
    wait_for(lambda: requests.get(f"{proxied.url}/readyz", timeout=5).ok, what="first sync")
    fault_proxy.faults = ["ok", "reset"]
    blob = upload_model(bucket, 123, archive_format="tar.gz", source=big_model)
    status, answer = curl_push(proxied.url, token(), push_body(blob), tmp_path)
    assert (status, answer["outcome"]) == (200, "installed")
    assert same_files(settings.model_dir / "half_plus_two" / "123", big_model)
    slices = -(-blob.size // 2**20)
    assert fault_proxy.downloads == slices + 1  # every slice once, the broken one resumed
