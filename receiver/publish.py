"""`receiver publish EXPORT_DIR gs://BUCKET/PREFIX/MODEL/VERSION`: a training pipeline's
last step (what TFX's Pusher is), for real Cloud Storage and for the emulator.

1. The export gets the checks the receiver runs before it installs (`savedmodel.check`):
   what the receiver would refuse is refused here, before a byte is uploaded.
2. It is packed as one archive, `tar.zst` by default (docs/benchmarks.md: weights barely
   compress, and zstd inflates several times faster than gzip, so the install is bound by
   the wire or the disk), streamed to a temporary file: memory does not grow with the model.
   `--as-directory` uploads the files as they are, then the done marker, last.
3. Each upload carries a CRC-32C that Cloud Storage verifies, and the precondition
   `ifGenerationMatch=0`: an existing object is never overwritten (versions are immutable:
   TF Serving never reloads a version number). A version already published in another
   form (another archive format, or a directory) is refused too.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from backports import zstd
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from receiver import savedmodel, servable
from receiver.download.store import listing_error
from receiver.errors import ReceiverError
from receiver.layout import ARCHIVE_FORMATS, PROVENANCE_FILE, is_model_name, parse_version
from receiver.objectref import bucket_name_problem

PACK_FORMATS = ("tar.zst", "tar.gz", "tar")
DEFAULT_FORMAT = "tar.zst"
_CHUNK_BYTES = 8 * 1024 * 1024  # resumable upload chunk: progress is reported per chunk
OnUpload = Callable[[int, int], None]  # (bytes sent, bytes in all)


class PublishError(ReceiverError):
    """The export cannot be published: it would be refused, or the version exists."""


@dataclass(frozen=True)
class Destination:
    bucket: str
    prefix: str  # "" or ending in "/"
    model: str
    version: int

    @classmethod
    def parse(cls, url: str) -> Destination:
        path = url.removeprefix("gs://") if url.startswith("gs://") else None
        parts = (path or "").strip("/").split("/")
        if path is None or len(parts) < 3:
            raise PublishError(
                f"{url!r}: expected gs://BUCKET/PREFIX/MODEL/VERSION (PREFIX may be empty)"
            )
        bucket, *prefix, model, version_text = parts
        if problem := bucket_name_problem(bucket):
            raise PublishError(f"{url!r}: {problem}")
        suffix = next((f for f in ARCHIVE_FORMATS if version_text.endswith(f".{f}")), None)
        if suffix is not None:
            packed = f" --format {suffix}" if suffix in PACK_FORMATS else ""
            raise PublishError(
                f"{url!r}: the destination is gs://BUCKET/PREFIX/MODEL/VERSION, without a "
                f"suffix; publish names the object VERSION.FORMAT, FORMAT from --format "
                f"({DEFAULT_FORMAT} by default): use {url.removesuffix(f'.{suffix}')}{packed}"
            )
        version = parse_version(version_text)
        if version is None:
            raise PublishError(f"version {version_text!r} must be a positive whole number")
        if not is_model_name(model):
            raise PublishError(f"model name {model!r} must match [A-Za-z0-9][A-Za-z0-9._-]*")
        return cls(bucket, "".join(f"{part}/" for part in prefix), model, version)

    @property
    def folder(self) -> str:
        return f"{self.prefix}{self.model}/{self.version}"


def publish(
    export: Path,
    url: str,
    *,
    tags: frozenset[str] = frozenset({"serve"}),
    archive_format: str = DEFAULT_FORMAT,
    as_directory: bool = False,
    done_marker: str = "_SUCCESS",
    progress: OnUpload = lambda sent, total: None,
    client: storage.Client | None = None,
) -> list[str]:
    """Check, pack and upload `export`; returns the gs:// URLs written, the last one last."""
    destination = Destination.parse(url)
    if not export.is_dir():
        raise PublishError(f"{export}: no such directory (the SavedModel export to publish)")
    try:
        root = servable.find_saved_model(export)
        savedmodel.check(root, tags, max_graph_bytes=2**31)
    except ReceiverError as exc:
        raise PublishError(f"{export}: the receiver would refuse it: {exc.reason}") from None
    bucket = (client or storage_client()).bucket(destination.bucket)
    _refuse_existing(bucket, destination)
    if as_directory:
        return _upload_directory(bucket, root, destination, done_marker, progress)
    name = f"{destination.folder}.{archive_format}"
    with tempfile.TemporaryFile() as archive:
        pack(root, archive, archive_format)
        size = archive.tell()
        archive.seek(0)
        _upload(bucket.blob(name, chunk_size=_CHUNK_BYTES), archive, size, progress, 0, size)
    return [f"gs://{destination.bucket}/{name}"]


