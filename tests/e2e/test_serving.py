"""Installed means serving: real gunicorn, the emulator, and a TF Serving stand-in that
decides each load with real TensorFlow (receiver/dev/tfserving_standin.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import requests

from tests.e2e.conftest import TFServingStandIn, curl_push, wait_for
from tests.helpers import HALF_PLUS_TWO, PROJECT_ROOT, push_body, upload_model


def shard_cut_short(tmp_path):
    """A model that passes every check but TensorFlow's restore (its weights are cut short,
    as by a copy that died): only TF Serving itself can refuse it."""
    damaged = tmp_path / "damaged"
    shutil.copytree(HALF_PLUS_TWO, damaged)
    shard = damaged / "variables" / "variables.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:3])
    return damaged


def versions(gunicorn, model="half_plus_two"):
    return {view["version"]: view for view in gunicorn.status()["versions"].get(model, [])}


def job_state(gunicorn, job):
    return next(j for j in gunicorn.status()["recent_jobs"] if j["job"] == job)


def push(gunicorn, token, blob, tmp_path):
    status, body = curl_push(gunicorn.url, token(), push_body(blob), tmp_path)
    assert status in (200, 202), body
    return body


def finished(gunicorn, job):
    wait_for(lambda: job_state(gunicorn, job)["state"] in ("installed", "failed"), 180, "the job")
    return job_state(gunicorn, job)


def test_an_install_is_confirmed_with_tf_servings_own_state(
    gunicorn, tfserving, bucket, token, tmp_path
):
    tfserving.start()
    gunicorn.env["RECEIVER_TFSERVING_URL"] = tfserving.url
    gunicorn.start()
    job = push(gunicorn, token, upload_model(bucket, 123), tmp_path)["job"]
    assert finished(gunicorn, job)["state"] == "installed"
    assert versions(gunicorn)[123]["load_state"] == "available"
    assert tfserving.state("half_plus_two", 123) == "AVAILABLE"
    assert gunicorn.status()["serving"]["confirmed"] is True
    metrics = requests.get(f"{gunicorn.url}/metrics", timeout=10).text
    assert (
        'receiver_serving_state{model="half_plus_two",state="available",version="123"} 1.0'
        in metrics
    )
    assert "receiver_load_seconds_count 1.0" in metrics


def test_a_version_tf_serving_cannot_load_is_withdrawn_and_its_next_start_succeeds(
    gunicorn, tfserving, bucket, token, tmp_path
):
    tfserving.start()
    gunicorn.env["RECEIVER_TFSERVING_URL"] = tfserving.url
    gunicorn.start()
    good = push(gunicorn, token, upload_model(bucket, 1), tmp_path)["job"]
    assert finished(gunicorn, good)["state"] == "installed"
    bad_blob = upload_model(bucket, 2, source=shard_cut_short(tmp_path))
    bad = push(gunicorn, token, bad_blob, tmp_path)["job"]
    job = finished(gunicorn, bad)
    assert job["state"] == "failed"
    assert "TF Serving could not load half_plus_two version 2, so it was withdrawn" in job["reason"]
    shown = versions(gunicorn)
    assert shown[2]["load_state"] == "failed" and shown[2]["on_disk"] is False
    assert shown[2]["error"], "TF Serving's own message is shown"
    assert shown[1]["load_state"] == "available"
    assert sorted(p.name for p in (tmp_path / "models" / "half_plus_two").iterdir()) == ["1"]
    assert tfserving.state("half_plus_two", 1) == "AVAILABLE"
    # The same generation pushed again is not installed again.
    assert push(gunicorn, token, bad_blob, tmp_path)["outcome"] == "duplicate"
    # TF Serving's next start needs every model's newest version to load: it does.
    tfserving.stop()
    restarted = TFServingStandIn(tmp_path / "models", tmp_path / "restart.log").start()
    try:
        assert restarted.state("half_plus_two", 1) == "AVAILABLE"
    finally:
        restarted.stop()


def test_the_last_available_version_is_kept_until_its_successor_serves(
    gunicorn, tfserving, bucket, token, tmp_path
):
    tfserving.start()
    gunicorn.env.update(RECEIVER_TFSERVING_URL=tfserving.url, RECEIVER_KEEP_VERSIONS="1")
    gunicorn.start()
    assert finished(gunicorn, push(gunicorn, token, upload_model(bucket, 1), tmp_path)["job"])
    tfserving.stop()  # TF Serving is down (restarting, or not started yet)
    job = finished(gunicorn, push(gunicorn, token, upload_model(bucket, 2), tmp_path)["job"])
    assert job["state"] == "installed"
    assert "its verdict on half_plus_two version 2 is awaited in the background" in job["reason"]
    model_root = tmp_path / "models" / "half_plus_two"
    assert sorted(p.name for p in model_root.iterdir()) == ["1", "2"]  # 1 was not pruned
    assert versions(gunicorn)[2]["load_state"] == "loading"
    # TF Serving back: the verdict comes in the background, and only then is 1 pruned.
    TFServingStandIn.__init__(tfserving, model_root.parent, tmp_path / "back.log")
    tfserving.start()
    gunicorn.stop()  # the receiver learns the new port (a real TF Serving keeps its own)
    gunicorn.env["RECEIVER_TFSERVING_URL"] = tfserving.url
    gunicorn.start()
    wait_for(lambda: versions(gunicorn)[2]["load_state"] == "available", 120, "the verdict")
    wait_for(lambda: sorted(p.name for p in model_root.iterdir()) == ["2"], 30, "the prune")


def test_a_fresh_pod_never_starts_tf_serving_on_a_version_it_cannot_load(
    gunicorn, bucket, token, tmp_path
):
    """A new pod has an empty volume and journal: its first sync installs the bucket's
    newest version, which TF Serving cannot load. TF Serving starts with a models.config
    that lists only what it has confirmed (nothing yet), so the failure is a config
    reload's, not its start's: the version is withdrawn and sync falls back."""
    upload_model(bucket, 1)
    upload_model(bucket, 2, source=shard_cut_short(tmp_path))
    config = tmp_path / "models" / "models.config"
    standin = TFServingStandIn(tmp_path / "models", tmp_path / "tfserving.log", config=config)
    gunicorn.env.update(
        RECEIVER_TFSERVING_URL=standin.url,
        RECEIVER_MODEL_CONFIG_FILE=str(config),
        RECEIVER_SYNC_ON_START="true",
    )
    gunicorn.start()
    wait_for(lambda: requests.get(f"{gunicorn.url}/startupz", timeout=5).ok, 120, "startup")
    standin.start()  # as the pod starts TF Serving once the receiver's startup probe passes
    try:
        wait_for(lambda: versions(gunicorn).get(1, {}).get("load_state") == "available", 180,
                 "the fallback to version 1")  # fmt: skip
        assert standin.exited() is None, "TF Serving's start failed:\n" + standin.log()
        shown = versions(gunicorn)
        assert shown[2]["load_state"] == "failed" and shown[2]["on_disk"] is False
        assert standin.state("half_plus_two", 1) == "AVAILABLE"
    finally:
        standin.stop()


def test_a_version_whose_swap_would_not_fit_is_refused_before_download(
    gunicorn, bucket, token, tmp_path
):
    gunicorn.env["RECEIVER_SERVING_MEMORY_LIMIT"] = "512Ki"
    gunicorn.start()
    heavy = tmp_path / "heavy"
    shutil.copytree(HALF_PLUS_TWO, heavy)
    (heavy / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(2**20))
    job = finished(
        gunicorn, push(gunicorn, token, upload_model(bucket, 1, source=heavy), tmp_path)["job"]
    )
    assert job["state"] == "failed"
    assert "half_plus_two: TF Serving would need about 1.2 MiB while it swaps" in job["reason"]
    assert "over RECEIVER_SERVING_MEMORY_LIMIT=0.5 MiB" in job["reason"]
    assert job["bytes_done"] == 0, "nothing was downloaded"
    assert not (tmp_path / "models" / "half_plus_two").exists()


def test_installed_ack_answers_once_tf_serving_reports_available(gunicorn, bucket, token, tmp_path):
    slow = TFServingStandIn(tmp_path / "models", tmp_path / "tfserving.log", poll=2.0).start()
    try:
        gunicorn.env.update(RECEIVER_TFSERVING_URL=slow.url, RECEIVER_ACK="installed")
        gunicorn.start()
        status, body = curl_push(
            gunicorn.url, token(), push_body(upload_model(bucket, 123)), tmp_path
        )
        state_at_answer = slow.state("half_plus_two", 123)
        assert (status, body["outcome"]) == (200, "installed"), body
        assert state_at_answer == "AVAILABLE"
    finally:
        slow.stop()


def test_without_a_tf_serving_url_status_says_loads_are_not_confirmed(
    gunicorn, bucket, token, tmp_path
):
    gunicorn.start()
    assert finished(gunicorn, push(gunicorn, token, upload_model(bucket, 1), tmp_path)["job"])
    status = gunicorn.status()
    assert status["serving"]["note"] == "loads are not confirmed: RECEIVER_TFSERVING_URL is not set"
    assert versions(gunicorn)[1]["load_state"] == "unconfirmed"
    cli = subprocess.run(
        [sys.executable, "-m", "receiver", "status"],
        cwd=PROJECT_ROOT, env=gunicorn.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "unconfirmed" in cli.stdout, cli.stderr
    assert "loads are not confirmed" in cli.stdout
