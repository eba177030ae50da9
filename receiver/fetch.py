"""Bytes into staging: one archive streamed and unpacked, or a directory upload's objects.

Every object is read pinned to its generation and checksummed (`receiver.download`);
what arrives is counted for the job's progress; a stored gzip layer (`gcloud storage cp
-Z`) is removed before unpacking (`receiver.unpack`). A zip's index is read first, by
ranged reads of its end, and the zip then streams as a tar does (`unpack.zipstream`);
one whose ranges are not its own bytes (stored gzip-encoded) is spooled to disk first.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from receiver.config import Limits
from receiver.download import ObjectStore, ObjectStream
from receiver.errors import CorruptArchiveError, PermanentError, TransientError
from receiver.layout import directory_prefix
from receiver.objectref import ObjectRef
from receiver.unpack import content_decoded, is_encoded, unpack_tar, unpack_zip, zipstream
from receiver.unpack.base import CHUNK_SIZE, Readable
from receiver.unpack.writer import SafeWriter

log = logging.getLogger(__name__)

OnBytes = Callable[[int], None]  # called with the bytes downloaded so far
_PARALLEL_DOWNLOADS = 8  # objects of a directory upload fetched at once


def fetch_archive(
    store: ObjectStore,
    ref: ObjectRef,
    archive_format: str,
    staging: Path,
    limits: Limits,
    progress: ByteCounter,
) -> None:
    """Stream archive `ref` and unpack it under `staging`, its checksum checked."""
    if archive_format == "zip":
        _fetch_zip(store, ref, staging, limits, progress)
        return
    with store.open(ref) as download, _verified(download):
        reporting = _decoded(download, progress, limits)
        unpack_tar(reporting, staging, limits, lambda: download.bytes_read)


@contextlib.contextmanager
def _verified(download: ObjectStream) -> Iterator[None]:
    """`download`'s checksum checked once the body has read it, and also when the body
    found its bytes corrupt: bytes damaged on the way look like a corrupt archive, and a
    checksum mismatch (raised by verify) makes that a retry instead of a refusal."""
    try:
        yield
    except CorruptArchiveError:
        download.verify()
        raise
    download.verify()


def _fetch_zip(
    store: ObjectStore, ref: ObjectRef, staging: Path, limits: Limits, progress: ByteCounter
) -> None:
    """A zip's index read by ranged reads, then the zip streamed as a tar is (`zipstream`);
    spooled to disk whole first where that cannot be done."""
    tail = store.read_range(ref, -zipstream.TAIL_BYTES)
    if tail is None:  # a server that ignores ranges, or an empty object
        _spool_zip(store, ref, staging, limits, progress, "its ranges cannot be read")
        return
    if is_encoded(tail.content_encoding):  # `cp -Z`: the ranges are of the gzip stream
        _spool_zip(store, ref, staging, limits, progress, "it is stored gzip-encoded")
        return

    def read_range(start: int, end: int) -> bytes:
        answer = store.read_range(ref, start, end)
        if answer is None:
            raise TransientError(f"{ref.url}: Cloud Storage would not serve bytes {start}-{end}")
        return answer.data

    try:
        index = zipstream.read_index(tail.data, tail.size, read_range, limits)
    except CorruptArchiveError:
        # No checksum covers a ranged read: only the whole object's can tell an index
        # damaged on the way (a retry) from a corrupt zip, so download it whole first.
        _spool_zip(store, ref, staging, limits, progress, "its index looks corrupt")
        return
    with store.open(ref) as download, _verified(download):
        try:
            reporting = _ReportingStream(download, progress)
            zipstream.unpack_zip_stream(reporting, index, staging, limits)
        except zipstream.IndexMismatchError as exc:
            # The download is the object (its checksum says so): the ranged reads were not.
            download.verify()
            raise TransientError(f"{ref.url}: {exc}") from exc


def _spool_zip(
    store: ObjectStore,
    ref: ObjectRef,
    staging: Path,
    limits: Limits,
    progress: ByteCounter,
    why: str,
) -> None:
    """The zip downloaded whole to a hidden file beside staging, checked, then unpacked."""
    log.info("%s: downloading the zip whole before unpacking it: %s", ref.url, why)
    spool = staging.with_name(staging.name.replace(".staging-", ".download-", 1))
    try:
        with store.open(ref) as download, _verified(download), spool.open("wb") as out:
            shutil.copyfileobj(_decoded(download, progress, limits), out, CHUNK_SIZE)
        unpack_zip(spool, staging, limits)
    finally:
        spool.unlink(missing_ok=True)


def directory_objects(store: ObjectStore, marker: ObjectRef) -> list[ObjectRef]:
    """The objects of a directory upload: everything listed beside its done marker."""
    folder = directory_prefix(marker.name)
    objects = [
        obj
        for obj in store.list_objects(marker.bucket, folder)
        if obj.name != marker.name and not obj.name.endswith("/")
    ]
    if not objects:
        raise PermanentError(f"gs://{marker.bucket}/{folder} holds nothing but its done marker")
    return objects


def fetch_directory(
    store: ObjectStore,
    marker: ObjectRef,
    objects: list[ObjectRef],
    staging: Path,
    limits: Limits,
    progress: ByteCounter,
) -> None:
    """A directory upload's `objects`, as listed, written under `staging` in parallel."""
    folder = directory_prefix(marker.name)
    writer = SafeWriter(staging, limits, compressed_bytes=lambda: writer.unpacked_bytes)

    def fetch(obj: ObjectRef) -> None:
        # Pinned to the generation listed: a later overwrite cannot mix into this version.
        with store.open(obj) as download, _verified(download):
            # Read in 512 KiB: each read of a download is a new allocation, three are
            # held per object, and eight objects are written at once (2 MiB: 48 MiB).
            source = _decoded(download, progress, limits)
            writer.file(obj.name[len(folder) :], source, read_bytes=CHUNK_SIZE)

    with ThreadPoolExecutor(max_workers=_PARALLEL_DOWNLOADS) as pool:
        futures = [pool.submit(fetch, obj) for obj in objects]
        try:
            for future in as_completed(futures):
                future.result()
        finally:
            for future in futures:
                future.cancel()
    writer.finish()


class ByteCounter:
    """Adds up bytes downloaded (by one stream or several at once) and reports the total."""

    def __init__(self, on_progress: OnBytes) -> None:
        self._on_progress = on_progress
        self._lock = threading.Lock()
        self.bytes = 0

    def add(self, amount: int) -> None:
        with self._lock:
            self.bytes += amount
        self._on_progress(self.bytes)

    def tick(self) -> None:
        self._on_progress(self.bytes)


class _ReportingStream:
    """Passes reads through, adding what arrives to the job's progress."""

    def __init__(self, download: ObjectStream, progress: ByteCounter) -> None:
        self._download = download
        self._progress = progress

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._download.read(size)
        self._progress.add(len(chunk))
        return chunk


def _decoded(download: ObjectStream, progress: ByteCounter, limits: Limits) -> Readable:
    """The download's bytes, counted as they arrive, its stored gzip layer (if any) removed."""
    reporting = _ReportingStream(download, progress)
    return content_decoded(
        reporting, download.content_encoding, limits, lambda: download.bytes_read
    )
