"""Streaming pinned generations from the real storage emulator."""

import gzip
import os

import pytest
import requests

from receiver.download.store import ObjectStore
from receiver.download.stream import Download
from receiver.errors import PermanentError, TransientError
from receiver.objectref import ObjectRef
from tests.stubserver import Reply, StubServer


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


def test_a_missing_bucket_is_named_not_answered_with_a_raw_404(store):
    with pytest.raises(PermanentError) as missing:
        store.list_objects("no-such-bucket", "prod/")
    assert str(missing.value) == (
        "cannot list gs://no-such-bucket/prod/: bucket gs://no-such-bucket does not exist "
        "(or this identity cannot see it)"
    )


LACKS_LIST = (
    "sa@p.iam.gserviceaccount.com does not have storage.objects.list access to the Google "
    "Cloud Storage bucket. Permission 'storage.objects.list' denied on resource (or it may "
    "not exist)."
)


def test_a_listing_without_permission_says_who_lacks_what_and_what_to_grant(monkeypatch):
    """Cloud Storage's answer to an identity without storage.objects.list on the bucket."""
    forbidden = Reply.json({"error": {"code": 403, "message": LACKS_LIST}}, status=403)
    with StubServer({"GET": lambda request: forbidden}) as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        with pytest.raises(PermanentError) as refused:
            ObjectStore.from_environment().list_objects("models", "prod/")
    assert str(refused.value) == (
        f"cannot list gs://models/prod/: no permission to list or read gs://models (HTTP 403: "
        f"{LACKS_LIST}); grant this identity roles/storage.objectViewer on the bucket"
    )


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


def test_a_range_of_a_generation_is_read_whole(store, bucket):
    data = os.urandom(100_000)
    blob = bucket.blob("models/m/1.zip")
    blob.upload_from_string(data)
    ref = ObjectRef(bucket.name, blob.name, blob.generation)
    middle = store.read_range(ref, 1000, 5000)
    assert (middle.start, middle.data, middle.size) == (1000, data[1000:5000], len(data))
    assert middle.content_encoding is None
    tail = store.read_range(ref, -300)
    assert (tail.start, tail.data) == (len(data) - 300, data[-300:])
    assert store.read_range(ref, 99_000, 200_000).data == data[99_000:]  # to the end


def test_a_tail_longer_than_the_object_is_all_of_it(store, bucket):
    blob = bucket.blob("models/m/1.zip")
    blob.upload_from_string(b"small")
    answer = store.read_range(ObjectRef(bucket.name, blob.name, blob.generation), -70_000)
    assert (answer.start, answer.data, answer.size) == (0, b"small", 5)


def test_a_range_says_what_the_object_is_stored_as(store, bucket):
    blob = bucket.blob("models/m/1.zip")
    blob.content_encoding = "gzip"
    blob.upload_from_string(gzip.compress(b"weights" * 1000, mtime=0))
    answer = store.read_range(ObjectRef(bucket.name, blob.name, blob.generation), -10)
    assert answer.content_encoding == "gzip"
    assert answer.data == gzip.compress(b"weights" * 1000, mtime=0)[-10:]  # as stored


def test_no_range_of_an_empty_object_or_from_a_server_without_ranges(
    store, bucket, fault_proxy, monkeypatch
):
    empty = bucket.blob("models/m/1.zip")
    empty.upload_from_string(b"")
    assert store.read_range(ObjectRef(bucket.name, empty.name, empty.generation), -10) is None
    blob = bucket.blob("models/m/2.zip")
    blob.upload_from_string(b"payload")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fault_proxy.url)
    fault_proxy.ignore_ranges = True
    proxied = ObjectStore.from_environment()
    assert proxied.read_range(ObjectRef(bucket.name, blob.name, blob.generation), -3) is None


def test_a_range_of_a_generation_gone_is_permanent(store, bucket):
    with pytest.raises(PermanentError, match="does not exist"):
        store.read_range(ObjectRef(bucket.name, "models/m/404.zip", 1), -10)


def test_a_range_cut_short_is_transient(store, bucket, fault_proxy, monkeypatch):
    blob = bucket.blob("models/m/1.zip")
    blob.upload_from_string(os.urandom(10_000))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fault_proxy.url)
    fault_proxy.faults = ["truncate"]
    proxied = ObjectStore.from_environment()
    with pytest.raises(TransientError):
        proxied.read_range(ObjectRef(bucket.name, blob.name, blob.generation), -5000)
