"""The models the install benchmark installs, and their archives, built once and cached.

Two kinds of weights, each in half_plus_two's SavedModel layout (its graph and index, one
variables file of SIZE MiB):

* `weights`: float32 values drawn from a normal distribution (numpy, fixed seed), which
  is what trained weights look like to a compressor: random mantissas in a narrow band of
  exponents; gzip -6 shrinks them by about 7%. The benchmark's main model.
* `half-zeros`: half random bytes, half zeros (the model of earlier rounds): gzip halves
  it and inflates the zeros at memory speed, which flatters every gzip reader.

Archives are made by the tools a user publishes with (GNU tar, gzip -6, zstd -3, Info-ZIP
zip -6, and `zip -0`, which stores every file as it is: `stored.zip`) from files on disk,
so a 5 GiB model never sits in memory, and kept under `CACHE` (named by kind, size and
format) for the next run.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy

from benchmarks.common import ROOT

SAMPLE = ROOT / "receiver" / "dev" / "sample" / "half_plus_two" / "00000123"
CACHE = Path(tempfile.gettempdir()) / "bench-archives"
MIB = 2**20
KINDS = ("weights", "half-zeros")
FORMATS = ("tar.gz", "tar.zst", "tar", "zip", "stored.zip")
STORED_ZIP = "stored.zip"  # a zip with nothing deflated: the zip reader without an inflate
SEED = 23
_BLOCK_VALUES = 4 * MIB  # float32 values drawn at a time: 16 MiB of weights


def archive_path(kind: str, size_mib: int, archive_format: str) -> Path:
    """The cached archive of a `size_mib` MiB model of `kind`, made if missing."""
    path = CACHE / f"{kind}-{size_mib}.{archive_format}"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as work:
            model = Path(work) / "m"
            write_model(model, kind, size_mib)
            partial = Path(work) / path.name
            _pack(model, archive_format, partial)
            partial.rename(path)
    return path


def write_model(directory: Path, kind: str, size_mib: int) -> None:
    """A SavedModel at `directory` whose variables file holds `size_mib` MiB of `kind`."""
    (directory / "variables").mkdir(parents=True)
    shutil.copy(SAMPLE / "saved_model.pb", directory / "saved_model.pb")
    shutil.copy(SAMPLE / "variables" / "variables.index", directory / "variables")
    rng = numpy.random.default_rng(SEED)
    left = size_mib * MIB
    half = left // 2
    with (directory / "variables" / "variables.data-00000-of-00001").open("wb") as out:
        while left:
            step = min(left, 4 * _BLOCK_VALUES, left - half if left > half else left)
            out.write(_block(rng, kind, step, left <= half))
            left -= step


def _block(rng: numpy.random.Generator, kind: str, nbytes: int, second_half: bool) -> bytes:
    if kind == "weights":
        values = rng.normal(0.0, 0.05, nbytes // 4).astype(numpy.float32)
        return values.tobytes() + rng.bytes(nbytes % 4)
    return bytes(nbytes) if second_half else rng.bytes(nbytes)


def object_suffix(archive_format: str) -> str:
    """What an object of this format is named with (a stored zip is a zip to the receiver)."""
    return "zip" if archive_format == STORED_ZIP else archive_format


def _pack(model: Path, archive_format: str, out: Path) -> None:
    parent = str(model.parent)
    if archive_format in ("zip", STORED_ZIP):
        level = "-0" if archive_format == STORED_ZIP else "-6"
        subprocess.run(["zip", "-q", level, "-r", str(out), model.name], cwd=parent, check=True)
        return
    tar = f"tar -cf - -C {parent!r} {model.name!r}"
    compress = {"tar.gz": " | gzip -6", "tar.zst": " | zstd -q -3", "tar": ""}[archive_format]
    subprocess.run(f"{tar}{compress} > {str(out)!r}", shell=True, check=True)
