"""Directory uploads: every object beside the done marker, installed on the marker."""

import tracemalloc
import zlib
from types import SimpleNamespace
from typing import cast

import pytest

from receiver.config import Limits
from receiver.download import ObjectStore, ObjectStream
from receiver.errors import TransientError
from receiver.fetch import ByteCounter, fetch_directory
from receiver.objectref import ObjectRef
from receiver.sync import sync
from receiver.vocabulary import JobState
from tests.helpers import HALF_PLUS_TWO, same_files
from tests.installs import only_job, visible
from tests.unpack.archives import MemoryStore


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


class _Generated(ObjectStream):
    """An object of `size` bytes made as it is read: each read a new allocation, as a
    socket's is."""

    def __init__(self, size: int) -> None:
        super().__init__("generated", size, None, None)
        self._left = size

    def _next(self, amount: int) -> bytes:
        amount = min(amount, self._left)
        self._left -= amount
        return b"\x01" * amount


def test_a_directory_upload_holds_a_few_small_reads_per_object(tmp_path):
    """Eight objects are written at once, each read while its last read is written: with
    2 MiB reads (an archive's read-ahead chunk) that held 48 MiB, four times 512 KiB's."""
    size = 16 * 1024 * 1024
    objects = [ObjectRef("b", f"models/m/1/variables/v{n}", 1, size=size) for n in range(8)]
    store = SimpleNamespace(open=lambda obj: _Generated(size))
    staging = tmp_path / ".staging-1-job1-test"
    staging.mkdir()
    limits = Limits(max_unpacked_bytes=1024**3, max_files=100, max_ratio=200)
    tracemalloc.start()
    try:
        fetch_directory(
            cast(ObjectStore, store),
            ObjectRef("b", "models/m/1/_SUCCESS", 1),
            objects,
            staging,
            limits,
            ByteCounter(lambda done: None),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [path.stat().st_size for path in (staging / "variables").iterdir()] == [size] * 8
    assert peak < 20 * 1024 * 1024


def test_a_gzip_encoded_object_damaged_on_the_way_is_a_retry(tmp_path):
    """`cp -Z`: its gzip layer fails first (a CRC-32); the checksum says retry."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    encoded = packer.compress(b"graph" * 10_000) + packer.flush()
    damaged = encoded[:100] + bytes([encoded[100] ^ 1]) + encoded[101:]
    store = MemoryStore(encoded, "gzip", streamed=damaged)
    staging = tmp_path / ".staging-1-job1-test"
    staging.mkdir()
    with pytest.raises(TransientError, match="crc32c mismatch"):
        fetch_directory(
            cast(ObjectStore, store),
            ObjectRef("b", "models/m/1/_SUCCESS", 1),
            [ObjectRef("b", "models/m/1/saved_model.pb", 1, size=len(encoded))],
            staging,
            Limits(max_unpacked_bytes=1024**3, max_files=100, max_ratio=200),
            ByteCounter(lambda done: None),
        )
