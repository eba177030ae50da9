"""Will a new version fit: in TF Serving's memory while it swaps, and on the volume.

TF Serving's stock binary loads a new version before it unloads the old one
(AvailabilityPreservingPolicy), so for a moment it holds both, beside every other model's
served version. It estimates a SavedModel's RAM as 1.2 times its bytes on disk
(`servables/tensorflow/util.cc`, `kResourceEstimateRAMMultiplier`); the same estimate
is used here against RECEIVER_SERVING_MEMORY_LIMIT. A version that does not fit is
refused before it is downloaded (by the object's size: archives of weights barely
compress) and again before the rename (by what it unpacked to).

On disk an install holds the kept versions, the staging copy, and for a zip the archive
itself until it is unpacked; a version that cannot fit the volume's free space is refused
before the download.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from receiver import modeldir
from receiver.errors import PermanentError

RAM_PER_DISK_BYTE = 1.2  # TF Serving's estimate of a SavedModel's memory


class DoesNotFitError(PermanentError):
    """The version would not fit TF Serving's memory during the swap, or the volume."""


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (links not followed), as TF Serving counts.

    A file that goes while it is counted (its version withdrawn or pruned by another
    process) counts nothing: /status and a job's checks read a tree others change.
    """
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def served_bytes(model_dir: Path) -> dict[str, int]:
    """Each model's newest installed version's bytes: what TF Serving holds for it."""
    held = {
        model: _newest_bytes(model_dir / model) for model in modeldir.installed_models(model_dir)
    }
    return {model: size for model, size in held.items() if size is not None}


def _newest_bytes(model_root: Path) -> int | None:
    """The newest version's bytes; if it is withdrawn while counted, the next one's, which
    TF Serving falls back to (None: no version)."""
    while versions := modeldir.version_dirs(model_root):
        newest = versions[-1][1]
        size = tree_bytes(newest)
        if newest.is_dir():
            return size
    return None


def memory_estimate(model_dir: Path) -> dict[str, int]:
    """Each model's estimated RAM in TF Serving (bytes), for /status."""
    return {
        model: round(RAM_PER_DISK_BYTE * size) for model, size in served_bytes(model_dir).items()
    }


def check_swap(model_dir: Path, model: str, new_bytes: int, limit: int | None) -> None:
    """Refuse a version whose swap would take TF Serving past `limit` bytes."""
    if limit is None:
        return
    held = served_bytes(model_dir)
    peak = round(RAM_PER_DISK_BYTE * (sum(held.values()) + new_bytes))
    if peak > limit:
        old = held.get(model, 0)
        others = sum(held.values()) - old
        raise DoesNotFitError(
            f"{model}: TF Serving would need about {_mib(peak)} while it swaps versions "
            f"(1.2 x ({_mib(new_bytes)} new + {_mib(old)} old + {_mib(others)} of other "
            f"models)), over RECEIVER_SERVING_MEMORY_LIMIT={_mib(limit)}"
        )


def volume_room(model_dir: Path, volume_limit: int | None) -> int | None:
    """Bytes left under RECEIVER_VOLUME_SIZE_LIMIT (None: no limit stated)."""
    return None if volume_limit is None else max(volume_limit - tree_bytes(model_dir), 0)


def check_disk(model_dir: Path, need_bytes: int, volume_limit: int | None = None) -> None:
    """Refuse a download that cannot fit the model dir's free space, or the volume's limit.

    An `emptyDir` reports its node's free space; its `sizeLimit`, past which the kubelet
    evicts the pod, is invisible from inside: RECEIVER_VOLUME_SIZE_LIMIT states it."""
    stats = os.statvfs(model_dir)
    free = stats.f_bavail * stats.f_frsize
    where = f"the volume of {model_dir}"
    if volume_limit is not None and volume_limit - tree_bytes(model_dir) < free:
        free = max(volume_limit - tree_bytes(model_dir), 0)
        where = f"{model_dir} within RECEIVER_VOLUME_SIZE_LIMIT={_mib(volume_limit)}"
    if need_bytes > free:
        raise DoesNotFitError(
            f"the install needs about {_mib(need_bytes)} on {where} and {_mib(free)} is free"
        )


def _mib(amount: int) -> str:
    return f"{amount / 2**20:.1f} MiB"
