"""Putting a version in place: where the SavedModel is, the atomic install, and clean-up.

TF Serving treats any child of `<model dir>/<model>/` whose name parses as an int64 as
a version and loads it without checking it is complete. So a version is assembled in a
hidden sibling (`.staging-…`, a name TF Serving skips) on the same filesystem, fsynced,
and appears under its number by one `rename` (taking one away is `receiver.modeldir`'s).
Start-up sweeps away hidden debris a crash left.

Each installed version carries `.receiver.json` (where it came from); TF Serving ignores
it, and it lets a redelivered or resumed job recognise its own install.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from receiver.errors import PermanentError
from receiver.layout import PROVENANCE_FILE, is_model_name
from receiver.modeldir import TRASH_PREFIX, fsync_dir

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_DEBRIS_PREFIXES = (".staging-", TRASH_PREFIX, ".download-")


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


def install(
    root: Path,
    target: Path,
    provenance: dict[str, object],
    on_progress: Callable[[], None] = lambda: None,
    before_rename: Callable[[], None] = lambda: None,
) -> None:
    """Make `root` appear as `target` in one rename, durably. Never replaces a version."""
    record = json.dumps({**provenance, "installed_at": time.time()}).encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:  # never through a link, never over a file: the archive may not carry its own
        fd = os.open(root / PROVENANCE_FILE, flags, 0o644)
    except FileExistsError:
        raise PermanentError(
            f"the archive has its own {PROVENANCE_FILE} at the version's root: that name is "
            "the receiver's (where a version came from); leave it out"
        ) from None
    with os.fdopen(fd, "wb") as out:
        out.write(record)
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
