"""Install path, side by side with the machine's limits: push accepted -> version in place.

    make bench    (or: PYTHONPATH=. .venv/bin/python benchmarks/install.py --sizes 100 1024)

For each model (benchmarks/models.py: float32 weights, and the half-zeros model of earlier
rounds), size and format, the same archive is put into the storage emulator (its
filesystem backend in /dev/shm, the bytes placed straight into its files: its uploads
cannot hold 5 GiB, `common.place_object`) and every method runs in turns, one run of
each per round, median of --runs rounds, each into a fresh directory and each after the
page cache is dropped (root only), memory recycled (`common.recycle_memory`) and the
methods' programs read back in (`warm_programs`):

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

Writes a Markdown table and a PNG chart to --out (default docs/).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from isal import isal_zlib

from benchmarks.common import (
    ROOT,
    Receiver,
    cleaned_up_on_sigterm,
    cpu_seconds,
    emulator_root,
    link_object,
    place_object,
    recycle_memory,
)
from benchmarks.install_report import COLUMNS, write_report
from benchmarks.models import FORMATS, KINDS, MIB, archive_path, object_suffix
from receiver.dev.tools import StorageEmulator

RECEIVER, IGZIP_PIPE, TAR_PIPE, INFLATE, DISK, WIRE = COLUMNS
HAS_IGZIP = shutil.which("igzip") is not None
# The programs the methods run, each as a command that loads it and does nothing else.
PROGRAMS = [
    ["curl", "--version"], ["igzip", "--version"], ["gzip", "--version"],
    ["tar", "--version"], ["zstd", "--version"], ["unzip", "-v"],
    ["dd", "--version"], ["sync", "--version"], ["sh", "-c", ":"],
]  # fmt: skip
_SCRATCH: str | None = None


@dataclass
class Row:
    kind: str
    size_mib: int
    archive_format: str
    archive_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)  # method -> median
    receiver_cpu: float = 0.0  # median seconds of CPU, the receiver's workers
    emulator_cpu: float = 0.0  # median seconds of CPU fake-gcs-server spent serving them
    peak_rss_mib: int = 0
    peaks_mib: list[int] = field(default_factory=list)  # the workers' peak after each install


def drop_caches() -> bool:
    """Flush and drop the page cache, so no method reads what another left; needs root."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def run(
    sizes: list[int],
    runs: int,
    out: Path,
    formats: tuple[str, ...],
    kinds: tuple[str, ...],
    table: str = "benchmarks-install",
) -> list[Row]:
    root = emulator_root()
    emulator = StorageEmulator(root=root).start()
    rows = []
    dropped = True
    try:
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
                        bucket, root, emulator, kind, size, archive_format, runs
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
    write_report(rows, runs, dropped, out, table)
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
    shared = place_object(bucket, root, f"by-hand/{path.name}", path)
    url = f"{emulator.url}/download/storage/v1/b/{bucket.name}/o/by-hand%2F{path.name}?alt=media"
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    in_memory = root / bucket.name / shared.name  # the emulator's file: in /dev/shm
    receiver = Receiver(emulator.url, bucket.name, workdir)
    row = Row(kind, size, archive_format, path.stat().st_size)
    versions = iter(range(1, runs + 1))
    cpu: list[float] = []
    serving: list[float] = []

    def install() -> None:
        name = f"models/m/{next(versions)}.{object_suffix(archive_format)}"
        blob = link_object(bucket, root, shared, name)
        prepare()
        push = receiver.ready_push(blob)
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
        recycle_memory(2 * size * MIB + row.archive_bytes, Path(_scratch()))
        warm_programs()
        return dropped

    actions = by_hand(url, archive_format, in_memory, size)
    times: dict[str, list[float]] = {RECEIVER: [], **{name: [] for name in actions}}
    dropped = True
    try:
        for _ in range(runs):
            install()
            for name, action in actions.items():
                dropped = prepare() and dropped
                started = time.perf_counter()
                action()
                times[name].append(time.perf_counter() - started)
        row.peak_rss_mib = max(row.peaks_mib)
    finally:
        receiver.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shared.delete()
    row.seconds = {name: statistics.median(taken) for name, taken in times.items()}
    row.receiver_cpu = statistics.median(cpu)
    row.emulator_cpu = statistics.median(serving)
    return row, dropped


