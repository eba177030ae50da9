"""The install pipeline, through the worker, against the real storage emulator: what
is refused, what is pruned, and that a failure leaves nothing half-installed."""

import io
import os
import shutil
import subprocess
import tarfile

import pytest

from receiver.config import Settings
from receiver.dev.tools import archive_directory
from receiver.vocabulary import JobState
from receiver.web import create_app
from tests.helpers import FIXTURES, HALF_PLUS_TWO, same_files, upload_model
from tests.installs import only_job, push_with, servable_versions, visible, visible_of_one_version


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
