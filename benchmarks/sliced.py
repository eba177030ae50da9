"""Beyond one stream: sliced downloads against a per-connection bandwidth cap.

    make bench    (or: PYTHONPATH=. .venv/bin/python benchmarks/sliced.py --size 2048)

On Cloud Storage one HTTP stream is the usual ceiling for a large object. Here the
emulator sits behind `benchmarks/throttle.py`, a TCP proxy capping each connection at
--rate MB/s, and the same --size MiB tar.gz (incompressible weights, so the archive is
as large as the model) is installed by:

* the receiver with RECEIVER_DOWNLOAD_SLICES=N for each N of --slices (1 = one stream),
  timed from a real push to its `installed` answer (RECEIVER_ACK=installed), a fresh
  gunicorn for every run; slicing is left to decide as by default (RECEIVER_SLICING=auto:
  the first two slices' worth is read as one stream, then the capped connection makes it
  slice);
* curl | tar: one stream, unpacked as it arrives (the single-stream limit);
* parallel curl, then tar: N `curl -r` ranged downloads at once into N files, then
  `cat` of the parts into `tar -xz` (how one would slice by hand).

Every method writes to a fresh directory on --target (default /dev/shm: a memory volume,
as on Cloud Run or a Kubernetes `emptyDir` with `medium: Memory`), so the network is what
is measured, not this machine's disk. Medians of --runs runs; ratios from the same run.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from isal import igzip

from benchmarks.common import ROOT, Receiver, median_of
from benchmarks.throttle import ThrottlingProxy
from receiver.dev.tools import StorageEmulator

SAMPLE = ROOT / "receiver" / "dev" / "sample" / "half_plus_two" / "00000123"
MIB = 2**20


def incompressible_archive(size_mib: int) -> bytes:
    """half_plus_two's graph with `size_mib` MiB of random weights, as a tar.gz."""
    files = {
        "m/saved_model.pb": (SAMPLE / "saved_model.pb").read_bytes(),
        "m/variables/variables.index": (SAMPLE / "variables" / "variables.index").read_bytes(),
        "m/variables/variables.data-00000-of-00001": os.urandom(size_mib * MIB),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return igzip.compress(buffer.getvalue(), compresslevel=1)


class Bench:
    def __init__(self, proxy: ThrottlingProxy, blob: storage.Blob, target: Path) -> None:
        self.proxy = proxy
        self.blob = blob
        self.target = target
        self.url = (
            f"{proxy.url}/download/storage/v1/b/{blob.bucket.name}/o/"
            f"{blob.name.replace('/', '%2F')}?alt=media&generation={blob.generation}"
        )
        self.peak_rss: dict[int, int] = {}

    def receiver(self, slices: int, slice_mib: int) -> float:
        """Seconds of one install by a fresh receiver (its own journal: the object is new)."""
        workdir = Path(tempfile.mkdtemp(prefix="sliced-", dir=self.target))
        env = {
            "RECEIVER_DOWNLOAD_SLICES": str(slices),
            "RECEIVER_SLICE_BYTES": str(slice_mib * MIB),
            "RECEIVER_SLICED_DOWNLOAD_THRESHOLD": "1",
        }
        receiver = Receiver(self.proxy.url, self.blob.bucket.name, workdir, env)
        try:
            started = time.perf_counter()
            receiver.install(self.blob)
            seconds = time.perf_counter() - started
            self.peak_rss[slices] = max(self.peak_rss.get(slices, 0), receiver.peak_rss_mib())
        finally:
            receiver.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        return seconds

    def curl_tar(self) -> None:
        with tempfile.TemporaryDirectory(dir=self.target) as target:
            subprocess.run(
                f"curl -sS {self.url!r} | tar -xzf - -C {target!r}", shell=True, check=True
            )

    def parallel_curl_then_tar(self, slices: int) -> None:
        size = self.blob.size
        step = -(-size // slices)
        with tempfile.TemporaryDirectory(dir=self.target) as target:
            parts = [Path(target) / f"part-{n:03d}" for n in range(slices)]

            def fetch(n: int) -> None:
                last = min(size, (n + 1) * step) - 1
                command = ["curl", "-sS", "-r", f"{n * step}-{last}", "-o", str(parts[n]), self.url]
                subprocess.run(command, check=True)

            with ThreadPoolExecutor(max_workers=slices) as pool:
                list(pool.map(fetch, range(slices)))
            quoted = " ".join(repr(str(part)) for part in parts)
            subprocess.run(f"cat {quoted} | tar -xzf - -C {target!r}", shell=True, check=True)


def run(args: argparse.Namespace) -> str:
    emulator = StorageEmulator().start()
    client = storage.Client(
        project="bench",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.url},
    )
    blob = client.create_bucket("bench").blob("models/m/1.tar.gz")
    blob.upload_from_string(incompressible_archive(args.size), timeout=1200)
    proxy = ThrottlingProxy("127.0.0.1", emulator.port, args.rate * 1e6).start()
    bench = Bench(proxy, blob, args.target)
    rows: list[tuple[str, float]] = []
    try:
        rows.append(("curl \\| tar (1 stream)", median_of(args.runs, bench.curl_tar)))
        for slices in args.slices:
            seconds = statistics.median(
                bench.receiver(slices, args.slice_mib) for _ in range(args.runs)
            )
            label = "1 stream" if slices == 1 else f"{slices} slices of {args.slice_mib} MiB"
            rows.append((f"receiver, {label}", seconds))
            if slices > 1:
                curl = median_of(args.runs, partial(bench.parallel_curl_then_tar, slices))
                rows.append((f"{slices} parallel `curl -r`, then tar", curl))
    finally:
        proxy.stop()
        emulator.stop()
    return report(args, blob.size, rows, bench.peak_rss)


def report(
    args: argparse.Namespace, size: int, rows: list[tuple[str, float]], rss: dict[int, int]
) -> str:
    single = dict(rows)["receiver, 1 stream"] if 1 in args.slices else None
    lines = [
        f"{size / MIB:.0f} MiB tar.gz, each connection capped at {args.rate:g} MB/s, "
        f"median of {args.runs} runs, unpacked to {args.target}.",
        "",
        "| method | seconds | MB/s of archive | vs receiver, 1 stream |",
        "|---|---:|---:|---:|",
    ]
    for label, seconds in rows:
        ratio = f"{single / seconds:.1f}x" if single else "-"
        lines.append(f"| {label} | {seconds:.2f} | {size / seconds / 1e6:.0f} | {ratio} |")
    peaks = ", ".join(f"{n} slice{'s' if n > 1 else ''}: {mib} MiB" for n, mib in rss.items())
    lines += ["", f"Receiver peak RSS (highest worker VmHWM): {peaks}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="MiB of weights (≈ archive)")
    parser.add_argument("--rate", type=float, default=50, help="MB/s per connection")
    parser.add_argument("--slices", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--slice-mib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    default_target = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    parser.add_argument("--target", type=Path, default=default_target)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    arguments = parser.parse_args()
    table = run(arguments)
    print(table, flush=True)
    if arguments.out:
        arguments.out.write_text(table)
