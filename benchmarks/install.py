"""Install path, side by side with the machine's limits: push accepted -> version in place.

    make bench    (or: PYTHONPATH=. .venv/bin/python benchmarks/install.py --sizes 100 1024)

For each model (benchmarks/models.py: float32 weights, and the half-zeros model of earlier
rounds), size and format, the same archive is put into the storage emulator (its
filesystem backend in /dev/shm, the bytes placed straight into its files: its uploads
cannot hold 5 GiB, `common.place_object`) and every method runs in turns, one run of
each per round, median of --runs rounds (--small-runs for a model under 1 GiB), each into
a fresh directory and each after the page cache is dropped (root only), memory recycled
(`host_memory.recycle_memory`) and the methods' programs read back in (`warm_programs`):

* receiver: a real push (a signed token) to a real gunicorn receiver with
  RECEIVER_ACK=installed, timed from sending it on a connection already open, its token
  minted, as Pub/Sub sends one (`common.Receiver.ready_push`), to its answer `installed`
  (renamed into place, fsynced);
  a fresh gunicorn per row, so its peak RSS (worker VmHWM) is that row's; its CPU is the
  user + system time its workers spent on the install, and the emulator's CPU what
  fake-gcs-server spent meanwhile serving it: on one machine both share its cores, so
  the install cannot beat their sum divided by the cores (the "CPU / cores" limit);
* by hand: `curl -s URL | igzip -dc | tar -xf - -C DIR && sync` (tar.gz, Debian `isal`),
  `curl -s URL | tar -x[z|--zstd]f - -C DIR && sync`, and for zip `curl -o`, `unzip`,
  `sync`;
* the limits: inflate alone for the format (`igzip -dc` / `zstd -dc` of the emulator's
  file in /dev/shm to /dev/null; zip: its entries inflated with ISA-L in process), the disk
  (`dd if=/dev/zero bs=1M conv=fdatasync` of the model's size) and the wire
  (`curl -s -o /dev/null URL`).

Writes a Markdown table and a PNG chart to --out (default docs/); the table says whether
this machine hands freed memory to its host, which makes long writes cost more here.
`--hold-free-memory` (root, this machine kind's kernel) holds it back for the run and
then puts the kernel's settings back: what a machine that keeps its memory gives.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from benchmarks.by_hand import by_hand, drop_caches, scratch, warm_programs
from benchmarks.common import (
    ROOT,
    Receiver,
    cleaned_up_on_sigterm,
    cpu_seconds,
    emulator_root,
    link_object,
    place_object,
)
from benchmarks.host_memory import free_memory_held, recycle_memory
from benchmarks.install_report import COLUMNS, write_report
from benchmarks.models import FORMATS, KINDS, MIB, archive_path, object_suffix
from receiver.dev.tools import StorageEmulator

RECEIVER = COLUMNS[0]


@dataclass
class Row:
    kind: str
    size_mib: int
    archive_format: str
    archive_bytes: int
    runs: int  # how many runs each median is of
    seconds: dict[str, float] = field(default_factory=dict)  # method -> median
    receiver_cpu: float = 0.0  # median seconds of CPU, the receiver's workers
    emulator_cpu: float = 0.0  # median seconds of CPU fake-gcs-server spent serving them
    peak_rss_mib: int = 0
    peaks_mib: list[int] = field(default_factory=list)  # the workers' peak after each install


# This machine's speed drifts by 10-25% from one minute to the next (inflate alone on one
# file, minutes apart: 3.4-4.3 s a GiB, docs/benchmarks.md). A run of 1 GiB or more lasts
# seconds, so three runs already span minutes of it, and more would cost an hour at 5 GiB;
# a 100 MiB run lasts under a second, and nine of them cost about a minute a row.
SMALL_MIB = 1024


def runs_for(size_mib: int, runs: int, small_runs: int) -> int:
    return small_runs if size_mib < SMALL_MIB else runs


def run(
    sizes: list[int],
    runs: int,
    out: Path,
    formats: tuple[str, ...],
    kinds: tuple[str, ...],
    table: str = "benchmarks-install",
    small_runs: int = 9,
) -> list[Row]:
    root = emulator_root()
    emulator = StorageEmulator(root=root, die_with_parent=True)
    rows = []
    dropped = True
    try:
        emulator.start()
        os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
        client = storage.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator.url},
        )
        bucket = client.create_bucket("bench")
        for kind in kinds:
            for size in sizes:
                # The half-zeros model is the comparison with earlier rounds: tar.gz only.
                for archive_format in formats if kind == "weights" else formats[:1]:
                    row, dropped_here = measure(
                        bucket,
                        root,
                        emulator,
                        kind,
                        size,
                        archive_format,
                        runs_for(size, runs, small_runs),
                    )
                    dropped = dropped and dropped_here
                    rows.append(row)
                    print(
                        f"{kind} {size} MiB {archive_format}: {row.seconds}, "
                        f"peak RSS after each install: {row.peaks_mib} MiB",
                        flush=True,
                    )
    finally:
        emulator.stop()
        shutil.rmtree(root, ignore_errors=True)
    write_report(rows, dropped, out, table)
    return rows


def measure(
    bucket: storage.Bucket,
    root: Path,
    emulator: StorageEmulator,
    kind: str,
    size: int,
    archive_format: str,
    runs: int,
) -> tuple[Row, bool]:
    path = archive_path(kind, size, archive_format)
    row = Row(kind, size, archive_format, path.stat().st_size, runs)
    versions = iter(range(1, runs + 1))
    cpu: list[float] = []
    serving: list[float] = []
    # Each thing made is undone however the row ends (SIGTERM included: `main`).
    with contextlib.ExitStack() as cleanup:
        shared = place_object(bucket, root, f"by-hand/{path.name}", path)
        cleanup.callback(shared.delete)
        workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        receiver = cleanup.enter_context(Receiver(emulator.url, bucket.name, workdir))
        url = (
            f"{emulator.url}/download/storage/v1/b/{bucket.name}/o/by-hand%2F{path.name}?alt=media"
        )
        in_memory = root / bucket.name / shared.name  # the emulator's file: in /dev/shm

        def install() -> None:
            name = f"models/m/{next(versions)}.{object_suffix(archive_format)}"
            blob = link_object(bucket, root, shared, name)
            prepare()
            with receiver.ready_push(blob) as push:
                before, served = receiver.cpu_seconds(), cpu_seconds(emulator.pid)
                started = time.perf_counter()
                push()
                times[RECEIVER].append(time.perf_counter() - started)
            cpu.append(receiver.cpu_seconds() - before)
            serving.append(cpu_seconds(emulator.pid) - served)
            row.peaks_mib.append(receiver.peak_rss_mib())
            blob.delete()

        def prepare() -> bool:
            """What every method gets before it is timed; False if the cache was not dropped."""
            dropped = drop_caches()
            recycle_memory(2 * size * MIB + row.archive_bytes, Path(scratch()))
            warm_programs()
            return dropped

        actions = by_hand(url, archive_format, in_memory, size)
        times: dict[str, list[float]] = {RECEIVER: [], **{name: [] for name in actions}}
        dropped = True
        for _ in range(runs):
            install()
            for name, action in actions.items():
                dropped = prepare() and dropped
                started = time.perf_counter()
                action()
                times[name].append(time.perf_counter() - started)
        row.peak_rss_mib = max(row.peaks_mib)
    row.seconds = {name: statistics.median(taken) for name, taken in times.items()}
    row.receiver_cpu = statistics.median(cpu)
    row.emulator_cpu = statistics.median(serving)
    return row, dropped


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1024], help="MiB")
    parser.add_argument(
        "--runs", type=int, default=3, help=f"runs of a model of {SMALL_MIB} MiB or more"
    )
    parser.add_argument(
        "--small-runs", type=int, default=9, help=f"runs of a model under {SMALL_MIB} MiB"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--table", default="benchmarks-install", help="file names in --out")
    parser.add_argument(
        "--hold-free-memory",
        action="store_true",
        help="keep freed memory from the host during the run (this machine kind, root)",
    )
    arguments = parser.parse_args()
    cleaned_up_on_sigterm()
    held = free_memory_held() if arguments.hold_free_memory else contextlib.nullcontext()
    try:
        with held:
            run(
                arguments.sizes,
                arguments.runs,
                arguments.out,
                tuple(arguments.formats),
                tuple(arguments.kinds),
                arguments.table,
                arguments.small_runs,
            )
    finally:
        shutil.rmtree(scratch(), ignore_errors=True)
