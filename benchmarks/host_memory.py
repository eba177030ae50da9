"""This machine's memory and its host: the cause of a long write's varying cost here.

This machine kind is a virtual machine whose balloon device reports free memory to its
host (virtio's `VIRTIO_BALLOON_F_REPORTING`), and a page the host has taken back costs
the guest a fault in the host when it is written again (docs/benchmarks.md, "Why writes
cost more"). The harnesses recycle memory before each method so each starts alike, say
beside each table whether the machine reports, and can hold reporting back for a run.
"""

from __future__ import annotations

import contextlib
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
# This machine kind's kernel lets these say when freed memory is reported: after
# `min_free_ms`, or at once when more than `max_waiting_mib` waits (docs/benchmarks.md).
_REPORTING_KNOBS = ("min_free_ms", "max_waiting_mib")


def reported_mib() -> float | None:
    """MiB of free memory the guest has reported to its host since boot, if it reports."""
    try:
        return int((PAGE_REPORTING / "reported_kib").read_text()) / 1024
    except (OSError, ValueError):
        return None


def page_reporting() -> str:
    """Whether this machine hands freed memory to its host, and its kernel's settings for
    it: the cause of a long write's varying cost (docs/benchmarks.md), said beside a table."""
    if not reported_mib():
        return "this machine reports no free memory to a host"
    knobs = []
    for name in _REPORTING_KNOBS:
        with contextlib.suppress(OSError):
            knobs.append(f"{name}={(PAGE_REPORTING / name).read_text().strip()}")
    settings = f" (page_reporting {', '.join(knobs)})" if knobs else ""
    return f"this machine reports free memory to its host{settings}"


@contextlib.contextmanager
def free_memory_held(parameters: Path = PAGE_REPORTING) -> Iterator[None]:
    """Hold freed memory back from the host while the block runs, then put the kernel's
    settings back: what an install costs on a machine that keeps its memory (bare metal,
    a VM without free page reporting). This machine kind's kernel only, as root."""
    held = {"max_waiting_mib": "65536", "min_free_ms": "60000"}
    before: dict[str, str] = {}
    try:
        try:
            for name, value in held.items():
                before[name] = (parameters / name).read_text().strip()
                (parameters / name).write_text(value)
        except OSError as exc:
            raise SystemExit(f"cannot hold free memory back on this machine: {exc}") from exc
        yield
    finally:
        for name, value in before.items():
            (parameters / name).write_text(value)