def storage_client() -> storage.Client:
    """Application Default Credentials, or anonymous access to the emulator."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    return storage.Client()


def pack(root: Path, out: IO[bytes], archive_format: str) -> None:
    """`root`'s files as a tar archive into `out`, zstd- or gzip-compressed as asked."""
    if archive_format not in PACK_FORMATS:
        raise PublishError(f"format {archive_format!r}: one of {', '.join(PACK_FORMATS)}")
    compressed: IO[bytes] = out
    if archive_format == "tar.zst":
        compressed = cast(IO[bytes], zstd.ZstdFile(out, "w"))
    elif archive_format == "tar.gz":
        compressed = cast(IO[bytes], gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6))
    with tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in _files(root):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    if compressed is not out:
        compressed.close()


def _files(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.name != PROVENANCE_FILE and (path.is_file() or path.is_symlink())
    )


def _refuse_existing(bucket: storage.Bucket, destination: Destination) -> None:
    """Any object that already publishes this version (any format, or a directory)."""
    try:
        listing = list(bucket.list_blobs(prefix=destination.folder))
    except google_exceptions.GoogleAPICallError as exc:
        raise listing_error(exc, destination.bucket, destination.folder) from None
    taken = [
        blob.name
        for blob in listing
        if blob.name.startswith(f"{destination.folder}/")
        or any(blob.name == f"{destination.folder}.{ext}" for ext in ARCHIVE_FORMATS)
    ]
    if taken:
        raise PublishError(
            f"{destination.model} version {destination.version} is already published "
            f"(gs://{destination.bucket}/{taken[0]}); versions are immutable, "
            "publish a new version number"
        )


def _upload_directory(
    bucket: storage.Bucket,
    root: Path,
    destination: Destination,
    done_marker: str,
    progress: OnUpload,
) -> list[str]:
    files = [path for path in _files(root) if path.is_file()]
    total = sum(path.stat().st_size for path in files)
    written, sent = [], 0
    for path in files:
        name = f"{destination.folder}/{path.relative_to(root)}"
        size = path.stat().st_size
        with path.open("rb") as data:
            _upload(bucket.blob(name, chunk_size=_CHUNK_BYTES), data, size, progress, sent, total)
        sent += size
        written.append(f"gs://{destination.bucket}/{name}")
    marker = f"{destination.folder}/{done_marker}"
    _upload(bucket.blob(marker), io.BytesIO(), 0, progress, total, total)  # last: it installs
    return [*written, f"gs://{destination.bucket}/{marker}"]


def _upload(
    blob: storage.Blob, data: IO[bytes], size: int, progress: OnUpload, before: int, total: int
) -> None:
    reporting = _Reporting(data, lambda done: progress(before + done, total))
    try:
        blob.upload_from_file(
            reporting, size=size, checksum="crc32c", if_generation_match=0, rewind=False
        )
    except google_exceptions.PreconditionFailed:
        raise PublishError(
            f"gs://{blob.bucket.name}/{blob.name} already exists; versions are immutable"
        ) from None
    progress(before + size, total)


class _Reporting:
    """A file object that reports how far it has been read."""

    def __init__(self, data: IO[bytes], report: Callable[[int], None]) -> None:
        self._data = data
        self._report = report
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        self._done += len(chunk)
        self._report(self._done)
        return chunk

    def tell(self) -> int:
        return self._data.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._data.seek(offset, whence)
        self._done = position
        return position
