"""Streaming pinned generations from the real storage emulator."""

import gzip
import os

import pytest
import requests

from receiver.download.store import ObjectStore
from receiver.download.stream import Download
from receiver.errors import PermanentError, TransientError
from receiver.objectref import ObjectRef


@pytest.fixture
def store(emulator):
    return ObjectStore.from_environment()


def read_all(download) -> bytes:
    chunks = []
    while chunk := download.read(64 * 1024):
        chunks.append(chunk)
    return b"".join(chunks)


def test_streams_the_exact_bytes_and_verifies_crc32c(store, bucket):
    data = os.urandom(3 * 1024 * 1024 + 17)
    blob = bucket.blob("models/m/1.tar")
    blob.upload_from_string(data)
    with store.open(
        ObjectRef(bucket.name, blob.name, blob.generation, crc32c=blob.crc32c)
    ) as download:
        assert read_all(download) == data
        download.verify()


def test_an_older_generation_is_pinned_not_replaced(store, bucket):
    blob = bucket.blob("models/m/1.tar")
    blob.upload_from_string(b"first")
    first_generation = blob.generation
    blob.upload_from_string(b"second")
    # The emulator keeps no history (an unversioned bucket): the old generation is gone.
    with pytest.raises(PermanentError, match="does not exist"):
        store.open(ObjectRef(bucket.name, blob.name, first_generation))


def test_crc32c_mismatch_is_transient(store, bucket):
    blob = bucket.blob("models/m/1.tar")
    blob.upload_from_string(b"payload")
    with store.open(
        ObjectRef(bucket.name, blob.name, blob.generation, crc32c="AAAAAA==")
    ) as download:
        read_all(download)
        with pytest.raises(TransientError, match="crc32c mismatch"):
            download.verify()


@pytest.mark.parametrize(("md5", "ok"), [("Mhw89IbtUJFk7eweGYH+yA==", True), ("wrong", False)])
def test_md5_is_checked_when_there_is_no_crc32c(store, bucket, md5, ok):
    blob = bucket.blob("models/m/1.tar")
    blob.upload_from_string(b"payload")
    url = store.media_url(bucket.name, blob.name, blob.generation)
    response = requests.get(url, stream=True, timeout=10)
    with Download(response, "test object", crc32c=None, md5=md5) as download:
        if ok:
            download.verify()
        else:
            with pytest.raises(TransientError, match="md5 mismatch"):
                download.verify()


def test_missing_object_is_permanent(store, bucket):
    with pytest.raises(PermanentError, match="does not exist"):
        store.open(ObjectRef(bucket.name, "models/m/404.tar", 1))


def test_unreachable_storage_is_transient(monkeypatch, bucket):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    store = ObjectStore.from_environment()
    with pytest.raises(TransientError, match="cannot reach"):
        store.open(ObjectRef(bucket.name, "models/m/1.tar", 1))


def test_a_gzip_encoded_object_streams_as_stored_and_says_so(store, bucket):
    """`gcloud storage cp -Z`: the checksum covers the stored (compressed) bytes."""
    stored = gzip.compress(b"weights" * 1000, mtime=0)
    blob = bucket.blob("models/m/1.tar")
    blob.content_encoding = "gzip"
    blob.upload_from_string(stored)
    ref = ObjectRef(bucket.name, blob.name, blob.generation, size=blob.size, crc32c=blob.crc32c)
    with store.open(ref) as download:
        assert download.content_encoding == "gzip"
        assert read_all(download) == stored
        download.verify()
    plain = bucket.blob("models/m/2.tar")
    plain.upload_from_string(b"weights")
    with store.open(ObjectRef(bucket.name, plain.name, plain.generation)) as download:
        assert download.content_encoding is None
