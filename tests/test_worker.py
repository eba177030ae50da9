"""The job loop against the real storage emulator: claims, retries, faults, records."""

import json
import os
import platform
import subprocess
import sys
import threading

import pytest

from receiver import modeldir
from receiver.config import Settings
from receiver.vocabulary import JobState
from receiver.web import create_app
from receiver.worker import RetryPolicy, Worker
from tests.helpers import PROJECT_ROOT, push_body, same_files, upload_model
from tests.installs import only_job, push_with, visible


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


@pytest.mark.parametrize("ending", ["object deleted", "too many attempts"])
def test_waiting_pushes_hear_of_a_job_that_ends_before_it_installs(runtime, bucket, push, ending):
    blob = upload_model(bucket, 5)
    push(blob)
    job = only_job(runtime)
    if ending == "object deleted":
        assert runtime.journal.request_withdrawal(job.ref) is not None
        expected = JobState.SKIPPED
    else:  # each attempt cut off: claimed, then its process died (lease gone)
        for _ in range(runtime.worker.retry.max_attempts):
            runtime.journal.claim("died", lease_seconds=-1)
        expected = JobState.FAILED
    with runtime.worker.changed:
        thread = threading.Thread(target=runtime.worker.run_once)
        thread.start()
        assert runtime.worker.changed.wait(timeout=120), "the worker never told its waiters"
        assert only_job(runtime).state is expected
    thread.join()


def test_a_push_hears_of_its_install_before_the_replaced_version_is_deleted(
    runtime, bucket, push, settings, monkeypatch
):
    """The prune hides the version it replaces at once and deletes it once the job is
    recorded: a waiting push's answer does not wait for a model's deletion."""
    release = threading.Event()
    empty_trash = modeldir.empty_trash

    def held(model_root):
        if any(model_root.glob(".trash-*")):  # a model's deletion takes a while
            release.wait(120)
        empty_trash(model_root)

    monkeypatch.setattr(modeldir, "empty_trash", held)
    model_root = settings.model_dir / "half_plus_two"
    for version in (1, 2):
        push(upload_model(bucket, version))
        runtime.worker.run_once()
    push(upload_model(bucket, 3))  # RECEIVER_KEEP_VERSIONS=2: version 1 goes
    with runtime.worker.changed:
        thread = threading.Thread(target=runtime.worker.run_once)
        thread.start()
        assert runtime.worker.changed.wait(timeout=120), "the worker never told its waiters"
        assert runtime.journal.get(3).state is JobState.INSTALLED
        assert modeldir.installed_versions(model_root) == [2, 3]  # out of TF Serving's sight
        assert [p.name[:9] for p in model_root.glob(".trash-*")] == [".trash-1-"]
    release.set()
    thread.join()
    assert sorted(p.name for p in model_root.iterdir()) == ["2", "3"]


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


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("corrupt", "index as read first differs"),  # the first byte of the ranged tail
        ("truncate", "a range read broke off"),  # the ranged tail cut short
        ("503", "HTTP 503"),
    ],
)
def test_a_fault_in_a_zips_ranged_read_is_retried(
    proxied, fault_proxy, bucket, token, settings, fault, reason
):
    """A zip's index is read by a ranged read before the one stream (issue 23)."""
    runtime, client = proxied
    fault_proxy.faults = [fault]
    job_id = push_with(client, token, upload_model(bucket, 123, "zip"))
    runtime.worker.run_once()
    job = runtime.journal.get(job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)
    assert reason in job.reason
    runtime.worker.run_once()
    assert runtime.journal.get(job_id).state is JobState.INSTALLED
    assert same_files(settings.model_dir / "half_plus_two" / "123")


def test_a_zip_from_a_server_without_ranges_is_spooled_and_installs(
    proxied, fault_proxy, bucket, token, settings
):
    runtime, client = proxied
    fault_proxy.ignore_ranges = True
    job_id = push_with(client, token, upload_model(bucket, 123, "zip"))
    runtime.worker.run_once()
    assert runtime.journal.get(job_id).state is JobState.INSTALLED
    assert same_files(settings.model_dir / "half_plus_two" / "123")
    assert fault_proxy.downloads == 2  # the range answered whole (and dropped), then the spool


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


# Eight threads alive at once, each allocating: glibc gives each a heap of its own unless
# the arenas are limited; malloc_stats() then prints one "Arena N:" block per heap. The
# limit is set where a worker process sets it: when its install thread starts.
_EIGHT_THREADS_ALLOCATING = """
import ctypes, sys, threading
from receiver.worker import Worker
if sys.argv[1] == "limited":
    worker = Worker.__new__(Worker)  # no journal: only its start is run, its loop is not
    worker.run = lambda: None
    worker.start()
barrier = threading.Barrier(8)
def allocate():
    barrier.wait()
    blocks = [bytearray(4096) for _ in range(64)]
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()
"""

_GLIBC_OWN_LIMITS = ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")


def _heaps(mode: str, **env: str) -> int:
    inherited = {k: v for k, v in os.environ.items() if k not in _GLIBC_OWN_LIMITS}
    result = subprocess.run(
        [sys.executable, "-c", _EIGHT_THREADS_ALLOCATING, mode],
        env={**inherited, "PYTHONPATH": str(PROJECT_ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return sum(line.startswith("Arena ") for line in result.stderr.splitlines())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_worker_keeps_its_threads_to_two_heaps_so_installs_do_not_grow_its_memory():
    assert _heaps("unlimited") > 2  # what every install's new threads would do
    assert _heaps("limited") == 2
    # A limit the operator set for glibc itself wins.
    assert _heaps("limited", MALLOC_ARENA_MAX="3") == 3
    assert _heaps("limited", GLIBC_TUNABLES="glibc.malloc.arena_max=4") == 4
