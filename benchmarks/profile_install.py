"""Where an install's time goes: one model installed by the receiver's own pipeline.

    PYTHONPATH=. py-spy record --rate 200 --threads --format raw -o /tmp/install.raw -- \\
        .venv/bin/python benchmarks/profile_install.py install 1024
    PYTHONPATH=. .venv/bin/python benchmarks/profile_install.py summarize /tmp/install.raw

`install SIZE [KIND [FORMAT [TIMES]]]` uploads a SIZE MiB archive (benchmarks/models.py:
float32 weights unless KIND says half-zeros; tar.gz unless FORMAT names another) into the
storage emulator's files in /dev/shm and recycles memory, as the install benchmark does,
and runs `Installer.install` on it as the worker would, TIMES times (once unless told) as
versions 1, 2, ..., printing where it keeps its files, then the process's resident memory
after each install (how a long-lived worker's memory settles) and each of its threads'
CPU seconds beside the seconds it was alive and those it was ready to run but waited for a
core: a thread whose CPU nearly equals the install's time is what the install waits for
(tar.gz: the inflate's), and one that waits for a core shares the machine's cores with
more work than they hold (Linux only: 0 elsewhere). Stopped by SIGTERM or Ctrl-C, it
removes its files. It limits glibc's heaps and hands freed memory back after each install
as a worker does (`receiver.worker`); `MALLOC_ARENA_MAX=16`, glibc's default on two cores,
shows what it would do without the limit. `summarize` reads py-spy's collapsed stacks
(`--threads`, which names each thread) and prints, for each thread of the install, how
long it was busy (waits on locks and queues left out) and the innermost frames it was
busy in. py-spy slows the process it samples: the shares are what to read, not the
seconds.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from benchmarks.by_hand import drop_caches
from benchmarks.common import cleaned_up_on_sigterm, emulator_root, place_object
from benchmarks.host_memory import recycle_memory
from benchmarks.models import FORMATS, KINDS, archive_path, object_suffix
from receiver import worker
from receiver.config import Settings
from receiver.dev.tools import StorageEmulator
from receiver.download import ObjectStore
from receiver.installer import Installer
from receiver.journal import Journal
from receiver.layout import ModelVersion, parse_object_name
from receiver.objectref import ObjectRef


def install(
    size_mib: int, kind: str = "weights", archive_format: str = "tar.gz", times: int = 1
) -> None:
    root = emulator_root()
    workdir = Path(tempfile.mkdtemp(prefix="profile-"))
    emulator = StorageEmulator(root=root, die_with_parent=True)
    try:
        emulator.start()
        print(f"the emulator's files in {root}, the versions installed in {workdir}", flush=True)
        client = storage.Client(
            project="profile",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator.url},
        )
        bucket = client.create_bucket("profile")
        archive = archive_path(kind, size_mib, archive_format)
        settings = Settings.from_env(
            {"RECEIVER_SOURCE": "gs://profile/models", "RECEIVER_MODEL_DIR": str(workdir)},
            verifies_pushes=False,
        )
        journal = Journal(workdir / ".receiver" / "journal.sqlite3")
        journal.initialize()
        os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
        store = ObjectStore.from_environment()
        worker.limit_malloc_arenas()
        for version in range(1, times + 1):
            name = f"models/m/{version}.{object_suffix(archive_format)}"
            blob = place_object(bucket, root, name, archive)
            ref = ObjectRef("profile", blob.name, blob.generation, blob.size, crc32c=blob.crc32c)
            target = parse_object_name(blob.name, settings.prefix)
            assert isinstance(target, ModelVersion)
            job, _ = journal.enqueue(ref, target)
            drop_caches()
            recycle_memory(2 * size_mib * 2**20 + blob.size, workdir)
            with thread_times() as spent:
                started = time.perf_counter()
                Installer(settings, store).install(ref, target, job.id)
                took = time.perf_counter() - started
            worker.return_freed_memory()
            print(
                f"install {version}: {size_mib} MiB in {took:.2f} s,"
                f" resident after it {_resident_mib()} MiB",
                flush=True,
            )
            threads = ", ".join(
                f"{n} {c:.2f} s CPU of {a:.2f} s ({w:.2f} s waiting for a core)"
                for n, (c, a, w) in spent
            )
            print(f"    {threads}", flush=True)
            shutil.rmtree(workdir / "m" / str(version))
    finally:
        emulator.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def thread_times() -> Iterator[list[tuple[str, tuple[float, float, float]]]]:
    """Filled on leaving: CPU, alive and core-waiting seconds of the calling thread
    ("install") and of each `threading.Thread` started meanwhile (those that keep its
    `run`), summed by name. Waiting for a core is time ready to run with every core busy
    (`_waited_for_core`); a thread asleep on a lock, a queue or the interpreter is not
    waiting for a core, so alive minus CPU minus that wait is the time it slept.
    Threads still running are waited for, up to `_JOIN_SECONDS` in all, so each install
    counts only its own; the flusher's alive time includes the second it lingers for more
    work. A thread still running then is reported as such."""
    spent: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    run = threading.Thread.run

    def timed(thread: threading.Thread) -> None:
        started = _clocks()
        try:
            run(thread)
        finally:
            total = spent[thread_kind(thread.name)]
            for i, (now, then) in enumerate(zip(_clocks(), started, strict=True)):
                total[i] += now - then

    before = set(threading.enumerate())
    started = _clocks()
    threading.Thread.run = timed  # type: ignore[method-assign,assignment]
    report: list[tuple[str, tuple[float, float, float]]] = []
    try:
        yield report
    finally:
        spent["install"] = [now - then for now, then in zip(_clocks(), started, strict=True)]
        threading.Thread.run = run  # type: ignore[method-assign]  # running ones keep `timed`
        deadline = time.monotonic() + _JOIN_SECONDS
        for thread in set(threading.enumerate()) - before:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        running = [t.name for t in set(threading.enumerate()) - before]
        report.extend((name, (c, a, w)) for name, (c, a, w) in sorted(spent.items(), key=_by_cpu))
        if running:
            print(f"    still running, not counted: {', '.join(sorted(running))}", flush=True)


_JOIN_SECONDS = 30


def _clocks() -> tuple[float, float, float]:
    """The calling thread's CPU seconds, the time, and its seconds waiting for a core."""
    return time.thread_time(), time.perf_counter(), _waited_for_core()


