"""Install path, side by side: push accepted -> version directory in place.

    make bench    (or: PYTHONPATH=. .venv/bin/python benchmarks/install.py --sizes 100 1024)

For each size (MiB of model-like weights: half random bytes, like trained float32
values, half zeros, so partly compressible) and each format (tar.gz, tar.zst, zip), the
same archive is uploaded to the storage emulator and installed by every method, each run
into a fresh directory:

* receiver: a real push (curl, signed token) to a real gunicorn receiver with
  RECEIVER_ACK=installed, timed from the push to its answer `installed` (the version is
  renamed into place and fsynced by then);
* curl | tar: `curl -s URL | tar -x[z|--zstd]f - -C DIR && sync` (zip: `curl -o` then
  `unzip`, then `sync`), the limit for one stream;
* download-then-extract: google-cloud-storage `download_to_filename`, then tarfile /
  zipfile `extractall`, then `sync` (what the earlier pull-based poller did);
* KServe storage initializer: `kserve_storage.Storage.download("gs://…", DIR)` in its
  own virtualenv (`make kserve`; benchmarks/kserve_download.py), then `sync`. Left out,
  with a note, when .venv-kserve is missing; KServe's library cannot read .tar.zst.

Medians of --runs runs, and ratios to curl | tar from the same run. The receiver's peak
RSS (VmHWM of its worker processes) is read after each size from a fresh gunicorn.
Writes a Markdown table and a PNG chart to --out (default docs/).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from backports import zstd
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from benchmarks.common import ROOT, Receiver, interleaved_medians, recycle_memory
from receiver.dev.tools import StorageEmulator

SAMPLE = ROOT / "receiver" / "dev" / "sample" / "half_plus_two" / "00000123"
MIB = 2**20
FORMATS = ("tar.gz", "tar.zst", "zip")
KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"  # `make kserve`
KSERVE = "KServe storage initializer"
METHODS = ("receiver", "curl | tar", "download-then-extract") + (
    (KSERVE,) if KSERVE_PYTHON.exists() else ()
)


@dataclass
class Result:
    size_mib: int
    archive_format: str
    archive_bytes: int
    seconds: dict[str, float]  # method -> median
    receiver_peak_rss_mib: int


def model_archive(size_mib: int, archive_format: str) -> bytes:
    """half_plus_two's graph with `size_mib` MiB of weights: half random bytes, half zeros."""
    half = size_mib * MIB // 2
    weights = os.urandom(half) + bytes(size_mib * MIB - half)
    files = {
        "m/saved_model.pb": (SAMPLE / "saved_model.pb").read_bytes(),
        "m/variables/variables.index": (SAMPLE / "variables" / "variables.index").read_bytes(),
        "m/variables/variables.data-00000-of-00001": weights,
    }
    buffer = io.BytesIO()
    if archive_format == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return buffer.getvalue()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    plain = buffer.getvalue()
    if archive_format == "tar.zst":
        return zstd.compress(plain, level=3)
    return subprocess.run(["gzip", "-6", "-c"], input=plain, capture_output=True, check=True).stdout


def run(
    sizes: list[int], runs: int, out: Path, formats: tuple[str, ...] = FORMATS, cold: bool = False
) -> list[Result]:
    emulator = StorageEmulator().start()
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
    client = storage.Client(
        project="bench",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.url},
    )
    bucket = client.create_bucket("bench")
    results = []
    version = 0
    try:
        for size in sizes:
            workdir = Path(tempfile.mkdtemp(prefix="bench-"))
            receiver = Receiver(emulator.url, bucket.name, workdir)
            try:
                for archive_format in formats:
                    data = model_archive(size, archive_format)
                    blobs = []
                    for _ in range(runs):  # the receiver installs each version once
                        version += 1
                        blob = bucket.blob(f"models/m/{version}.{archive_format}")
                        blob.upload_from_string(data, timeout=600)
                        blobs.append(blob)
                    # Room for the archive and the unpacked model, whichever method runs.
                    recycle = None if cold else 2 * size * MIB + len(data)
                    seconds = measure(receiver, blobs, archive_format, emulator.url, recycle)
                    results.append(
                        Result(size, archive_format, len(data), seconds, receiver.peak_rss_mib())
                    )
                    print(f"{size} MiB {archive_format}: {seconds}", flush=True)
            finally:
                receiver.stop()
                shutil.rmtree(workdir, ignore_errors=True)  # the receiver keeps its newest
    finally:
        emulator.stop()
    write_report(results, runs, out)
    return results


