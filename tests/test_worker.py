"""The worker and install pipeline against the real storage emulator."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from receiver.config import Settings
from receiver.dev.tools import archive_directory
from receiver.journal import JobState
from receiver.modeldir import installed_versions
from receiver.sync import sync
from receiver.web import create_app
from receiver.worker import RetryPolicy, Worker
from tests.helpers import FIXTURES, HALF_PLUS_TWO, push_body, same_files, upload_model


def visible(model_dir):
    """What TF Serving would see: every entry under the model dir, hidden ones included."""
    if not model_dir.exists():
        return []
    return sorted(
        str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if ".receiver" not in p.parts
    )


def only_job(runtime):
    (job,) = runtime.journal.recent()
    return job


@pytest.mark.parametrize("archive_format", ["tar.gz", "tgz", "tar", "zip"])
def test_a_pushed_archive_is_installed(runtime, bucket, push, settings, archive_format):
    response = push(upload_model(bucket, 123, archive_format))
    assert response.status_code == 202
    assert runtime.worker.run_once()
    installed = settings.model_dir / "half_plus_two" / "123"
    assert same_files(installed)
    assert only_job(runtime).state is JobState.INSTALLED
    assert not runtime.worker.run_once()  # nothing left to do


def test_waiting_pushes_hear_when_the_worker_records_a_job(runtime, bucket, push):
    """RECEIVER_ACK=installed: a push waiting on its job is woken when it is recorded."""
    push(upload_model(bucket, 123))
    with runtime.worker.changed:  # held, so the news cannot come before the wait
        thread = threading.Thread(target=runtime.worker.run_once)
        thread.start()
        assert runtime.worker.changed.wait(timeout=120), "the worker never told its waiters"
        assert only_job(runtime).state is JobState.INSTALLED
    thread.join()


def test_archive_without_a_top_level_dir(runtime, bucket, push, settings):
    blob = upload_model(bucket, 5, data=archive_directory(HALF_PLUS_TWO, "tar.gz"))
    push(blob)
    runtime.worker.run_once()
    assert only_job(runtime).state is JobState.INSTALLED
    assert same_files(settings.model_dir / "half_plus_two" / "5")
    assert visible(settings.model_dir / "half_plus_two") == visible_of_one_version(5)


def test_not_a_saved_model_fails_for_good_and_leaves_nothing(runtime, bucket, push, settings):
    push(upload_model(bucket, 7, source=FIXTURES / "tfserving_configs"))
    runtime.worker.run_once()
    job = only_job(runtime)
    assert job.state is JobState.FAILED
    assert "not a SavedModel" in job.reason
    assert visible(settings.model_dir) == []  # not even an empty model dir


def test_hostile_archive_fails_and_nothing_escapes(runtime, bucket, push, settings, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    push(upload_model(bucket, 8, data=buffer.getvalue()))
    runtime.worker.run_once()
    job = only_job(runtime)
    assert job.state is JobState.FAILED, job.reason
    assert "'..'" in job.reason, job.reason
    assert visible(settings.model_dir) == []  # not even an empty model dir
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_new_generation_of_an_installed_version_is_refused(runtime, bucket, push, settings):
    push(upload_model(bucket, 123))
    runtime.worker.run_once()
    installed = settings.model_dir / "half_plus_two" / "123"
    before = (installed / "saved_model.pb").read_bytes()

    replacement = upload_model(
        bucket, 123, source=FIXTURES / "half_plus_two_2_versions" / "00000124"
    )
    assert push(replacement).status_code == 202
    runtime.worker.run_once()
    newest = runtime.journal.recent()[0]
    assert newest.state is JobState.FAILED
    assert "immutable" in newest.reason
    assert (installed / "saved_model.pb").read_bytes() == before


def test_a_rerun_of_an_installed_job_is_a_no_op(runtime, bucket, push):
    push(upload_model(bucket, 123))
    runtime.worker.run_once()
    job = only_job(runtime)
    runtime.journal.requeue(job.id)
    runtime.worker.run_once()
    again = runtime.journal.get(job.id)
    assert (again.state, again.reason) == (JobState.INSTALLED, "already installed")


def test_old_versions_are_pruned(runtime, bucket, push, settings):
    for version in (1, 2, 3):
        push(upload_model(bucket, version))
        runtime.worker.run_once()
    assert sorted(p.name for p in (settings.model_dir / "half_plus_two").iterdir()) == ["2", "3"]


def test_object_deleted_before_install_fails_with_reason(runtime, bucket, push):
    blob = upload_model(bucket, 9)
    push(blob)
    blob.delete()
    runtime.worker.run_once()
    job = only_job(runtime)
    assert job.state is JobState.FAILED
    assert "does not exist" in job.reason


def test_transient_failures_are_retried_then_given_up(runtime, bucket, client, token, settings):
    blob = upload_model(bucket, 11)
    blob.crc32c = "AAAAAA=="  # the notification carries a checksum the bytes will not match
    client.post("/", data=push_body(blob), headers={"Authorization": f"Bearer {token()}"})
    worker = Worker(runtime.journal, runtime.installer, RetryPolicy(max_attempts=3, base_seconds=0))
    assert worker.run_once()
    job = only_job(runtime)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)
    assert "crc32c mismatch" in job.reason
    worker.run_once()
    worker.run_once()
    job = only_job(runtime)
    assert (job.state, job.attempts) == (JobState.FAILED, 3)
    assert job.reason.startswith("gave up after 3 attempts: ")
    assert visible(settings.model_dir) == []  # not even an empty model dir


@pytest.fixture
def proxied(proxied_app):
    return proxied_app.extensions["receiver"], proxied_app.test_client()


def push_with(client, token, blob):
    response = client.post(
        "/", data=push_body(blob), headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status_code == 202
    return response.get_json()["job"]


@pytest.mark.parametrize("fault", ["503", "reset", "truncate", "stall", "corrupt"])
def test_each_storage_fault_is_retried_until_the_install_succeeds(
    proxied, fault_proxy, bucket, token, settings, fault
):
    runtime, client = proxied
    fault_proxy.stall_seconds = 3  # beyond RECEIVER_READ_TIMEOUT=1
    fault_proxy.faults = [fault, fault]
    job_id = push_with(client, token, upload_model(bucket, 123))
    for _ in range(3):
        runtime.worker.run_once()
    job = runtime.journal.get(job_id)
    assert (job.state, job.attempts) == (JobState.INSTALLED, 3)
    assert fault_proxy.downloads == 3
    assert same_files(settings.model_dir / "half_plus_two" / "123")
    assert visible(settings.model_dir / "half_plus_two") == sorted(
        str(p.relative_to(settings.model_dir / "half_plus_two"))
        for p in (settings.model_dir / "half_plus_two").rglob("*")
        if not p.name.startswith(".staging")
    )


def test_out_of_attempts_the_job_fails_with_its_last_reason(
    proxied, fault_proxy, bucket, token, settings
):
    runtime, client = proxied
    fault_proxy.faults = ["503"] * 10
    job_id = push_with(client, token, upload_model(bucket, 123))
    for _ in range(settings.max_attempts + 2):
        runtime.worker.run_once()
    job = runtime.journal.get(job_id)
    assert job.state is JobState.FAILED
    assert job.attempts == settings.max_attempts == 5
    assert "HTTP 503" in job.reason
    assert fault_proxy.downloads == 5
    assert visible(settings.model_dir) == []  # no version, no staging, no empty model dir


def test_retry_command_runs_a_failed_job_again(proxied, fault_proxy, bucket, token, environ):
    runtime, client = proxied
    fault_proxy.faults = ["503"] * 5
    job_id = push_with(client, token, upload_model(bucket, 123))
    for _ in range(5):
        runtime.worker.run_once()
    assert runtime.journal.get(job_id).state is JobState.FAILED
    retry = subprocess.run(
        [sys.executable, "-m", "receiver", "retry", str(job_id)],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(retry.stdout)["state"] == "queued"
    runtime.worker.run_once()
    assert runtime.journal.get(job_id).state is JobState.INSTALLED


def test_superseded_job_is_skipped_without_a_download(
    proxied, fault_proxy, bucket, token, settings
):
    runtime, client = proxied
    old = push_with(client, token, upload_model(bucket, 3))
    for version in (5, 6):
        push_with(client, token, upload_model(bucket, version))
    # Claim order is oldest first: take 3 out of the way so 5 and 6 install first.
    runtime.journal.claim("test", 60, job_id=old)
    runtime.journal.retry_later(old, "test", "test: later", 3600)
    runtime.worker.run_once()
    runtime.worker.run_once()
    downloads = fault_proxy.downloads
    runtime.journal.claim(runtime.worker.owner, 60, job_id=old)  # due now, whatever its delay
    runtime.worker.run_job(runtime.journal.get(old))
    job = runtime.journal.get(old)
    assert job.state is JobState.SKIPPED
    assert "older than every version kept" in job.reason
    assert fault_proxy.downloads == downloads
    assert servable_versions(settings) == [5, 6]


def servable_versions(settings):
    return installed_versions(settings.model_dir / "half_plus_two")


def test_disk_full_fails_cleanly_and_keeps_the_installed_versions(tmp_path, environ, bucket, token):
    small_disk = tmp_path / "small-disk"
    small_disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small_disk)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {mount.stderr.decode().strip()}")
    try:
        settings = Settings.from_env(
            {**environ, "RECEIVER_MODEL_DIR": str(small_disk), "RECEIVER_RETRY_DELAY": "0",
             "RECEIVER_MAX_ATTEMPTS": "2"}
        )  # fmt: skip
        app = create_app(settings)
        runtime, client = app.extensions["receiver"], app.test_client()
        push_with(client, token, upload_model(bucket, 1))
        runtime.worker.run_once()
        # Incompressible weights larger than the free space: refused before the download.
        big = tmp_path / "big"
        shutil.copytree(HALF_PLUS_TWO, big)
        (big / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(12 * 2**20))
        job_id = push_with(client, token, upload_model(bucket, 2, source=big))
        runtime.worker.run_once()
        job = runtime.journal.get(job_id)
        assert job.state is JobState.FAILED, job.reason
        assert "needs about 12.0 MiB" in job.reason and "free" in job.reason, job.reason
        # Weights that compress (zeros) pass that check and fill the disk while unpacking.
        (big / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(12 * 2**20))
        job_id = push_with(client, token, upload_model(bucket, 3, source=big))
        runtime.worker.run_once()
        assert runtime.journal.get(job_id).state is JobState.QUEUED  # transient: retried
        runtime.worker.run_once()
        job = runtime.journal.get(job_id)
        assert job.state is JobState.FAILED
        assert "disk full" in job.reason or "No space left" in job.reason
        assert same_files(small_disk / "half_plus_two" / "1")
        assert sorted(os.listdir(small_disk / "half_plus_two")) == ["1"]
    finally:
        subprocess.run(["umount", str(small_disk)], check=False)


def upload_directory(bucket, version, model="half_plus_two", source=HALF_PLUS_TWO, marker=True):
    """Publish a SavedModel as a folder of objects, the way TFX Pusher or gsutil cp -r do."""
    blobs = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        blob = bucket.blob(f"models/{model}/{version}/{path.relative_to(source)}")
        blob.upload_from_filename(str(path))
        blobs.append(blob)
    if marker:
        done = bucket.blob(f"models/{model}/{version}/_SUCCESS")
        done.upload_from_string(b"")
        blobs.append(done)
    return blobs


def test_a_directory_upload_installs_on_its_marker(runtime, bucket, push, settings):
    blobs = upload_directory(bucket, 42)
    answers = [push(blob) for blob in blobs]
    assert [a.get_json()["outcome"] for a in answers[:-1]] == ["ignored"] * (len(blobs) - 1)
    assert "installed when" in answers[0].get_json()["reason"]
    assert answers[-1].status_code == 202
    runtime.worker.run_once()
    assert only_job(runtime).state is JobState.INSTALLED
    assert same_files(settings.model_dir / "half_plus_two" / "42")
    assert not (settings.model_dir / "half_plus_two" / "42" / "_SUCCESS").exists()


def test_a_directory_without_its_marker_is_not_installed(runtime, bucket, push, settings):
    for blob in upload_directory(bucket, 42, marker=False):
        assert push(blob).get_json()["outcome"] == "ignored"
    assert not runtime.worker.run_once()
    assert not (settings.model_dir / "half_plus_two").exists()


def test_a_marker_alone_fails_with_a_reason(runtime, bucket, push):
    marker = bucket.blob("models/half_plus_two/42/_SUCCESS")
    marker.upload_from_string(b"")
    push(marker)
    runtime.worker.run_once()
    assert "nothing but its done marker" in only_job(runtime).reason


def test_a_directory_with_a_hostile_object_name_fails(runtime, bucket, push, settings, tmp_path):
    upload_directory(bucket, 42, marker=False)
    bucket.blob("models/half_plus_two/42/../../../escaped.txt").upload_from_string(b"x")
    marker = bucket.blob("models/half_plus_two/42/_SUCCESS")
    marker.upload_from_string(b"")
    push(marker)
    runtime.worker.run_once()
    job = only_job(runtime)
    assert job.state is JobState.FAILED
    assert "climbs out of the archive with '..'" in job.reason
    assert visible(settings.model_dir) == []  # not even an empty model dir
    assert not list(tmp_path.rglob("escaped.txt"))


def test_sync_installs_a_completed_directory(runtime, bucket, settings):
    upload_directory(bucket, 42)
    upload_directory(bucket, 43, marker=False)  # newer, but not finished
    jobs = sync(settings, runtime.store, runtime.journal)
    assert [(job.model, job.version) for job in jobs] == [("half_plus_two", 42)]
    runtime.worker.run_once()
    assert same_files(settings.model_dir / "half_plus_two" / "42")


def test_models_config_lists_two_models_after_their_installs(environ, bucket, token, tmp_path):
    config = tmp_path / "models.config"
    app = create_app(Settings.from_env({**environ, "RECEIVER_MODEL_CONFIG_FILE": str(config)}))
    runtime, client = app.extensions["receiver"], app.test_client()
    for model in ("half_plus_two", "half_plus_three"):
        push_with(client, token, upload_model(bucket, 1, model=model))
        runtime.worker.run_once()
    assert client.get("/status").get_json()["model_config"] == {
        "path": str(config),
        "models": ["half_plus_two", "half_plus_three"],
        "problem": None,
    }


def test_a_worker_stalled_past_its_lease_gives_way_and_records_nothing(
    proxied, fault_proxy, bucket, token, settings, caplog, monkeypatch
):
    """A's process stalls mid-download (suspended, starved) past its lease; B takes the job
    over and installs it; when A wakes up it abandons its install and overwrites nothing.
    A stalled process renews nothing: its lease keeper is stalled with it."""
    monkeypatch.setattr(
        "receiver.worker._Heartbeat.kept_alive", lambda self: contextlib.nullcontext()
    )
    runtime, client = proxied
    job_id = push_with(client, token, upload_model(bucket, 9))
    stalled = Worker(runtime.journal, runtime.installer, RetryPolicy(3), lease_seconds=0.01)
    successor = Worker(runtime.journal, runtime.installer, RetryPolicy(3))
    fault_proxy.faults = ["hold"]  # A's download pauses halfway; B's goes through
    thread = threading.Thread(target=stalled.run_once)
    thread.start()
    assert fault_proxy.holding.wait(30)
    while time.time() <= runtime.journal.get(job_id).lease_until:  # A's lease runs out
        time.sleep(0.01)
    assert successor.run_once()  # A's lease has run out: B claims the job
    taken_over = runtime.journal.get(job_id)
    assert (taken_over.state, taken_over.owner) == (JobState.INSTALLED, successor.owner)
    fault_proxy.release.set()
    thread.join(30)
    after = runtime.journal.get(job_id)
    assert (after.state, after.owner, after.reason) == (JobState.INSTALLED, successor.owner, None)
    assert servable_versions(settings) == [9]
    assert visible(settings.model_dir / "half_plus_two") == visible_of_one_version(9)
    assert "another worker took this job over" in caplog.text


def visible_of_one_version(version):
    return sorted(
        [str(version), f"{version}/.receiver.json"]
        + [f"{version}/{p.relative_to(HALF_PLUS_TWO)}" for p in HALF_PLUS_TWO.rglob("*")]
    )


@pytest.mark.parametrize("kind", ["file", "symlink to the graph"])
def test_an_archive_carrying_the_receivers_own_provenance_file_is_refused(
    runtime, bucket, push, settings, kind
):
    """`.receiver.json` is the receiver's: written through a link it would replace the
    graph after the checks passed."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(HALF_PLUS_TWO.rglob("*")):
            tar.add(path, f"00000123/{path.relative_to(HALF_PLUS_TWO)}", recursive=False)
        info = tarfile.TarInfo("00000123/.receiver.json")
        if kind == "file":
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
        else:
            info.type, info.linkname = tarfile.SYMTYPE, "saved_model.pb"
            tar.addfile(info)
    push(upload_model(bucket, 9, data=buffer.getvalue()))
    runtime.worker.run_once()
    job = only_job(runtime)
    assert job.state is JobState.FAILED, job.reason
    assert "has its own .receiver.json" in job.reason
    assert visible(settings.model_dir) == []


def test_a_hand_placed_zero_padded_version_gets_no_twin(runtime, bucket, push, settings):
    shutil.copytree(HALF_PLUS_TWO, settings.model_dir / "half_plus_two" / "00000123")
    push(upload_model(bucket, 123))
    runtime.worker.run_once()
    job = only_job(runtime)
    assert job.state is JobState.FAILED and "already installed" in job.reason
    assert os.listdir(settings.model_dir / "half_plus_two") == ["00000123"]
