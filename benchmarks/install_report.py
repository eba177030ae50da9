"""The install benchmark's table (Markdown) and chart (PNG), from its rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.host_memory import page_reporting
from benchmarks.models import MIB

if TYPE_CHECKING:
    from benchmarks.install import Row

COLUMNS = (
    "receiver",
    "curl | igzip -dc | tar -x",
    "curl | tar -x",
    "inflate alone",
    "disk (dd fdatasync)",
    "wire (curl -o /dev/null)",
)


def write_report(
    rows: list[Row], dropped: bool, out: Path, table: str = "benchmarks-install"
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cache = (
        "the page cache dropped, memory recycled and the methods' programs read back in "
        "before each run"
        if dropped
        else "memory recycled before each run (not root: the page cache could not be dropped)"
    )
    header = " | ".join(column.replace("|", "\\|") for column in COLUMNS)
    lines = [
        f"Medians of {_runs(rows)}, the methods in turns, {cache}. Each ratio is the "
        "receiver's time divided by the other's (below 1: the receiver is faster); "
        f"{page_reporting()}.",
        "",
        f"| model | format | archive | {header} | ÷ igzip pipe | ÷ inflate | ÷ max(disk, wire) "
        "| receiver CPU | emulator CPU | ÷ CPU / cores | receiver peak RSS |",
        "|---|---|---:|" + "---:|" * len(COLUMNS) + "---:|" * 7,
    ]
    for row in rows:
        seconds = row.seconds
        cells = " | ".join(_seconds(seconds.get(column)) for column in COLUMNS)
        receiver = seconds["receiver"]
        floor = max(seconds["disk (dd fdatasync)"], seconds["wire (curl -o /dev/null)"])
        cpu_floor = (row.receiver_cpu + row.emulator_cpu) / (os.cpu_count() or 1)
        lines.append(
            f"| {row.kind}, {row.size_mib} MiB | {row.archive_format} "
            f"| {row.archive_bytes / MIB:.0f} MiB | {cells} "
            f"| {_ratio(receiver, seconds.get('curl | igzip -dc | tar -x'))} "
            f"| {_ratio(receiver, seconds.get('inflate alone'))} | {_ratio(receiver, floor)} "
            f"| {row.receiver_cpu:.2f} s | {row.emulator_cpu:.2f} s "
            f"| {_ratio(receiver, cpu_floor)} | {row.peak_rss_mib} MiB |"
        )
    (out / f"{table}.md").write_text("\n".join(lines) + "\n")
    chart(rows, out / f"{table}.png")


def _runs(rows: list[Row]) -> str:
    """'3 runs', or '3 runs (9 at 100 MiB)': the count of the largest size, then the others'."""
    counts = {row.size_mib: row.runs for row in rows}
    most = counts[max(counts)] if counts else 0
    others = ", ".join(f"{runs} at {size} MiB" for size, runs in counts.items() if runs != most)
    return f"{_plural(most)} ({others})" if others else _plural(most)


def _plural(runs: int) -> str:
    return "1 run" if runs == 1 else f"{runs} runs"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _ratio(receiver: float, other: float | None) -> str:
    return "-" if other is None else f"{receiver / other:.2f}×"


def chart(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    formats = list(dict.fromkeys(row.archive_format for row in rows))
    figure, axes = pyplot.subplots(1, len(formats), figsize=(4 * len(formats), 4), sharey=True)
    axes = axes if len(formats) > 1 else [axes]
    for axis, archive_format in zip(axes, formats, strict=True):
        measured = [r for r in rows if r.archive_format == archive_format and r.kind == "weights"]
        for column in COLUMNS:
            points = [(r.size_mib, r.seconds[column]) for r in measured if column in r.seconds]
            if points:
                axis.plot(*zip(*points, strict=True), "o-", label=column)
        axis.set_title(f"{archive_format} (float32 weights)")
        axis.set_xlabel("model size (MiB)")
    axes[0].set_ylabel("seconds")
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
