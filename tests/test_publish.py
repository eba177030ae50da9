"""`receiver publish`: checked as the receiver checks, packed, uploaded, never overwritten;
round trips through the real emulator into an install."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from receiver.publish import PublishError, publish
from tests.helpers import HALF_PLUS_TWO, PROJECT_ROOT, same_files


def names(bucket):
    return sorted(blob.name for blob in bucket.list_blobs())


@pytest.mark.parametrize("archive_format", ["tar.zst", "tar.gz", "tar"])
def test_a_published_export_installs(bucket, gcs, runtime, push, settings, archive_format):
    url = f"gs://{bucket.name}/models/half_plus_two/7"
    (written,) = publish(HALF_PLUS_TWO, url, archive_format=archive_format, client=gcs)
    assert written == f"{url}.{archive_format}"
    blob = bucket.get_blob(f"models/half_plus_two/7.{archive_format}")
    assert push(blob).status_code == 202
    runtime.worker.run_once()
    assert same_files(settings.model_dir / "half_plus_two" / "7")


def test_a_directory_upload_ends_with_its_marker_and_installs(bucket, gcs, runtime, push, settings):
    url = f"gs://{bucket.name}/models/half_plus_two/8"
    written = publish(HALF_PLUS_TWO, url, as_directory=True, client=gcs)
    assert written[-1] == f"{url}/_SUCCESS"
    blobs = {blob.name: blob for blob in bucket.list_blobs()}
    marker = blobs.pop("models/half_plus_two/8/_SUCCESS")
    assert all(blob.generation < marker.generation for blob in blobs.values())
    assert push(marker).status_code == 202
    runtime.worker.run_once()
    assert same_files(settings.model_dir / "half_plus_two" / "8")


def test_what_the_receiver_would_refuse_is_refused_before_any_upload(bucket, gcs, tf_exports):
    with pytest.raises(PublishError) as refused:
        publish(tf_exports / "train", f"gs://{bucket.name}/models/m/1", client=gcs)
    assert "the receiver would refuse it: tag sets in the SavedModel: {train}" in str(refused.value)
    assert names(bucket) == []


def test_a_published_version_is_never_overwritten_in_any_format(bucket, gcs):
    url = f"gs://{bucket.name}/models/half_plus_two/9"
    publish(HALF_PLUS_TWO, url, client=gcs)
    before = names(bucket)
    for archive_format in ("tar.zst", "tar"):
        with pytest.raises(PublishError, match="already published"):
            publish(HALF_PLUS_TWO, url, archive_format=archive_format, client=gcs)
    assert names(bucket) == before


def test_a_concurrent_upload_of_the_same_object_loses_to_the_precondition(bucket, gcs, monkeypatch):
    """The listing saw nothing, but the object appeared before the upload: 412, refused."""
    someone_else = bucket.blob("models/half_plus_two/10.tar.zst")
    monkeypatch.setattr(
        "receiver.publish._refuse_existing",
        lambda *args: someone_else.upload_from_string(b"someone else's"),
    )
    with pytest.raises(PublishError, match="already exists; versions are immutable"):
        publish(HALF_PLUS_TWO, f"gs://{bucket.name}/models/half_plus_two/10", client=gcs)
    assert someone_else.download_as_bytes() == b"someone else's"


def publish_command(destination: str, emulator_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", "publish", str(HALF_PLUS_TWO), destination],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "STORAGE_EMULATOR_HOST": emulator_url},
    )  # fmt: skip


def test_the_command_line_publishes_to_the_emulator_once(bucket, emulator):
    destination = f"gs://{bucket.name}/models/half_plus_two/11"
    first = publish_command(destination, emulator.url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"published {destination}.tar.zst"
    again = publish_command(destination, emulator.url)
    assert again.returncode == 2
    assert "half_plus_two version 11 is already published" in again.stderr


def test_a_destination_without_model_and_version_is_refused():
    with pytest.raises(PublishError, match="expected gs://BUCKET/PREFIX/MODEL/VERSION"):
        publish(HALF_PLUS_TWO, "gs://bucket/only")
    with pytest.raises(PublishError, match="must be a positive whole number"):
        publish(HALF_PLUS_TWO, "gs://bucket/models/m/latest")


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("gs://ab/models/m/3", "'ab' is not a bucket name (3 to 222 characters"),
        ("gs://Models/models/m/3", "'Models' is not a bucket name"),
        (
            "gs://bucket/prod/m/3.tar.gz",
            "without a suffix; publish names the object VERSION.FORMAT, FORMAT from --format "
            "(tar.zst by default): use gs://bucket/prod/m/3 --format tar.gz",
        ),
        ("gs://bucket/prod/m/3.zip", "without a suffix; publish names the object VERSION.FORMAT"),
    ],
)
def test_a_destination_the_receiver_could_not_read_is_refused_saying_why(destination, message):
    """The bucket rule is RECEIVER_SOURCE's: what publish takes, the receiver can be set to."""
    with pytest.raises(PublishError) as refused:
        publish(HALF_PLUS_TWO, destination)
    assert message in str(refused.value)


def test_a_missing_bucket_is_named_not_a_raw_404(emulator):
    published = publish_command("gs://no-such-bucket/models/half_plus_two/1", emulator.url)
    assert published.returncode == 2
    assert published.stderr == (
        "receiver: cannot list gs://no-such-bucket/models/half_plus_two/1: bucket "
        "gs://no-such-bucket does not exist (or this identity cannot see it)\n"
    )


def test_a_mistyped_export_or_a_directory_without_a_savedmodel_is_named_as_such(tmp_path):
    with pytest.raises(PublishError, match=r"/nonexistent: no such directory \(the SavedModel"):
        publish(tmp_path / "nonexistent", "gs://bucket/models/m/3")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(PublishError, match=r": the receiver would refuse it: not a SavedModel"):
        publish(tmp_path, "gs://bucket/models/m/3")
