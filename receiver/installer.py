"""The install pipeline: one job's object generation becomes `<model dir>/<model>/<version>`.

room for it (TF Serving's memory, the volume) -> download (pinned generation,
checksummed) -> unpack into staging -> the checks TF Serving's loader makes
(`savedmodel`) -> atomic rename -> `rollout` (models.config, TF Serving's verdict, prune or
withdraw). Whatever fails before the rename, staging is removed and nothing is visible.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from receiver import archive, capacity, compression, modeldir, savedmodel, servable
from receiver.config import Limits, Settings
from receiver.errors import PermanentError, SupersededError
from receiver.journal import Job, Journal
from receiver.layout import DIRECTORY, directory_prefix
from receiver.objectref import ObjectRef
from receiver.rollout import Rollout
from receiver.storage import CHUNK_SIZE, ObjectStore, ObjectStream
from receiver.unpacker import Readable
from receiver.versions import LoadState, Versions

log = logging.getLogger(__name__)

OnBytes = Callable[[int], None]  # called with the bytes downloaded so far
_PARALLEL_DOWNLOADS = 8  # objects of a directory upload fetched at once


@dataclass(frozen=True)
class InstallResult:
    target: Path
    already_installed: bool
    pruned: list[int]
    bytes_downloaded: int = 0
    download_seconds: float = 0.0
    load_state: LoadState = LoadState.UNCONFIRMED
    note: str | None = None  # why the job ended without a confirmed load


class Installer:
    """Runs the pipeline for one job at a time; shared by the worker and the CLI."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        versions: Versions | None = None,
        journal: Journal | None = None,
    ):
        self.settings = settings
        self.store = store
        self.versions = versions
        self.rollout = Rollout(settings, versions, journal)

    def install(
        self,
        job: Job,
        on_progress: OnBytes = lambda _: None,
        still_ours: Callable[[], None] = lambda: None,
    ) -> InstallResult:
        """Install one job's version. `still_ours` is called just before the version appears
        and raises if the job was taken over meanwhile (then nothing is installed)."""
        target = self.settings.model_dir / job.model / str(job.version)
        # The version under any name TF Serving reads as it (`00000123` is 123): never a twin.
        target = next(
            (path for v, path in modeldir.version_dirs(target.parent) if v == job.version), target
        )
        progress = _ByteCounter(on_progress)
        started = time.monotonic()
        placed = not target.exists()
        if placed:
            self._place(job, target, progress, still_ours)
            log.info(
                "job %s: installed %s version %s from %s",
                job.id,
                job.model,
                job.version,
                job.source,
            )
        else:
            self._check_ours(job, target)  # a redelivery, or a resume after a crash
        download_seconds = time.monotonic() - started
        # The rest runs again on a resume: a crash after the rename must not leave the
        # models.config, the load verdict or the prune undone.
        rollout = self.rollout.finish(job.model, job.version, progress.tick)
        log.info("models now: %s", modeldir.installed_models(self.settings.model_dir))
        return InstallResult(
            target,
            not placed,
            rollout.pruned,
            progress.bytes,
            download_seconds,
            rollout.load_state,
            rollout.note,
        )

    def _place(
        self, job: Job, target: Path, progress: _ByteCounter, still_ours: Callable[[], None]
    ) -> None:
        """Download, unpack and check into staging, then rename staging to `target`."""
        model_root = target.parent
        for debris in servable.remove_job_debris(model_root, job.id):
            log.warning("job %s: removed what an interrupted attempt left: %s", job.id, debris)
        skip = modeldir.superseded(model_root, job.version, self.settings.keep_versions)
        if skip:
            raise SupersededError(skip)
        self._check_room(job.model, job.size or 0, zip_spool=job.archive_format == "zip")
        staging = servable.new_staging_dir(model_root, job.version, job.id)
        try:
            if job.archive_format == DIRECTORY:
                self._fetch_directory(job, staging, progress)
            else:
                with self.store.open(job.ref) as download:
                    self._unpack(job, download, staging, progress)
            root = servable.find_saved_model(staging)
            report = savedmodel.check(
                root, self.settings.saved_model_tags, self.settings.max_graph_bytes
            )
            size = capacity.tree_bytes(root)
            capacity.check_swap(
                self.settings.model_dir, job.model, size, self.settings.serving_memory_limit
            )
            servable.install(
                root, target, _provenance(job), on_progress=progress.tick, before_rename=still_ours
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            servable.remove_if_empty(model_root)  # TF Serving logs errors for an empty model
        if self.versions is not None:
            self.versions.installed(
                job.model,
                job.version,
                job_id=job.id,
                source=f"{job.source}",
                size=size,
                state=self.rollout.first_state(),
                notes="; ".join(report.notes) or None,
            )

    def _unpack_limits(self) -> Limits:
        """RECEIVER_MAX_UNPACKED_BYTES, or what is left under RECEIVER_VOLUME_SIZE_LIMIT if
        less: the kubelet evicts a pod whose emptyDir passes its limit, and an archive's
        size before the download says little about what it unpacks to."""
        limits = self.settings.limits
        room = capacity.volume_room(self.settings.model_dir, self.settings.volume_size_limit)
        if room is None or room >= limits.max_unpacked_bytes:
            return limits
        setting = "what is left under RECEIVER_VOLUME_SIZE_LIMIT"
        return dataclasses.replace(limits, max_unpacked_bytes=room, unpacked_setting=setting)

    def _check_room(self, model: str, size: int, zip_spool: bool) -> None:
        """Before a download: the swap must fit TF Serving's memory, the files the volume."""
        capacity.check_swap(
            self.settings.model_dir, model, size, self.settings.serving_memory_limit
        )
        capacity.check_disk(
            self.settings.model_dir,
            size * (2 if zip_spool else 1),
            self.settings.volume_size_limit,
        )

    def _fetch_directory(self, job: Job, staging: Path, progress: _ByteCounter) -> None:
        """A directory upload: every object beside the marker, as listed, in parallel."""
        folder = directory_prefix(job.object_name)
        objects = [
            obj
            for obj in self.store.list_objects(job.bucket, folder)
            if obj.name != job.object_name and not obj.name.endswith("/")
        ]
        if not objects:
            raise PermanentError(f"gs://{job.bucket}/{folder} holds nothing but its done marker")
        self._check_room(job.model, sum(obj.size or 0 for obj in objects), zip_spool=False)
        limits = self._unpack_limits()
        unpacker = archive.Unpacker(
            staging, limits, compressed_bytes=lambda: unpacker.unpacked_bytes
        )

        def fetch(obj: ObjectRef) -> None:
            # Pinned to the generation listed: a later overwrite cannot mix into this version.
            with self.store.open(obj) as download:
                decoded = _decoded(download, progress, limits)
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

    def _unpack(
        self, job: Job, download: ObjectStream, staging: Path, progress: _ByteCounter
    ) -> None:
        limits = self._unpack_limits()
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

    def _check_ours(self, job: Job, target: Path) -> None:
        """A version already there must be this job's own install; versions are immutable."""
        provenance = modeldir.read_provenance(target)
        ours = (provenance.get("bucket"), provenance.get("object"), provenance.get("generation"))
        if ours == (job.bucket, job.object_name, job.generation):
            if self.versions is not None and self.versions.get(job.model, job.version) is None:
                self.versions.installed(
                    job.model,
                    job.version,
                    job_id=job.id,
                    source=job.source,
                    size=capacity.tree_bytes(target),
                    state=self.rollout.first_state(),
                )
            return
        source = f"gs://{provenance.get('bucket')}/{provenance.get('object')}#{provenance.get('generation')}"
        raise PermanentError(
            f"{job.model} version {job.version} is already installed"
            f"{' from ' + source if provenance else ''}; versions are immutable, "
            "publish a new version number"
        )


class _ByteCounter:
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

    def __init__(self, download: ObjectStream, progress: _ByteCounter) -> None:
        self._download = download
        self._progress = progress

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._download.read(size)
        self._progress.add(len(chunk))
        return chunk


def _decoded(download: ObjectStream, progress: _ByteCounter, limits: Limits) -> Readable:
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
