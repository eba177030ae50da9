"""Sliced downloads against the real storage emulator, through the fault proxy.

Each test reads one object generation as parallel ranged GETs and checks what a user
would notice: the exact bytes in order, the whole-object checksum, bounded memory, a
broken slice resumed, and the same errors as a single stream.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc

import pytest

from receiver.config import Slicing
from receiver.download import sliced
from receiver.download.sliced import worth_slicing
from receiver.download.store import ObjectStore
from receiver.errors import PermanentError, TransientError
from receiver.objectref import ObjectRef

SLICE = 256 * 1024


@pytest.fixture
def proxied_store(fault_proxy, monkeypatch):
    """A store reading in slices of 256 KiB, 4 at a time, through the fault proxy; from
    the first byte, unless `adaptive` (the default setting) asks it to time one stream first."""

    def make(slices: int = 4, threshold: int = 1, adaptive: bool = False) -> ObjectStore:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", fault_proxy.url)
        slicing = Slicing(slices=slices, slice_bytes=SLICE, threshold=threshold, adaptive=adaptive)
        return ObjectStore.from_environment(read_timeout=5, slicing=slicing)

    return make


def upload(bucket, size: int) -> tuple[ObjectRef, bytes]:
    data = os.urandom(size)
    blob = bucket.blob("models/m/1.tar")
    blob.upload_from_string(data)
    return ObjectRef(bucket.name, blob.name, blob.generation, size, crc32c=blob.crc32c), data


def read_all(download) -> bytes:
    chunks = []
    while chunk := download.read(100_000):  # not a multiple of the slice size
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_large_object_arrives_whole_and_in_order_from_many_ranged_reads(
    proxied_store, fault_proxy, bucket
):
    obj, data = upload(bucket, 20 * SLICE + 17)
    with proxied_store().open(obj) as download:
        assert download.sliced
        assert read_all(download) == data
        download.verify()
    assert fault_proxy.downloads == 21  # one ranged GET per slice, the short last one too


def test_objects_below_the_threshold_are_one_stream(proxied_store, fault_proxy, bucket):
    obj, data = upload(bucket, 3 * SLICE)
    with proxied_store(threshold=4 * SLICE).open(obj) as download:
        assert not download.sliced
        assert read_all(download) == data
    assert fault_proxy.downloads == 1


def test_memory_held_is_bounded_by_slices_times_slice_size(bucket):
    obj, data = upload(bucket, 64 * SLICE)  # 16 MiB through a window of 4 x 256 KiB
    # Straight to the emulator: the fault proxy, in this process, holds whole responses.
    slicing = Slicing(slices=4, slice_bytes=SLICE, threshold=1, adaptive=False)
    store = ObjectStore.from_environment(read_timeout=5, slicing=slicing)
    tracemalloc.start()
    try:
        with store.open(obj) as download:
            total = 0
            while chunk := download.read(64 * 1024):
                total += len(chunk)
            download.verify()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == len(data)
    assert peak < 4 * SLICE + 3 * 2**20, f"peak {peak} bytes for a 16 MiB object"


def test_a_slice_whose_connection_breaks_resumes_where_it_stopped(
    proxied_store, fault_proxy, bucket
):
    obj, data = upload(bucket, 8 * SLICE)
    fault_proxy.faults = ["ok", "reset", "truncate"]
    with proxied_store().open(obj) as download:
        assert read_all(download) == data
        download.verify()
    assert fault_proxy.downloads == 8 + 2  # two slices asked again for what they missed


def test_a_slice_that_keeps_failing_fails_the_download_as_transient(
    proxied_store, fault_proxy, bucket
):
    obj, _ = upload(bucket, 8 * SLICE)
    fault_proxy.faults = ["ok"] + ["503"] * 30
    with proxied_store().open(obj) as download, pytest.raises(TransientError, match="slice"):
        read_all(download)


def test_a_damaged_slice_is_caught_by_the_whole_object_crc32c(proxied_store, fault_proxy, bucket):
    obj, _ = upload(bucket, 8 * SLICE)
    fault_proxy.faults = ["ok", "ok", "corrupt"]
    with proxied_store().open(obj) as download:
        read_all(download)
        with pytest.raises(TransientError, match="crc32c mismatch"):
            download.verify()


def test_an_object_overwritten_mid_download_is_permanent(proxied_store, bucket):
    obj, _ = upload(bucket, 40 * SLICE)
    with proxied_store(slices=2).open(obj) as download:
        download.read(1024)
        bucket.blob(obj.name).upload_from_string(b"a new generation")  # the old one is gone
        with pytest.raises(PermanentError, match="does not exist"):
            read_all(download)


def test_a_server_that_ignores_ranges_is_read_as_one_stream(proxied_store, fault_proxy, bucket):
    obj, data = upload(bucket, 8 * SLICE)
    fault_proxy.ignore_ranges = True
    with proxied_store().open(obj) as download:
        assert not download.sliced
        assert read_all(download) == data
        download.verify()


def test_closing_early_stops_every_slice_thread(proxied_store, bucket):
    obj, _ = upload(bucket, 40 * SLICE)
    with proxied_store().open(obj) as download:
        download.read(1024)
    assert not [t for t in threading.enumerate() if t.name.startswith("slice-")]


def test_the_generation_s_own_length_wins_over_a_wrong_size_in_the_event(proxied_store, bucket):
    obj, data = upload(bucket, 6 * SLICE + 5)
    told_wrong = ObjectRef(obj.bucket, obj.name, obj.generation, 3 * len(data), crc32c=obj.crc32c)
    with proxied_store().open(told_wrong) as download:
        assert read_all(download) == data
        download.verify()


def read_slowly(download) -> bytes:
    """A reader far slower than the loopback network: about 10 ms per 100 kB."""
    chunks = []
    while chunk := download.read(100_000):
        chunks.append(chunk)
        time.sleep(0.01)
    return b"".join(chunks)


def test_auto_keeps_one_stream_when_the_reader_not_the_network_is_slow(
    proxied_store, fault_proxy, bucket
):
    obj, data = upload(bucket, 12 * SLICE)  # past the first window the stream is timed over
    with proxied_store(adaptive=True).open(obj) as download:
        assert read_slowly(download) == data
        download.verify()
        assert not download.sliced
        assert download.waiting_share is not None and download.waiting_share < 0.5
    assert fault_proxy.downloads == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("slice-")]


def test_auto_slices_the_rest_when_the_network_keeps_the_reader_waiting(
    proxied_store, fault_proxy, bucket
):
    obj, data = upload(bucket, 20 * SLICE)
    fault_proxy.throttle = 4 * 2**20  # bytes/s for each download: the network is the bottleneck
    with proxied_store(adaptive=True).open(obj) as download:
        assert read_all(download) == data
        download.verify()
        assert download.sliced
        assert download.waiting_share is not None and download.waiting_share >= 0.5
    # Timed over PROBE_WINDOWS windows of a slice's worth (each three reads of 100 kB:
    # 2.4 MB in all), held up in every one; the first response went on as the first
    # slice from there: 10 more slices to the end of the 5 MiB.
    assert fault_proxy.downloads == 1 + 10


@pytest.mark.parametrize(
    ("waited", "elapsed", "received", "worth_it"),
    [
        (0.9, 1.0, 50 * 2**20, True),  # 50 MiB/s, reader idle 90%: the connection is the limit
        (0.2, 1.0, 50 * 2**20, False),  # the reader is busy: more bytes would only queue
        (0.9, 1.0, 2 * 2**30, False),  # 2 GiB/s waited for: the machine is the limit
        (0.6, 1.0, 400 * 2**20, False),  # 670 MiB/s while waited for: so is it here
    ],
)
def test_slicing_is_worth_it_only_for_a_slow_connection_and_a_waiting_reader(
    waited, elapsed, received, worth_it
):
    assert worth_slicing(waited, elapsed, received) is worth_it


class _Clock:
    """The time `AdaptiveDownload` reads, moved by the fake connection and the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _Connection:
    """A response body whose reads take the time a connection of `rates[i]` bytes/s
    would take for the i-th MiB (the last rate for every MiB after)."""

    def __init__(self, clock: _Clock, size: int, rates: list[float]) -> None:
        self.clock = clock
        self.left = size
        self.sent = 0
        self.rates = rates
        self.raw = self
        self.headers = {"Content-Length": str(size)}

    def read(self, amount: int, decode_content: bool = True) -> bytes:
        amount = min(amount, self.left)
        self.clock.now += amount / self.rates[min(self.sent // 2**20, len(self.rates) - 1)]
        self.left -= amount
        self.sent += amount
        return bytes(amount)

    def close(self) -> None:
        pass


def probed(monkeypatch, rates: list[float], size: int = 32 * 2**20):
    """An `AdaptiveDownload` timed in windows of 1 MiB over a fake connection and clock,
    read to its end by a reader that takes no time; returns it and where slices began."""
    clock = _Clock()
    monkeypatch.setattr(sliced, "time", clock)
    began: list[int] = []

    def slices_from(start: int, first: object) -> sliced.SliceFetcher:
        began.append(start)
        rest = _Connection(clock, size - start, rates[-1:])
        return rest  # type: ignore[return-value]  # read(amount) is all the download asks

    response = _Connection(clock, size, rates)
    download = sliced.AdaptiveDownload(
        response,  # type: ignore[arg-type]  # raw.read, headers and close: all it asks
        "gs://b/m/1.tar", size, None, None, 2**20, slices_from,
    )  # fmt: skip
    while download.read(256 * 1024):
        pass
    return download, began


def test_auto_keeps_one_stream_when_a_slow_start_is_followed_by_fast_bytes(monkeypatch):
    # The first MiB at 100 MB/s (a stream's start, or a read-ahead filling), then 2 GB/s:
    # this machine, not the connection, is the limit.
    download, began = probed(monkeypatch, [100e6, 2e9])
    assert not download.sliced
    assert began == []


def test_auto_slices_only_after_every_window_of_the_probe_was_held_up(monkeypatch):
    download, began = probed(monkeypatch, [50e6])  # a slow connection throughout
    assert download.sliced
    assert began == [sliced.PROBE_WINDOWS * 2**20]
