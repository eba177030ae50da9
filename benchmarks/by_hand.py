"""The install benchmark's other methods: unpacking by hand, and the machine's limits.

Each runs as a shell command in a process group of its own, so a run that is stopped
stops all of a pipeline, and its programs are read back into memory before it is timed
(`warm_programs`), so no time includes loading one from disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from isal import isal_zlib

from benchmarks.install_report import COLUMNS

IGZIP_PIPE, TAR_PIPE, INFLATE, DISK, WIRE = COLUMNS[1:]
HAS_IGZIP = shutil.which("igzip") is not None
# The programs the methods run, each as a command that loads it and does nothing else.
PROGRAMS = [
    ["curl", "--version"], ["igzip", "--version"], ["gzip", "--version"],
    ["tar", "--version"], ["zstd", "--version"], ["unzip", "-v"],
    ["dd", "--version"], ["sync", "--version"], ["sh", "-c", ":"],
]  # fmt: skip
_SCRATCH: str | None = None


def drop_caches() -> bool:
    """Flush and drop the page cache, so no method reads what another left; needs root."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def warm_programs() -> None:
    """Read every method's programs back into the page cache after it was dropped.

    So no method's time includes loading its program from disk: curl's start alone took
    50-65 ms after the drop, where the receiver, a running server, has its code in memory.
    The archive, the model and the memory written stay cold.
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
    """`command` in a process group of its own, all of it stopped if the run is (SIGTERM
    stops only the shell of a pipeline; its curl, igzip and tar wrote on)."""
    with subprocess.Popen(command, shell=True, start_new_session=True) as pipeline:
        try:
            if pipeline.wait():
                raise subprocess.CalledProcessError(pipeline.returncode, command)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pipeline.pid, signal.SIGKILL)


def _unpack(command: str) -> None:
    """`command` with `{}` as a fresh directory, then `sync` (what the receiver's fsyncs cost)."""
    with tempfile.TemporaryDirectory(dir=scratch()) as target:
        _shell(command.replace("{}", target))
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


def scratch() -> str:
    """This run's own scratch directory (another run, or the smoke test, may run at once)."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = tempfile.mkdtemp(prefix="bench-scratch-")
    return _SCRATCH