def measure(
    receiver: Receiver,
    blobs: list[storage.Blob],
    archive_format: str,
    emulator_url: str,
    recycle: int | None,
) -> dict[str, float]:
    """Median seconds of each method on the same archive (one object per receiver run),
    the methods taking turns. With `recycle`, that many bytes of memory are written and
    freed before every run."""
    pending = iter(blobs)
    first = blobs[0]
    url = (
        f"{emulator_url}/download/storage/v1/b/{first.bucket.name}/o/"
        f"{first.name.replace('/', '%2F')}?alt=media"
    )
    actions = {
        "receiver": lambda: receiver.install(next(pending)),
        "curl | tar": lambda: curl_then_unpack(url, archive_format),
        "download-then-extract": lambda: download_then_extract(first, archive_format),
    }
    if KSERVE in METHODS and archive_format != "tar.zst":
        actions[KSERVE] = lambda: kserve_download(first, emulator_url)

    def before() -> None:
        if recycle:
            recycle_memory(recycle, Path(_scratch()))

    return interleaved_medians(len(blobs), actions, before)


def curl_then_unpack(url: str, archive_format: str) -> None:
    with tempfile.TemporaryDirectory(dir=_scratch()) as target:
        if archive_format == "zip":
            archive = Path(target) / "m.zip"
            subprocess.run(["curl", "-sS", "-o", str(archive), url], check=True)
            subprocess.run(["unzip", "-q", str(archive), "-d", target], check=True)
        else:
            flag = "--zstd" if archive_format == "tar.zst" else "-z"
            subprocess.run(
                f"curl -sS {url!r} | tar -x {flag} -f - -C {target!r}", shell=True, check=True
            )
        subprocess.run(["sync"], check=True)


def download_then_extract(blob: storage.Blob, archive_format: str) -> None:
    with tempfile.TemporaryDirectory(dir=_scratch()) as target:
        archive = Path(target) / f"m.{archive_format}"
        blob.download_to_filename(str(archive), checksum="crc32c")
        if archive_format == "zip":
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(target)
        elif archive_format == "tar.zst":
            with zstd.open(archive) as raw, tarfile.open(fileobj=raw, mode="r|") as opened:
                opened.extractall(target, filter="data")
        else:
            with tarfile.open(archive) as opened:
                opened.extractall(target, filter="data")
        subprocess.run(["sync"], check=True)


def kserve_download(blob: storage.Blob, emulator_url: str) -> None:
    with tempfile.TemporaryDirectory(dir=_scratch()) as target:
        subprocess.run(
            [str(KSERVE_PYTHON), str(ROOT / "benchmarks" / "kserve_download.py"),
             f"gs://{blob.bucket.name}/{blob.name}", target],
            env={**os.environ, "STORAGE_EMULATOR_HOST": emulator_url},
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(["sync"], check=True)


def _scratch() -> str:
    path = Path(tempfile.gettempdir()) / "bench-scratch"
    path.mkdir(exist_ok=True)
    return str(path)


def write_report(results: list[Result], runs: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    methods = " | ".join(method.replace("|", "\\|") for method in METHODS)
    lines = [
        f"| model | format | archive | {methods} | receiver vs curl \\| tar | receiver peak RSS |",
        "|---|---|---:|" + "---:|" * len(METHODS) + "---:|---:|",
    ]
    for r in results:
        limit = r.seconds["curl | tar"]
        cells = " | ".join(_cell(r.seconds.get(m)) for m in METHODS)
        lines.append(
            f"| {r.size_mib} MiB | {r.archive_format} | {r.archive_bytes / MIB:.0f} MiB | {cells} "
            f"| {r.seconds['receiver'] / limit:.2f}x | {r.receiver_peak_rss_mib} MiB |"
        )
    note = "" if KSERVE in METHODS else " KServe's library was not installed (`make kserve`)."
    (out / "benchmarks-install.md").write_text(
        f"Medians of {runs} runs each.{note}\n\n" + "\n".join(lines) + "\n"
    )
    chart(results, out / "benchmarks-install.png")


def _cell(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def chart(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(FORMATS), figsize=(12, 4), sharey=True)
    for axis, archive_format in zip(axes, FORMATS, strict=True):
        rows = [r for r in results if r.archive_format == archive_format]
        for method in METHODS:
            measured = [r for r in rows if method in r.seconds]
            if measured:
                axis.plot(
                    [r.size_mib for r in measured],
                    [r.seconds[method] for r in measured],
                    "o-",
                    label=method,
                )
        axis.set_title(archive_format)
        axis.set_xlabel("model size (MiB)")
    axes[0].set_ylabel("install time (s)")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1024], help="MiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--cold", action="store_true", help="do not recycle memory before each run")
    arguments = parser.parse_args()
    run(arguments.sizes, arguments.runs, arguments.out, tuple(arguments.formats), arguments.cold)
    shutil.rmtree(_scratch(), ignore_errors=True)
