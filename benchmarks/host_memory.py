"""This machine's memory and its host: the cause of a long write's varying cost here.

This machine kind is a virtual machine whose balloon device reports free memory to its
host (virtio's `VIRTIO_BALLOON_F_REPORTING`), and a page the host has taken back costs
the guest a fault in the host when it is written again (docs/benchmarks.md, "Why writes
cost more"). The harnesses recycle memory before each method so each starts alike, say
beside each table whether the machine reports, and can hold reporting back for a run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path


def recycle_memory(nbytes: int, directory: Path) -> None:
    """Write and delete `nbytes` of file, so the next writes get pages the guest has touched.

    On this kind of virtual machine memory the guest has not touched lately is backed by
    the host on first write: writing 1 GiB into such pages costs about 2.5 s of kernel
    time, against 0.2 s into pages freed moments ago (the host takes freed pages back
    within seconds). Calling this just before every timed run gives each method the same
    kind of memory, whatever ran before it.
    """
    block = bytes(2**20)
    path = directory / "recycle.tmp"
    with path.open("wb") as scratch:
        for _ in range(-(-nbytes // len(block))):
            scratch.write(block)
    path.unlink()


PAGE_REPORTING = Path("/sys/module/page_reporting/parameters")
# This machine kind's kernel (not upstream Linux, which has only `page_reporting_order`)
# says when freed memory is reported: once it has been free `min_free_ms`, or at once
# while more than `max_waiting_mib` waits. Shipped: 0 and 1024, so a free GiB goes at once.
# Held: a page is reported only after a minute free, and no amount waiting forces it.
HELD = {"max_waiting_mib": "65536", "min_free_ms": "60000"}


def reported_mib(parameters: Path = PAGE_REPORTING) -> float | None:
    """MiB of free memory the guest has reported to its host since boot (None: no count)."""
    try:
        return int((parameters / "reported_kib").read_text()) / 1024
    except (OSError, ValueError):
        return None


def page_reporting(parameters: Path = PAGE_REPORTING) -> str:
    """What this machine does with freed memory, said beside a table: a long write's cost
    here depends on it (docs/benchmarks.md)."""
    reported = reported_mib(parameters)
    if reported is None:
        return "this machine's kernel keeps no count of free memory reported to a host"
    knobs = {}
    for name in HELD:
        with contextlib.suppress(OSError):
            knobs[name] = (parameters / name).read_text().strip()
    settings = ", ".join(f"{name}={value}" for name, value in knobs.items())
    said = f"{reported / 1024:,.0f} GiB of free memory reported to its host since boot"
    if knobs == HELD:
        return (
            f"this machine's free memory held back from its host for the run ({settings}); {said}"
        )
    return f"this machine: {said}" + (f" (page_reporting {settings})" if settings else "")


@contextlib.contextmanager
def free_memory_held(parameters: Path = PAGE_REPORTING) -> Iterator[None]:
    """Hold freed memory back from the host while the block runs (a page is reported only
    after a minute free), then put the kernel's settings back, unless the process is
    killed outright: what an install costs on a machine that keeps its memory (bare
    metal, a VM without free page reporting). This machine kind's kernel only, as root."""
    before: dict[str, str] = {}
    try:
        for name, value in HELD.items():
            try:
                before[name] = (parameters / name).read_text().strip()
                (parameters / name).write_text(value)
            except OSError as exc:
                before.pop(name, None)  # not changed: nothing to put back
                raise SystemExit(f"cannot hold free memory back on this machine: {exc}") from exc
        yield
    finally:
        failed = []
        for name, value in reversed(before.items()):
            try:
                (parameters / name).write_text(value)
            except OSError as exc:
                failed.append(f"{name}={value} ({exc})")
        if failed:
            print(f"could not put back {', '.join(failed)}: set them by hand", file=sys.stderr)
