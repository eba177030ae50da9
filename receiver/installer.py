"""The install pipeline: one job's object generation becomes `<model dir>/<model>/<version>`.

download (pinned generation, checksummed) -> unpack into staging -> SavedModel check
-> atomic rename -> prune. Whatever fails, staging is removed and nothing is visible.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from receiver import archive, compression, servable
from receiver.config import Limits, Settings
from receiver.errors import PermanentError, SupersededError
from receiver.journal import Job
from receiver.layout import DIRECTORY, directory_prefix
from receiver.modelconfig import update_model_config
from receiver.objectref import ObjectRef
from receiver.storage import CHUNK_SIZE, ObjectStore, ObjectStream
from receiver.unpacker import Readable

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with bytes downloaded so far
_PARALLEL_DOWNLOADS = 8  # objects of a directory upload fetched at once


@dataclass(frozen=True)
class InstallResult:
    target: Path
    already_installed: bool
    pruned: list[int]
    bytes_downloaded: int = 0
    download_seconds: float = 0.0


class Installer:
    """Runs the pipeline for one job at a time; shared by the worker and the CLI."""

    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store

    def install(
        self,
        job: Job,
        on_progress: Progress = lambda _: None,
        still_ours: Callable[[], None] = lambda: None,
    ) -> InstallResult:
        """Install one job's version. `still_ours` is called just before the version appears
        and raises if the job was taken over meanwhile (then nothing is installed)."""
        model_root = self.settings.model_dir / job.model
        target = model_root / str(job.version)
        if target.exists():
            return self._existing(job, target)
        skip = servable.superseded(model_root, job.version, self.settings.keep_versions)
        if skip:
            raise SupersededError(skip)
        staging = servable.new_staging_dir(model_root, job.version)
        progress = _Progress(on_progress)
        started = time.monotonic()
        try:
            if job.archive_format == DIRECTORY:
                self._fetch_directory(job, staging, progress)
            else:
                with self.store.open(job.ref) as download:
                    self._unpack(job, download, staging, progress)
            download_seconds = time.monotonic() - started
            root = servable.find_saved_model(staging)
            servable.install(
                root, target, _provenance(job), on_progress=progress.tick, before_rename=still_ours
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            servable.remove_if_empty(model_root)  # TF Serving logs errors for an empty model
        pruned = servable.prune(model_root, self.settings.keep_versions)
        log.info(
            "job %s: installed %s version %s from %s", job.id, job.model, job.version, job.source
        )
        if pruned:
            log.info("job %s: pruned %s versions %s", job.id, job.model, pruned)
        if self.settings.model_config_file is not None:
            update_model_config(self.settings.model_config_file, self.settings.model_dir)
        log.info("models now: %s", servable.installed_models(self.settings.model_dir))
        return InstallResult(target, False, pruned, progress.bytes, download_seconds)

    def _fetch_directory(self, job: Job, staging: Path, progress: _Progress) -> None:
        """A directory upload: every object beside the marker, as listed, in parallel."""
        folder = directory_prefix(job.object_name)
        objects = [
            obj
            for obj in self.store.list_objects(job.bucket, folder)
            if obj.name != job.object_name and not obj.name.endswith("/")
        ]
        if not objects:
            raise PermanentError(f"gs://{job.bucket}/{folder} holds nothing but its done marker")
        unpacker = archive.Unpacker(
            staging, self.settings.limits, compressed_bytes=lambda: unpacker.unpacked_bytes
        )

        def fetch(obj: ObjectRef) -> None:
            # Pinned to the generation listed: a later overwrite cannot mix into this version.
            with self.store.open(obj) as download:
                decoded = _decoded(download, progress, self.settings.limits)
                unpacker.file(obj.name[len(folder) :], decoded)
                download.verify()

        with ThreadPoolExecutor(max_workers=_PARALLEL_DOWNLOADS) as pool:
            futures = [pool.submit(fetch, obj) for obj in objects]
            try:
                for future in as_completed(futures):
                    future.result()
            finally:
                for future in futures:
                    future.cancel()
        unpacker.finish()

    def _unpack(self, job: Job, download: ObjectStream, staging: Path, progress: _Progress) -> None:
        limits = self.settings.limits
        reporting = _decoded(download, progress, limits)
        if job.archive_format == "zip":
            # Zip keeps its index at the end: spool to a hidden file beside staging first.
            spool = staging.with_name(staging.name.replace(".staging-", ".download-", 1))
            try:
                with spool.open("wb") as out:
                    shutil.copyfileobj(reporting, out, CHUNK_SIZE)
                download.verify()
                archive.unpack_zip(spool, staging, limits)
            finally:
                spool.unlink(missing_ok=True)
        else:
            try:
                archive.unpack_tar(reporting, staging, limits, lambda: download.bytes_read)
            except archive.CorruptArchiveError:
                # Bytes damaged on the way look like a corrupt archive: a checksum mismatch
                # (raised by verify) makes that a retry instead of a permanent failure.
                download.verify()
                raise
            download.verify()

    def _existing(self, job: Job, target: Path) -> InstallResult:
        """A version already there: ours (a redelivery, or a resume after a crash) or not."""
        provenance = servable.read_provenance(target)
        ours = (provenance.get("bucket"), provenance.get("object"), provenance.get("generation"))
        if ours == (job.bucket, job.object_name, job.generation):
            return InstallResult(target, already_installed=True, pruned=[])
        source = f"gs://{provenance.get('bucket')}/{provenance.get('object')}#{provenance.get('generation')}"
        raise PermanentError(
            f"{job.model} version {job.version} is already installed"
            f"{' from ' + source if provenance else ''}; versions are immutable, "
            "publish a new version number"
        )


class _Progress:
    """Adds up bytes downloaded (by one stream or several at once) and reports the total."""

    def __init__(self, on_progress: Progress) -> None:
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

    def __init__(self, download: ObjectStream, progress: _Progress) -> None:
        self._download = download
        self._progress = progress

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._download.read(size)
        self._progress.add(len(chunk))
        return chunk


def _decoded(download: ObjectStream, progress: _Progress, limits: Limits) -> Readable:
    """The download's bytes, counted as they arrive, its stored gzip layer (if any) removed."""
    reporting = _ReportingStream(download, progress)
    return compression.content_decoded(
        reporting, download.content_encoding, limits, lambda: download.bytes_read
    )


def _provenance(job: Job) -> dict[str, object]:
    return {
        "bucket": job.bucket,
        "object": job.object_name,
        "generation": job.generation,
        "job": job.id,
    }
