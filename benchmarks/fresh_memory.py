"""Why a long write costs this machine more: pages just freed against pages left idle.

    PYTHONPATH=. .venv/bin/python benchmarks/fresh_memory.py [--mib 5120] [--idle 30]

On a virtual machine whose balloon device reports free memory to its host (virtio's
`VIRTIO_BALLOON_F_REPORTING`; Firecracker and QEMU offer it), the host takes back pages
the guest has left free for a few seconds, and the guest's next write into such a page
costs a fault in the host. The install benchmark recycles memory before every method
(`host_memory.recycle_memory`) so each starts on pages just freed, but a long install outlives
that. This writes `--mib` into one file in 2 MiB writes, as the receiver's writer does,
twice: right after writing and deleting twice as much (pages just freed), and after `--idle`
seconds of leaving memory free (with the page cache dropped first, as root). It prints
the writing thread's system time per GiB, each GiB's in turn, and how much memory the
guest reported to its host from the start of that preparation to the end of the write
(`/sys/module/page_reporting/parameters/reported_kib`, where the kernel has it).
docs/benchmarks.md keeps a run's numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.by_hand import drop_caches
from benchmarks.host_memory import page_reporting, recycle_memory, reported_mib

WRITE_BYTES = 2 << 20  # the writer's hand-over (`unpack.base.READ_BYTES`)


def write_file(path: Path, nbytes: int, per: int) -> list[float]:
    """Write `nbytes` into `path`, fsync it; the thread's system seconds for each `per` bytes."""
    block = os.urandom(WRITE_BYTES)
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = 0
        while written < nbytes:
            started = resource.getrusage(resource.RUSAGE_THREAD).ru_stime
            part = min(per, nbytes - written)
            for _ in range(-(-part // WRITE_BYTES)):
                os.write(fd, block)
            written += part
            times.append(resource.getrusage(resource.RUSAGE_THREAD).ru_stime - started)
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink()
    return times


def measure(name: str, directory: Path, nbytes: int, before: Callable[[], None]) -> str:
    """One table row: write `nbytes` after `before`, as a Markdown row."""
    reported = reported_mib()
    before()
    started = time.perf_counter()
    per = min(nbytes, 1 << 30)
    system = write_file(directory / "fresh-memory.tmp", nbytes, per)
    seconds = time.perf_counter() - started
    after = reported_mib()
    handed = "-" if reported is None or after is None else f"{after - reported:,.0f} MiB"
    gib = nbytes / (1 << 30)
    each = " / ".join(f"{value:.2f}" for value in system)
    return (
        f"| {name} | {nbytes >> 20} MiB | {seconds:.2f} s | {sum(system):.2f} s "
        f"| {sum(system) / gib:.2f} s | {each} | {handed} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=5120, help="size of the file written")
    parser.add_argument("--idle", type=float, default=30, help="seconds memory is left free")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    nbytes = args.mib << 20

    def just_freed() -> None:
        recycle_memory(2 * nbytes, args.dir)  # as the install benchmark does, and more

    dropped: list[bool] = []

    def left_idle() -> None:
        dropped.append(drop_caches())
        time.sleep(args.idle)

    print(
        "| memory written into | written | took | writer's system time | per GiB "
        "| each GiB's (s) | reported to the host, preparation and write |"
        "\n|---|---:|---:|---:|---:|---|---:|"
    )
    print(measure("pages just freed", args.dir, nbytes, just_freed))
    print(measure(f"pages left free {args.idle:g} s", args.dir, nbytes, left_idle))
    cache = "yes" if all(dropped) else "no (needs root)"
    print(f"\npage cache dropped first: {cache}; {page_reporting()}")


if __name__ == "__main__":
    main()
