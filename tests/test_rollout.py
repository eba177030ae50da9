"""After the rename: each step runs again on a resumed job, and the lease holds while it
waits (models.config, TF Serving's verdict, pruning)."""

from __future__ import annotations

import shutil
import threading

import pytest

from receiver import modelconfig
from receiver.config import Settings
from receiver.vocabulary import JobState
from receiver.web import create_app
from receiver.worker import RetryPolicy, Worker
from tests.helpers import HALF_PLUS_TWO, push_body, upload_model
from tests.stubserver import Reply, Request, StubServer


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


class ModelStatus:
    """TF Serving's REST model-status API (g3doc/api_rest.md) answering set states: the
    part of TF Serving these tests need, for verdicts the stand-in cannot be told to give."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, int], tuple[str, str, str]] = {}
        self.down = False
        self.server = StubServer({"GET": self._get})
        self.url = self.server.url

    def _get(self, request: Request) -> Reply:
        _, _, _, model, _, version = request.path.split("/")
        state = self.states.get((model, int(version)))
        if self.down:
            return Reply.json({"error": "unavailable"}, 503)
        if state is None:
            return Reply.json({"error": f"Could not find version {version} of model {model}"}, 404)
        status = {"error_code": state[1], "error_message": state[2]}
        return Reply.json(
            {"model_version_status": [{"version": version, "state": state[0], "status": status}]}
        )


@pytest.fixture
def model_status():
    fake = ModelStatus()
    yield fake
    fake.server.close()


def test_the_lease_is_renewed_while_tf_serving_is_waited_for(environ, bucket, token, model_status):
    """No progress is reported while TF Serving loads (here it stays LOADING) and the
    lease is a second long, yet no other worker takes the job over."""
    model_status.states[("half_plus_two", 1)] = ("LOADING", "OK", "")
    runtime, client = app_with(
        environ, RECEIVER_TFSERVING_URL=model_status.url, RECEIVER_LOAD_TIMEOUT="4"
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


def test_nothing_is_pruned_above_the_newest_available_version(environ, bucket, token, model_status):
    """RECEIVER_KEEP_VERSIONS=1, two workers: 2 and 3 are both renamed and loading; 2 is
    confirmed first. Pruning then keeps 2 and 3 (3 may still fail); once 3 is AVAILABLE,
    2 goes."""
    runtime, client = app_with(
        environ, RECEIVER_TFSERVING_URL=model_status.url, RECEIVER_KEEP_VERSIONS="1"
    )
    model_status.states[("half_plus_two", 1)] = ("AVAILABLE", "OK", "")
    push(client, token, upload_model(bucket, 1))
    runtime.worker.run_once()
    model_dir = runtime.settings.model_dir / "half_plus_two"
    threads = []
    for version in (2, 3):
        model_status.states[("half_plus_two", version)] = ("LOADING", "OK", "")
        push(client, token, upload_model(bucket, version))
        worker = Worker(runtime.journal, runtime.installer, RetryPolicy(3))
        threads.append(threading.Thread(target=worker.run_once))
        threads[-1].start()
        while not (model_dir / str(version)).exists():
            threads[-1].join(0.01)
    model_status.states[("half_plus_two", 2)] = ("AVAILABLE", "OK", "")
    threads[0].join(30)
    assert sorted(p.name for p in model_dir.iterdir()) == ["2", "3"]
    model_status.states[("half_plus_two", 3)] = ("AVAILABLE", "OK", "")
    threads[1].join(30)
    assert sorted(p.name for p in model_dir.iterdir()) == ["3"]


def test_a_version_confirmed_in_the_background_is_failed_and_withdrawn(
    environ, bucket, token, model_status
):
    """TF Serving was not answering when 2 was renamed (its job ended installed, the
    verdict pending); once it answers END with an error, 2 is withdrawn and its job failed."""
    model_status.states[("half_plus_two", 1)] = ("AVAILABLE", "OK", "")
    runtime, client = app_with(environ, RECEIVER_TFSERVING_URL=model_status.url)
    push(client, token, upload_model(bucket, 1))
    runtime.worker.run_once()
    model_status.down = True  # TF Serving restarting: its port answers nothing useful
    job = push(client, token, upload_model(bucket, 2))
    runtime.worker.run_once()
    assert runtime.journal.get(job).state is JobState.INSTALLED
    assert "awaited in the background" in runtime.journal.get(job).reason
    assert runtime.installer.rollout.confirm_pending() == []  # still down: nothing decided
    model_status.down = False
    model_status.states[("half_plus_two", 2)] = ("END", "DATA_LOSS", "checksum mismatch")
    runtime.installer.rollout._confirm_at = 0.0  # due now
    assert runtime.installer.rollout.confirm_pending() == ["half_plus_two"]
    failed = runtime.journal.get(job)
    assert failed.state is JobState.FAILED
    assert "checksum mismatch" in failed.reason
    model_dir = runtime.settings.model_dir / "half_plus_two"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1"]


def test_an_archive_unpacking_past_the_volume_size_limit_stops_there(
    environ, bucket, token, tmp_path
):
    """Zeros compress to almost nothing: the check before the download passes, the
    unpacking is stopped once it would pass the volume's limit (the kubelet would evict)."""
    big = tmp_path / "big"
    shutil.copytree(HALF_PLUS_TWO, big)
    (big / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(8 * 2**20))
    runtime, client = app_with(environ, RECEIVER_VOLUME_SIZE_LIMIT="4Mi")
    job_id = push(client, token, upload_model(bucket, 1, source=big))
    runtime.worker.run_once()
    job = runtime.journal.get(job_id)
    assert job.state is JobState.FAILED
    assert "(what is left under RECEIVER_VOLUME_SIZE_LIMIT)" in job.reason, job.reason
    assert not (runtime.settings.model_dir / "half_plus_two").exists()


def test_a_version_confirmed_in_the_background_says_so_in_its_job(
    environ, bucket, token, model_status
):
    """The job's reason said the verdict was awaited; once TF Serving answers AVAILABLE it
    says the version loaded, not that TF Serving is still not answering."""
    runtime, client = app_with(environ, RECEIVER_TFSERVING_URL=model_status.url)
    model_status.down = True
    job = push(client, token, upload_model(bucket, 1))
    runtime.worker.run_once()
    assert "awaited in the background" in runtime.journal.get(job).reason
    model_status.down = False
    model_status.states[("half_plus_two", 1)] = ("AVAILABLE", "OK", "")
    runtime.installer.rollout._confirm_at = 0.0  # due now
    assert runtime.installer.rollout.confirm_pending() == []
    confirmed = runtime.journal.get(job)
    assert (confirmed.state, confirmed.reason) == (
        JobState.INSTALLED,
        "TF Serving reported half_plus_two version 1 available (confirmed after the install ended)",
    )
