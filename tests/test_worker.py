"""The worker and install pipeline against the real storage emulator."""

import io
import tarfile

import pytest

from receiver.devtools import archive_directory
from receiver.journal import JobState
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


def test_archive_without_a_top_level_dir(runtime, bucket, push, settings):
    blob = upload_model(bucket, 5, data=archive_directory(HALF_PLUS_TWO, "tar.gz"))
    push(blob)
    runtime.worker.run_once()
    assert same_files(settings.model_dir / "half_plus_two" / "5")


def test_not_a_saved_model_fails_for_good_and_leaves_nothing(runtime, bucket, push, settings):
    push(upload_model(bucket, 7, source=FIXTURES / "tfserving_configs"))
    runtime.worker.run_once()
    job = only_job(runtime)
    assert job.state is JobState.FAILED
    assert "not a SavedModel" in job.reason
    assert visible(settings.model_dir) == ["half_plus_two"]


def test_hostile_archive_fails_and_nothing_escapes(runtime, bucket, push, settings, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    push(upload_model(bucket, 8, data=buffer.getvalue()))
    runtime.worker.run_once()
    job = only_job(runtime)
    assert (job.state, "'..'" in job.reason) == (JobState.FAILED, True)
    assert visible(settings.model_dir) == ["half_plus_two"]
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
    assert visible(settings.model_dir) == ["half_plus_two"]