def warm_programs() -> None:
    """Read every method's programs back into the page cache after it was dropped.

    So no method's time includes loading its program from disk: curl's start alone took
    50-65 ms after the drop, the push's sender pays it before the receiver sees the push,
    and Pub/Sub's push is no program started per message (the receiver, a running server,
    has its code in memory). The archive, the model and the memory written stay cold.
    """
    for program in PROGRAMS:
        if shutil.which(program[0]):
            subprocess.run(program, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def by_hand(url: str, archive_format: str, local: Path, size: int) -> dict[str, Callable[[], None]]:
    """The other methods for this format: unpacking by hand, then the machine's limits."""
    actions: dict[str, Callable[[], None]] = {}
    flag = {"tar.gz": "-z", "tar.zst": "--zstd", "tar": ""}.get(archive_format)
    if archive_format == "tar.gz" and HAS_IGZIP:
        actions[IGZIP_PIPE] = lambda: _unpack(f"curl -sS {url!r} | igzip -dc | tar -xf - -C {{}}")
    if flag is not None:
        actions[TAR_PIPE] = lambda: _unpack(f"curl -sS {url!r} | tar -x {flag} -f - -C {{}}")
    else:  # zip keeps its index at the end: download, then unzip
        actions[TAR_PIPE] = lambda: _unpack(
            f"curl -sS -o {{}}/m.zip {url!r} && unzip -q {{}}/m.zip -d {{}}"
        )
    inflate = {"tar.gz": "igzip -dc" if HAS_IGZIP else "gzip -dc", "tar.zst": "zstd -dc"}
    if archive_format in inflate:
        command = f"{inflate[archive_format]} {str(local)!r} > /dev/null"
        actions[INFLATE] = lambda: _shell(command)
    elif archive_format == "zip":  # a stored zip has nothing to inflate
        actions[INFLATE] = lambda: inflate_zip(local)
    actions[DISK] = lambda: _unpack(
        f"dd if=/dev/zero of={{}}/dd bs=1M count={size} conv=fdatasync status=none"
    )
    actions[WIRE] = lambda: _shell(f"curl -sS -o /dev/null {url!r}")
    return actions


def _shell(command: str) -> None:
    subprocess.run(command, shell=True, check=True)


def _unpack(command: str) -> None:
    """`command` with `{}` as a fresh directory, then `sync` (what the receiver's fsyncs cost)."""
    with tempfile.TemporaryDirectory(dir=_scratch()) as target:
        subprocess.run(command.replace("{}", target), shell=True, check=True)
        subprocess.run(["sync"], check=True)


def inflate_zip(path: Path) -> None:
    """Every deflated entry of `path` inflated with ISA-L in 512 KiB reads, output dropped."""
    with zipfile.ZipFile(path) as archive, path.open("rb") as file:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_DEFLATED:
                continue
            file.seek(info.header_offset)
            header = file.read(30)
            file.seek(
                int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little"), 1
            )
            inflater = isal_zlib.decompressobj(-15)
            left = info.compress_size
            while left:
                data = file.read(min(left, 512 * 1024))
                left -= len(data)
                inflater.decompress(data)


def _scratch() -> str:
    """This run's own scratch directory (another run, or the smoke test, may run at once)."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = tempfile.mkdtemp(prefix="bench-scratch-")
    return _SCRATCH


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1024], help="MiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--table", default="benchmarks-install", help="file names in --out")
    arguments = parser.parse_args()
    cleaned_up_on_sigterm()
    try:
        run(
            arguments.sizes,
            arguments.runs,
            arguments.out,
            tuple(arguments.formats),
            tuple(arguments.kinds),
            arguments.table,
        )
    finally:
        shutil.rmtree(_scratch(), ignore_errors=True)
