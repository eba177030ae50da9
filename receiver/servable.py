"""What TF Serving sees: where the SavedModel is, the atomic install, pruning, and clean-up.

TF Serving treats any child of `<model dir>/<model>/` whose name parses as an int64 as
a version and loads it without checking it is complete. So a version is assembled in a
hidden sibling (`.staging-…`, a name TF Serving skips) on the same filesystem, fsynced,
and appears under its number by one `rename`. Removal goes the other way: one rename to
a hidden `.trash-…` name, then delete. Start-up sweeps away hidden debris a crash left.

Each installed version carries `.receiver.json` (where it came from); TF Serving ignores
it, and it lets a redelivered or resumed job recognise its own install.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from receiver.errors import PermanentError
from receiver.layout import is_model_name, parse_version

PROVENANCE_FILE = ".receiver.json"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_DEBRIS_PREFIXES = (".staging-", ".trash-", ".download-")


def find_saved_model(staging: Path) -> Path:
    """The directory holding the SavedModel: the archive root, or its single top-level dir."""
    root = staging
    if not _has_saved_model(root):
        entries = list(staging.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
            root = entries[0]
    if not _has_saved_model(root):
        raise PermanentError(
            "not a SavedModel: no saved_model.pb or saved_model.pbtxt at the archive root "
            "or inside its single top-level directory"
        )
    return root


def _has_saved_model(directory: Path) -> bool:
    """True if the graph file is there; it must be a regular file, not a link or directory."""
    for name in SAVED_MODEL_FILES:
        path = directory / name
        if path.is_symlink() or path.is_dir():
            raise PermanentError(f"not a SavedModel: {name} is a link or directory, not a file")
        if path.is_file():
            return True
    return False


def new_staging_dir(model_root: Path, version: int, job_id: int) -> Path:
    staging = model_root / f".staging-{version}-job{job_id}-{secrets.token_hex(6)}"
    for _ in range(3):  # another process's failed install may remove an empty model_root
        model_root.mkdir(parents=True, exist_ok=True)
        try:
            staging.mkdir()
            return staging
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"{model_root} keeps disappearing")


def remove_if_empty(model_root: Path) -> None:
    """Remove a model directory that holds nothing (its only install failed)."""
    with contextlib.suppress(OSError):  # not empty, or already gone
        model_root.rmdir()


def read_provenance(version_dir: Path) -> dict[str, object]:
    """Where an installed version came from ({} if unknown, e.g. placed by hand)."""
    try:
        provenance = json.loads((version_dir / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return provenance if isinstance(provenance, dict) else {}


def install(
    root: Path,
    target: Path,
    provenance: dict[str, object],
    on_progress: Callable[[], None] = lambda: None,
    before_rename: Callable[[], None] = lambda: None,
) -> None:
    """Make `root` appear as `target` in one rename, durably. Never replaces a version."""
    (root / PROVENANCE_FILE).write_text(json.dumps({**provenance, "installed_at": time.time()}))
    _fsync_tree(root, on_progress)
    before_rename()
    try:
        os.rename(root, target)
    except OSError as exc:
        if target.exists():
            raise PermanentError(
                f"{target} already exists; versions are immutable, publish a new version number"
            ) from exc
        raise
    fsync_dir(target.parent)


def _fsync_tree(root: Path, on_progress: Callable[[], None]) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            on_progress()
        fsync_dir(Path(directory))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def version_dirs(model_root: Path) -> list[tuple[int, Path]]:
    """Each version directory with its number, ascending; a hand-placed `00000123` keeps its
    own name (removing `123` instead would remove nothing)."""
    if not model_root.is_dir():
        return []
    found = []
    for entry in model_root.iterdir():
        version = parse_version(entry.name)
        if version is not None and entry.is_dir():
            found.append((version, entry))
    return sorted(found)


def installed_versions(model_root: Path) -> list[int]:
    """Version numbers present for one model, ascending."""
    return sorted({version for version, _ in version_dirs(model_root)})


def installed_models(model_dir: Path) -> dict[str, list[int]]:
    """Every model under the model dir with its versions (models without versions included)."""
    if not model_dir.is_dir():
        return {}
    return {
        entry.name: installed_versions(entry)
        for entry in sorted(model_dir.iterdir())
        if entry.is_dir() and is_model_name(entry.name)
    }


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Serialise changes under `directory` across processes (a model's versions, a config)."""
    directory.mkdir(parents=True, exist_ok=True)
    # flock on the directory itself: no lock file for TF Serving (or a person) to trip over.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def superseded(model_root: Path, version: int, keep: int) -> str | None:
    """Why `version` would be pruned at once (it is older than every version kept), or None.

    The one statement of the rule: intake skips such a push, the installer such a job.
    """
    kept = installed_versions(model_root)[-keep:] if keep > 0 else []
    if len(kept) >= keep > 0 and version < kept[0]:
        return (
            f"{model_root.name} version {version} is older than every version kept "
            f"(RECEIVER_KEEP_VERSIONS={keep}); not downloaded"
        )
    return None


def prune(model_root: Path, keep: int) -> list[int]:
    """Withdraw all but the `keep` highest versions (0 keeps all); returns those removed."""
    if keep <= 0:
        return []
    with directory_lock(model_root):
        kept = set(installed_versions(model_root)[-keep:])
        removed = [(v, path) for v, path in version_dirs(model_root) if v not in kept]
        for _, path in removed:
            withdraw(path)
    return sorted({version for version, _ in removed})


def remove_version(model_root: Path, version: int) -> str | None:
    """Withdraw one version unless it is the model's last; returns why not, or None."""
    with directory_lock(model_root):
        found = version_dirs(model_root)
        paths = [path for v, path in found if v == version]
        if not paths:
            return f"version {version} is not installed"
        if len(paths) == len(found):
            return f"version {version} is the last one; TF Serving would be left with none"
        for path in paths:
            withdraw(path)
    return None


def withdraw(version_dir: Path) -> None:
    """Take a version away from TF Serving in one rename, then delete it."""
    trash = version_dir.with_name(f".trash-{version_dir.name}-{secrets.token_hex(6)}")
    try:
        os.rename(version_dir, trash)
    except FileNotFoundError:
        return  # another process withdrew it first
    shutil.rmtree(trash, ignore_errors=True)


def remove_job_debris(model_root: Path, job_id: int) -> list[Path]:
    """Delete what earlier attempts of one job left (a worker killed mid-install): staging
    and download spools, which would otherwise hold disk until the next restart."""
    removed = []
    if model_root.is_dir():
        for entry in model_root.iterdir():
            if (
                entry.name.startswith((".staging-", ".download-"))
                and f"-job{job_id}-" in entry.name
            ):
                _remove(entry)
                removed.append(entry)
    return removed


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def remove_debris(model_dir: Path) -> list[Path]:
    """Delete hidden staging, trash and download leftovers of an earlier crash."""
    removed: list[Path] = []
    if not model_dir.is_dir():
        return removed
    for model_root in model_dir.iterdir():
        if not model_root.is_dir() or not is_model_name(model_root.name):
            continue
        for entry in model_root.iterdir():
            if entry.name.startswith(_DEBRIS_PREFIXES):
                _remove(entry)
                removed.append(entry)
    return removed
