"""Uploads made with `gcloud storage cp -Z` (stored `Content-Encoding: gzip`, served as stored)
install uncompressed through real gunicorn, the storage emulator and curl (issue 20)."""

from __future__ import annotations

import gzip

import pytest

from receiver.dev.tools import archive_directory
from tests.e2e.conftest import curl_push
from tests.helpers import HALF_PLUS_TWO, push_body, same_files


def upload_gzip_encoded(bucket, name: str, data: bytes):
    """What `gcloud storage cp -Z` does: gzip the bytes and store them gzip-encoded."""
    blob = bucket.blob(name)
    blob.content_encoding = "gzip"
    blob.upload_from_string(gzip.compress(data, mtime=0))
    return blob


@pytest.fixture
def receiver(gunicorn):
    gunicorn.env.update(RECEIVER_ACK="installed")
    return gunicorn.start()


@pytest.mark.parametrize("archive_format", ["tar.gz", "tar", "zip"])
def test_an_archive_uploaded_with_gcloud_storage_cp_z_installs(
    receiver, bucket, token, settings, tmp_path, archive_format
):
    data = archive_directory(HALF_PLUS_TWO, archive_format, top="00000123")
    blob = upload_gzip_encoded(bucket, f"models/encoded/1.{archive_format}", data)
    assert blob.content_encoding == "gzip"
    status, answer = curl_push(receiver.url, token(), push_body(blob), tmp_path)
    assert (status, answer["outcome"]) == (200, "installed"), answer
    assert same_files(settings.model_dir / "encoded" / "1")


def test_a_directory_uploaded_with_gcloud_storage_cp_z_installs_uncompressed(
    receiver, bucket, token, settings, tmp_path
):
    for path in sorted(HALF_PLUS_TWO.rglob("*")):
        if path.is_file():
            name = f"models/encoded-dir/1/{path.relative_to(HALF_PLUS_TWO)}"
            upload_gzip_encoded(bucket, name, path.read_bytes())
    marker = bucket.blob("models/encoded-dir/1/_SUCCESS")
    marker.upload_from_string(b"")
    status, answer = curl_push(receiver.url, token(), push_body(marker), tmp_path)
    assert (status, answer["outcome"]) == (200, "installed"), answer
    assert same_files(settings.model_dir / "encoded-dir" / "1")  # not gzip-compressed copies


def test_a_gzip_encoded_object_that_is_not_gzip_fails_naming_cp_z(
    receiver, bucket, token, tmp_path
):
    blob = bucket.blob("models/encoded/2.tar.gz")
    blob.content_encoding = "gzip"
    blob.upload_from_string(archive_directory(HALF_PLUS_TWO, "tar", top="00000123"))
    status, answer = curl_push(receiver.url, token(), push_body(blob), tmp_path)
    assert (status, answer["outcome"]) == (200, "failed"), answer
    assert "gcloud storage cp -Z" in answer["reason"]
