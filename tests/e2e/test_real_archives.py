"""Archives made by every real tool install, and TensorFlow loads what was installed.

Each archive is made by the tool itself (GNU tar, bsdtar, Info-ZIP, 7-Zip, Python's
tarfile/zipfile/shutil), uploaded to the storage emulator, pushed and installed by the
worker; then one TensorFlow process loads every installed version and runs it.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from backports import zstd

from receiver.vocabulary import JobState
from tests import tfcheck
from tests.helpers import HALF_PLUS_TWO

Maker = Callable[[Path, Path], None]  # (source dir holding `model/`, archive to write)


def run(*command: str, cwd: Path) -> None:
    if shutil.which(command[0]) is None:
        pytest.skip(
            f"{command[0]} is not installed (`make test` run as root installs it from Debian)"
        )
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)


def gnu_tar(*flags: str) -> Maker:
    return lambda src, out: run("tar", *flags, "-f", str(out), "model", cwd=src)


def python_tarfile(src: Path, out: Path) -> None:
    with tarfile.open(out, "w:gz") as archive:
        archive.add(src / "model", arcname="model")


def zipfile_write(src: Path, out: Path) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((src / "model").rglob("*")):
            archive.write(path, path.relative_to(src))


def zipfile_writestr(src: Path, out: Path) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((src / "model").rglob("*")):
            if path.is_file():
                archive.writestr(str(path.relative_to(src)), path.read_bytes())


def make_archive(kind: str) -> Maker:
    def make(src: Path, out: Path) -> None:
        made = shutil.make_archive(str(out.parent / "made"), kind, root_dir=src, base_dir="model")
        Path(made).rename(out)

    return make


def made_on_macos(src: Path, out: Path) -> None:
    """What Finder's "Compress" (ditto -c -k --sequesterRsrc --keepParent) leaves in a zip."""
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x00"
    (src / "model" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (src / "model" / "._saved_model.pb").write_bytes(apple_double)
    forks = src / "__MACOSX" / "model" / "variables"
    forks.mkdir(parents=True)
    (forks / "._variables.index").write_bytes(apple_double)
    (src / "__MACOSX" / "model" / "._saved_model.pb").write_bytes(apple_double)
    run("zip", "-qr", str(out), "model", "__MACOSX", cwd=src)


def multi_member_gzip(src: Path, out: Path) -> None:
    """`cat a.gz b.gz`: the tar split in two, each half gzipped on its own."""
    plain = out.with_suffix(".plain")
    run("tar", "-cf", str(plain), "model", cwd=src)
    data = plain.read_bytes()
    out.write_bytes(gzip.compress(data[:3000]) + gzip.compress(data[3000:]))


def tar_zstd(src: Path, out: Path) -> None:
    plain = out.with_suffix(".plain")
    run("tar", "-cf", str(plain), "model", cwd=src)
    out.write_bytes(zstd.compress(plain.read_bytes()))


# name -> (object suffix, how the archive is made)
TOOLS: dict[str, tuple[str, Maker]] = {
    "gnu-tar-gnu": ("tar.gz", gnu_tar("-cz", "--format=gnu")),
    "gnu-tar-posix": ("tar.gz", gnu_tar("-cz", "--format=posix")),
    "gnu-tar-ustar": ("tgz", gnu_tar("-cz", "--format=ustar")),
    "gnu-tar-plain": ("tar", gnu_tar("-c")),
    "gnu-tar-xz": ("tar.xz", gnu_tar("-cJ")),
    "gnu-tar-bzip2": ("tar.bz2", gnu_tar("-cj")),
    "tar-zstd": ("tar.zst", tar_zstd),
    "bsdtar": ("tar.gz", lambda src, out: run("bsdtar", "-czf", str(out), "model", cwd=src)),
    "python-tarfile": ("tar.gz", python_tarfile),
    "zipfile-write": ("zip", zipfile_write),
    "zipfile-writestr": ("zip", zipfile_writestr),
    "shutil-zip": ("zip", make_archive("zip")),
    "shutil-gztar": ("tar.gz", make_archive("gztar")),
    "info-zip": ("zip", lambda src, out: run("zip", "-qr", str(out), "model", cwd=src)),
    "7-zip": ("zip", lambda src, out: run("7zz", "a", "-tzip", "-bd", str(out), "model", cwd=src)),
    "macos-zip": ("zip", made_on_macos),
    "multi-member-gzip": ("tar.gz", multi_member_gzip),
}
HALF_PLUS_TWO_OUTPUT = [2.5, 3.0, 4.5]  # 0.5x + 2 for x = 1, 2, 5


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tfcheck.export_keras_model(tmp_path_factory.mktemp("keras") / "export")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Filled by the install tests; loaded by TensorFlow at the end."""
    return {}


@pytest.fixture(scope="module")
def not_on_this_machine() -> set[str]:
    """The tools whose archive test skipped: not installed (`make tools` needs root)."""
    return set()


def source_dir(tmp_path: Path, model: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(model, src / "model")
    return src


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_archives_from_every_tool_install(
    tool, runtime, bucket, push, settings, tmp_path, installed, not_on_this_machine
):
    suffix, make = TOOLS[tool]
    out = tmp_path / f"model.{suffix}"
    try:
        make(source_dir(tmp_path, HALF_PLUS_TWO), out)
    except pytest.skip.Exception:
        not_on_this_machine.add(tool)
        raise
    blob = bucket.blob(f"models/{tool}/1.{suffix}")
    blob.upload_from_filename(str(out))
    push(blob)
    runtime.worker.run_once()
    (job,) = runtime.journal.recent()
    assert job.state is JobState.INSTALLED, job.reason
    version = settings.model_dir / tool / "1"
    assert sorted(p.name for p in version.iterdir()) == [
        ".receiver.json",
        "assets",
        "saved_model.pb",
        "variables",
    ]
    installed[tool] = version


def test_a_keras_export_installs(runtime, bucket, push, settings, tmp_path, keras_model, installed):
    out = tmp_path / "keras.tar.gz"
    gnu_tar("-cz")(source_dir(tmp_path, keras_model), out)
    blob = bucket.blob("models/keras/1.tar.gz")
    blob.upload_from_filename(str(out))
    push(blob)
    runtime.worker.run_once()
    (job,) = runtime.journal.recent()
    assert job.state is JobState.INSTALLED, job.reason
    version = settings.model_dir / "keras" / "1"
    assert {"fingerprint.pb", "saved_model.pb", "variables", "assets"} <= {
        p.name for p in version.iterdir()
    }
    installed["keras"] = version


def test_a_directory_upload_like_gcloud_storage_cp_r_installs(
    runtime, bucket, push, settings, installed
):
    """`gcloud storage cp -r 00000123 gs://b/models/dir-upload/1` then a `_SUCCESS` marker."""
    for path in sorted(HALF_PLUS_TWO.rglob("*")):
        if path.is_file():
            name = f"models/dir-upload/1/{path.relative_to(HALF_PLUS_TWO)}"
            bucket.blob(name).upload_from_filename(str(path))
    marker = bucket.blob("models/dir-upload/1/_SUCCESS")
    marker.upload_from_string(b"")
    push(marker)
    runtime.worker.run_once()
    (job,) = runtime.journal.recent()
    assert job.state is JobState.INSTALLED, job.reason
    installed["dir-upload"] = settings.model_dir / "dir-upload" / "1"


def test_tensorflow_loads_and_runs_every_installed_version(installed, not_on_this_machine):
    expected_names = (set(TOOLS) - not_on_this_machine) | {"keras", "dir-upload"}
    missing = expected_names - set(installed)
    assert not missing, f"these did not install (see their tests): {sorted(missing)}"
    outputs = tfcheck.predict(installed)
    weight, bias = tfcheck.KERAS_WEIGHTS
    expected = {name: HALF_PLUS_TWO_OUTPUT for name in installed}
    expected["keras"] = [weight * x + bias for x in (1.0, 2.0, 5.0)]
    assert outputs == expected
