"""How fast does an object come off the storage emulator? curl vs. the receiver's stream.

    make bench     (or: PYTHONPATH=. .venv/bin/python benchmarks/download.py [SIZE_MB])

Uploads SIZE_MB (default 500) of random bytes to fake-gcs-server, then times, each best
of three: curl to /dev/null; the receiver's `Download` (512 KiB reads, crc32c checked);
the receiver's sliced read with its default slicing (ranged reads in parallel, in order,
crc32c checked; here on loopback, where no single stream is capped, it shows the cost of
slicing rather than its gain: benchmarks/sliced.py measures that); and
google-cloud-storage's `Blob.download_to_filename` with crc32c checking. Prints a
Markdown table; docs/benchmarks.md keeps a run's numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from benchmarks.common import run_times
from receiver.config import Slicing
from receiver.dev.tools import StorageEmulator
from receiver.download import ObjectStore
from receiver.objectref import ObjectRef


def best_of(runs: int, action: Callable[[], None]) -> float:
    return min(run_times(runs, action))


def main(size_mb: int) -> None:
    default = Slicing()
    emulator = StorageEmulator().start()
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
    try:
        client = storage.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator.url},
        )
        bucket = client.create_bucket("bench")
        blob = bucket.blob("models/m/1.tar")
        blob.upload_from_string(os.urandom(size_mb * 2**20), timeout=600)
        store = ObjectStore.from_environment()
        sliced_store = ObjectStore.from_environment(slicing=Slicing(threshold=1, adaptive=False))
        url = store.media_url(bucket.name, blob.name, blob.generation)

        def curl() -> None:
            subprocess.run(["curl", "-sS", "-o", "/dev/null", url], check=True)

        ref = ObjectRef(bucket.name, blob.name, blob.generation, blob.size, crc32c=blob.crc32c)

        def receiver_stream(store: ObjectStore = store) -> None:
            with store.open(ref) as d:
                d.verify()  # reads every byte, checking crc32c

        def download_to_filename() -> None:
            with tempfile.NamedTemporaryFile() as out:
                bucket.blob(blob.name).download_to_filename(out.name, checksum="crc32c")

        results = {
            "curl to /dev/null": best_of(3, curl),
            "receiver `Download` (512 KiB reads, crc32c)": best_of(3, receiver_stream),
            f"receiver sliced ({default.slices} x {default.slice_bytes >> 20} MiB, crc32c)": (
                best_of(3, lambda: receiver_stream(sliced_store))
            ),
            "`Blob.download_to_filename` (crc32c)": best_of(3, download_to_filename),
        }
    finally:
        emulator.stop()
    baseline = results["curl to /dev/null"]
    print(f"| {size_mb} MB object | seconds | vs curl |\n|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} | {seconds / baseline:.1f}x |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
