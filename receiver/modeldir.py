"""What is in the model dir, and taking versions out of it.

TF Serving treats any child of `<model dir>/<model>/` whose name parses as an int64 as a
version. This module lists them (each with its real directory name: a hand-placed
`00000123` is version 123), reads where an installed version came from (`.receiver.json`,
which TF Serving ignores), and withdraws versions: one rename to a hidden `.trash-…`
name, which TF Serving stops seeing at once, then delete. The delivery side (intake)
reads and withdraws through here; putting versions in place is `receiver.servable`'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from receiver.layout import PROVENANCE_FILE, is_model_name, parse_version

TRASH_PREFIX = ".trash-"  # a withdrawn version, hidden from TF Serving, until deleted


def read_provenance(version_dir: Path) -> dict[str, object]:
    """Where an installed version came from ({} if unknown, e.g. placed by hand)."""
    try:
        provenance = json.loads((version_dir / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return provenance if isinstance(provenance, dict) else {}


def version_dirs(model_root: Path) -> list[tuple[int, Path]]:
    """Each version directory with its number, ascending; a hand-placed `00000123` keeps its
    own name (removing `123` instead would remove nothing)."""
    try:
        entries = list(model_root.iterdir())
    except (FileNotFoundError, NotADirectoryError):  # no such model, or just removed
        return []
    found = []
    for entry in entries:
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


def prune(
    model_root: Path, keep: int, protected: int | None = None, *, delete: bool = True
) -> list[int]:
    """Withdraw all but the `keep` highest versions (0 keeps all), and never `protected`
    or any version above it; returns those removed. With `delete` false they are only
    hidden (out of TF Serving's sight at once), for `empty_trash` to delete later."""
    if keep <= 0:
        return []
    with directory_lock(model_root):
        kept = set(installed_versions(model_root)[-keep:])
        if protected is not None:
            kept |= {v for v in installed_versions(model_root) if v >= protected}
        removed = [(v, path) for v, path in version_dirs(model_root) if v not in kept]
        for _, path in removed:
            withdraw(path, delete=delete)
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


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def withdraw(version_dir: Path, *, delete: bool = True) -> None:
    """Take a version away from TF Serving in one rename, then delete it (unless not
    `delete`: then `empty_trash` does, later)."""
    trash = version_dir.with_name(f"{TRASH_PREFIX}{version_dir.name}-{secrets.token_hex(6)}")
    try:
        os.rename(version_dir, trash)
    except FileNotFoundError:
        return  # another process withdrew it first
    if delete:
        shutil.rmtree(trash, ignore_errors=True)


def empty_trash(model_root: Path) -> None:
    """Delete the versions withdrawn under `model_root` but not yet deleted, by any
    process (two deleting one tree at once is harmless)."""
    for trash in model_root.glob(f"{TRASH_PREFIX}*"):
        shutil.rmtree(trash, ignore_errors=True)


def empty_all_trash(model_dir: Path) -> None:
    """`empty_trash` for every model: before an install measures its room, so what another
    worker process pruned (and may still be deleting), or one that died left, counts as free."""
    for model in installed_models(model_dir):
        empty_trash(model_dir / model)
