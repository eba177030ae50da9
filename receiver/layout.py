"""Object names <-> (model, version): which uploads are models, and what they are called.

A model version is published either as one archive, `PREFIX/<model>/<version>.<ext>`, or
as a directory of objects, `PREFIX/<model>/<version>/...`, completed by a marker object
`PREFIX/<model>/<version>/<done marker>` (default `_SUCCESS`). For a directory only the
marker's event means anything. Anything else is acknowledged with the reason it was ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from receiver.config import Settings

# Longest suffix first, so `x.tar.gz` is not read as a `.gz` file. The compression of a
# tar is read from its first bytes; the name only tells tar from zip.
ARCHIVE_FORMATS = (
    "tar.gz",
    "tgz",
    "tar.bz2",
    "tbz2",
    "tar.xz",
    "txz",
    "tar.zst",
    "tzst",
    "tar",
    "zip",
)
# Where each installed version records where it came from (never taken from an archive).
PROVENANCE_FILE = ".receiver.json"
DIRECTORY = "directory"  # the "archive format" of a directory upload
MAX_VERSION = 2**63 - 1  # TF Serving parses version directories as int64
MAX_MODEL_NAME = 128

# Matched whole (fullmatch): `$` would also accept a trailing newline.
_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION_RE = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ModelVersion:
    """One version of one model, and the archive format it was published in."""

    model: str
    version: int
    archive_format: str


@dataclass(frozen=True)
class Ignored:
    """An object name that is not a model archive, and why."""

    reason: str


def parse_object_name(
    name: str,
    prefix: str,
    done_marker: str = "_SUCCESS",
    reserved: Mapping[str, str] | None = None,
) -> ModelVersion | Ignored:
    """Map an object name to the model version it publishes, or say why it is not one.

    `reserved` (from `reserved_names`): model names taken by the receiver's own files.
    """
    if not name.startswith(prefix):
        return Ignored(f"object {name!r} is outside the prefix {prefix!r}")
    parts = name[len(prefix) :].split("/")
    if len(parts) < 2:
        return Ignored(f"object {name!r} is not named {prefix}<model>/<version>.<ext>")
    model = parts[0]
    if not is_model_name(model):
        return Ignored(
            f"model name {model!r} must match [A-Za-z0-9][A-Za-z0-9._-]* "
            f"and be at most {MAX_MODEL_NAME} characters"
        )
    if reserved and model in reserved:
        return Ignored(f"model name {model!r} is reserved: {reserved[model]}")
    if len(parts) > 2:
        return _directory_object(model, parts[1], parts[2:], prefix, done_marker)
    filename = parts[1]
    for archive_format in ARCHIVE_FORMATS:
        stem = filename.removesuffix(f".{archive_format}")
        if stem != filename:
            break
    else:
        return Ignored(
            f"object {name!r} is not an archive ({', '.join('.' + f for f in ARCHIVE_FORMATS)})"
        )
    version = parse_version(stem)
    if version is None:
        return Ignored(f"version {stem!r} must be a positive whole number that fits int64")
    return ModelVersion(model, version, archive_format)


def _directory_object(
    model: str, version_text: str, rest: list[str], prefix: str, done_marker: str
) -> ModelVersion | Ignored:
    version = parse_version(version_text)
    if version is None:
        return Ignored(f"object is not under {prefix}<model>/<version>/ (version {version_text!r})")
    if rest != [done_marker]:
        return Ignored(
            f"part of the directory upload of {model} version {version}; "
            f"installed when {prefix}{model}/{version_text}/{done_marker} appears"
        )
    return ModelVersion(model, version, DIRECTORY)


def directory_prefix(marker_name: str) -> str:
    """The folder (with trailing slash) that a done-marker object completes."""
    return marker_name.rsplit("/", 1)[0] + "/"


def is_model_name(name: str) -> bool:
    return len(name) <= MAX_MODEL_NAME and _MODEL_RE.fullmatch(name) is not None


def reserved_names(settings: Settings) -> dict[str, str]:
    """Names in the model dir that the receiver's own files use, each with the reason.

    A model of that name would install into them (or fail to, for good); its directory
    would stop the receiver from starting. The default state dir is hidden, no model name.
    """
    own: dict[str, Path | None] = {
        "RECEIVER_STATE_DIR": settings.state_dir,
        "RECEIVER_MODEL_CONFIG_FILE": settings.model_config_file,
    }
    reserved = {}
    for setting, path in own.items():
        if path is not None and path.is_relative_to(settings.model_dir):
            parts = path.relative_to(settings.model_dir).parts
            if parts:
                reserved[parts[0]] = f"{setting} is {path}, in the model dir under that name"
    return reserved


def parse_version(text: str) -> int | None:
    """A version as TF Serving reads a directory name, or None if it is not one we accept."""
    if not _VERSION_RE.fullmatch(text):
        return None
    version = int(text)
    return version if 0 < version <= MAX_VERSION else None


def object_name(prefix: str, model: str, version: int, archive_format: str = "tar.gz") -> str:
    """The object name a model version is published under."""
    return f"{prefix}{model}/{version}.{archive_format}"