def _waited_for_core() -> float:
    """Seconds the calling thread has been runnable but waiting for a core: the second
    field of Linux's /proc/thread-self/schedstat, in nanoseconds (0 where the kernel keeps
    none, or not in that form)."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _by_cpu(item: tuple[str, list[float]]) -> float:
    return -item[1][0]


def thread_kind(name: str) -> str:
    """A thread's name without the number a pool or a counter gives it (`unpack-write_0`)."""
    return re.sub(r"[-_]\d+$", "", name)


def _resident_mib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024


# py-spy counts a thread blocked on a lock or queue as running: samples whose innermost
# frame is one of these are waits, not work.
_WAITS = ("threading.py", "queue.py", "thread.py:81")


def summarize(raw: Path, top: int = 4, rate: int = 200) -> None:
    """Per thread of the install, the time it was busy and the frames it was busy in."""
    threads: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        frames = stack.split(";")
        thread = thread_kind(frames[0].partition(": ")[2]) or "(unnamed)"
        if thread == "MainThread" and not any(f.startswith("Installer.install (") for f in frames):
            continue  # building and uploading the archive
        if thread == "(unnamed)" or any(wait in frames[-1] for wait in _WAITS):
            continue
        name, _, where = frames[-1].partition(" (")
        threads[thread][f"{name} ({where.split('/')[-1]}"] += int(weight)
    for thread, samples in sorted(threads.items(), key=lambda item: -item[1].total()):
        print(f"{thread}: busy {samples.total() / rate:.2f} s")
        for frame, count in samples.most_common(top):
            print(f"    {100 * count / samples.total():5.1f}%  {frame}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    installs = commands.add_parser("install", help="install one model, TIMES times")
    installs.add_argument("size", type=int, help="MiB")
    installs.add_argument("kind", nargs="?", choices=KINDS, default="weights")
    installs.add_argument("format", nargs="?", choices=FORMATS, default="tar.gz")
    installs.add_argument("times", nargs="?", type=int, default=1)
    summaries = commands.add_parser("summarize", help="busy time per thread of a py-spy raw file")
    summaries.add_argument("raw", type=Path)
    arguments = parser.parse_args()
    if arguments.command == "install":
        cleaned_up_on_sigterm()
        install(arguments.size, arguments.kind, arguments.format, arguments.times)
    else:
        summarize(arguments.raw)
