"""After the rename: each step runs again on a resumed job, and the lease holds while it
waits (models.config, TF Serving's verdict, pruning)."""

from __future__ import annotations

import threading

from receiver import modelconfig
from receiver.config import Settings
from receiver.dev.tools import free_port
from receiver.journal import JobState
from receiver.web import create_app
from receiver.worker import RetryPolicy, Worker
from tests.helpers import push_body, upload_model


def app_with(environ, **overrides):
    app = create_app(Settings.from_env({**environ, "RECEIVER_RETRY_DELAY": "0", **overrides}))
    return app.extensions["receiver"], app.test_client()


def push(client, token, blob):
    response = client.post(
        "/", data=push_body(blob), headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job"]


def test_a_failure_after_the_rename_is_repaired_by_the_retry(environ, bucket, token, tmp_path):
    """ENOSPC (here: a file where the config's directory should be) writing models.config
    after the rename: the retry takes the "already installed" path and writes it."""
    config_dir = tmp_path / "config"
    config_dir.write_text("in the way")
    runtime, client = app_with(
        environ, RECEIVER_MODEL_CONFIG_FILE=str(config_dir / "models.config")
    )
    job_id = push(client, token, upload_model(bucket, 1))
    runtime.worker.run_once()
    first = runtime.journal.get(job_id)
    assert first.state is JobState.QUEUED, "a failure after the rename is retried"
    assert (runtime.settings.model_dir / "half_plus_two" / "1").is_dir()
    config_dir.unlink()
    runtime.worker.run_once()
    job = runtime.journal.get(job_id)
    assert (job.state, job.reason) == (JobState.INSTALLED, "already installed")
    listed = modelconfig.describe(config_dir / "models.config")["models"]
    assert listed == ["half_plus_two"]


def test_the_lease_is_renewed_while_tf_serving_is_waited_for(environ, bucket, token):
    """No progress is reported while TF Serving is asked (here it never answers) and the
    lease is a second long, yet no other worker takes the job over."""
    runtime, client = app_with(
        environ,
        RECEIVER_TFSERVING_URL=f"http://127.0.0.1:{free_port()}",
        RECEIVER_LOAD_TIMEOUT="4",
    )
    job_id = push(client, token, upload_model(bucket, 1))
    holder = Worker(runtime.journal, runtime.installer, RetryPolicy(3), lease_seconds=1.0)
    rival = Worker(runtime.journal, runtime.installer, RetryPolicy(3), lease_seconds=1.0)
    thread = threading.Thread(target=holder.run_once)
    thread.start()
    while runtime.journal.get(job_id).owner != holder.owner:
        thread.join(0.01)
    takeovers = 0
    while thread.is_alive():
        takeovers += rival.run_once()
        thread.join(0.1)
    job = runtime.journal.get(job_id)
    assert takeovers == 0
    assert (job.state, job.owner) == (JobState.INSTALLED, holder.owner)
    assert "has not reported half_plus_two version 1 AVAILABLE within 4s" in job.reason


def test_an_install_over_the_volume_size_limit_is_refused_before_download(environ, bucket, token):
    """An emptyDir shows its node's free space; RECEIVER_VOLUME_SIZE_LIMIT is its sizeLimit."""
    runtime, client = app_with(environ, RECEIVER_VOLUME_SIZE_LIMIT="1Ki")
    job_id = push(client, token, upload_model(bucket, 1))
    runtime.worker.run_once()
    job = runtime.journal.get(job_id)
    assert job.state is JobState.FAILED
    assert "within RECEIVER_VOLUME_SIZE_LIMIT=0.0 MiB" in job.reason, job.reason
    assert job.bytes_done == 0
