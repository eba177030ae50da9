"""Object names <-> (model, version): which uploads are models, and what they are called.

A model version is published either as one archive, `PREFIX/<model>/<version>.<ext>`, or
as a directory of objects, `PREFIX/<model>/<version>/...`, completed by a marker object
`PREFIX/<model>/<version>/<done marker>` (default `_SUCCESS`). For a directory only the
marker's event means anything. Anything else is acknowledged with the reason it was ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
DIRECTORY = "directory"  # the "archive format" of a directory upload
MAX_VERSION = 2**63 - 1  # TF Serving parses version directories as int64
MAX_MODEL_NAME = 128

_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION_RE = re.compile(r"^[0-9]+$")


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
    name: str, prefix: str, done_marker: str = "_SUCCESS"
) -> ModelVersion | Ignored:
    """Map an object name to the model version it publishes, or say why it is not one."""
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
    return len(name) <= MAX_MODEL_NAME and _MODEL_RE.match(name) is not None


def parse_version(text: str) -> int | None:
    """A version as TF Serving reads a directory name, or None if it is not one we accept."""
    if not _VERSION_RE.match(text):
        return None
    version = int(text)
    return version if 0 < version <= MAX_VERSION else None


def object_name(prefix: str, model: str, version: int, archive_format: str = "tar.gz") -> str:
    """The object name a model version is published under."""
    return f"{prefix}{model}/{version}.{archive_format}"
