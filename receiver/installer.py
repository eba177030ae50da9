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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from receiver import capacity, fetch, modeldir, savedmodel, servable
from receiver.config import Limits, Settings
from receiver.download import ObjectStore
from receiver.errors import PermanentError, SupersededError
from receiver.fetch import OnBytes
from receiver.journal import Journal
from receiver.layout import DIRECTORY, ModelVersion
from receiver.objectref import ObjectRef
from receiver.rollout import Rollout
from receiver.versions import Versions
from receiver.vocabulary import LoadState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstallResult:
    target: Path
    already_installed: bool
    pruned: list[int]
    bytes_downloaded: int = 0
    download_seconds: float = 0.0
    load_state: LoadState = LoadState.UNCONFIRMED
    note: str | None = None  # why the job ended without a confirmed load


@dataclass(frozen=True)
class _Order:
    """What one install is for: an object generation, the version it becomes, the order."""

    ref: ObjectRef
    release: ModelVersion
    job_id: int

    @property
    def model(self) -> str:
        return self.release.model

    @property
    def version(self) -> int:
        return self.release.version


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
        ref: ObjectRef,
        release: ModelVersion,
        job_id: int,
        on_progress: OnBytes = lambda _: None,
        still_ours: Callable[[], None] = lambda: None,
    ) -> InstallResult:
        """Install object generation `ref` as `release`, for job `job_id` (whose id names
        its staging and debris). `still_ours` is called just before the version appears
        and raises if the job was taken over meanwhile (then nothing is installed)."""
        order = _Order(ref, release, job_id)
        target = self.settings.model_dir / order.model / str(order.version)
        # The version under any name TF Serving reads as it (`00000123` is 123): never a twin.
        target = next(
            (path for v, path in modeldir.version_dirs(target.parent) if v == order.version), target
        )
        progress = fetch.ByteCounter(on_progress)
        started = time.monotonic()
        placed = not target.exists()
        if placed:
            self._place(order, target, progress, still_ours)
            log.info(
                "job %s: installed %s version %s from %s",
                order.job_id,
                order.model,
                order.version,
                order.ref.url,
            )
        else:
            self._check_ours(order, target)  # a redelivery, or a resume after a crash
        download_seconds = time.monotonic() - started
        # The rest runs again on a resume: a crash after the rename must not leave the
        # models.config, the load verdict or the prune undone.
        rollout = self.rollout.finish(order.model, order.version, progress.tick)
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
        self,
        order: _Order,
        target: Path,
        progress: fetch.ByteCounter,
        still_ours: Callable[[], None],
    ) -> None:
        """Download, unpack and check into staging, then rename staging to `target`."""
        model_root = target.parent
        for debris in servable.remove_job_debris(model_root, order.job_id):
            log.warning(
                "job %s: removed what an interrupted attempt left: %s", order.job_id, debris
            )
        skip = modeldir.superseded(model_root, order.version, self.settings.keep_versions)
        if skip:
            raise SupersededError(skip)
        modeldir.empty_all_trash(self.settings.model_dir)
        self._check_room(
            order.model, order.ref.size or 0, zip_spool=order.release.archive_format == "zip"
        )
        staging = servable.new_staging_dir(model_root, order.version, order.job_id)
        try:
            limits = self._unpack_limits()
            if order.release.archive_format == DIRECTORY:
                objects = fetch.directory_objects(self.store, order.ref)
                self._check_room(order.model, sum(obj.size or 0 for obj in objects), False)
                fetch.fetch_directory(self.store, order.ref, objects, staging, limits, progress)
            else:
                fetch.fetch_archive(
                    self.store, order.ref, order.release.archive_format, staging, limits, progress
                )
            root = servable.find_saved_model(staging)
            report = savedmodel.check(
                root, self.settings.saved_model_tags, self.settings.max_graph_bytes
            )
            size = capacity.tree_bytes(root)
            capacity.check_swap(
                self.settings.model_dir, order.model, size, self.settings.serving_memory_limit
            )
            servable.install(
                root,
                target,
                _provenance(order),
                on_progress=progress.tick,
                before_rename=still_ours,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            servable.remove_if_empty(model_root)  # TF Serving logs errors for an empty model
        if self.versions is not None:
            self.versions.installed(
                order.model,
                order.version,
                job_id=order.job_id,
                source=order.ref.url,
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

    def _check_ours(self, order: _Order, target: Path) -> None:
        """A version already there must be this job's own install; versions are immutable."""
        provenance = modeldir.read_provenance(target)
        ours = (provenance.get("bucket"), provenance.get("object"), provenance.get("generation"))
        if ours == (order.ref.bucket, order.ref.name, order.ref.generation):
            if self.versions is not None and self.versions.get(order.model, order.version) is None:
                self.versions.installed(
                    order.model,
                    order.version,
                    job_id=order.job_id,
                    source=order.ref.url,
                    size=capacity.tree_bytes(target),
                    state=self.rollout.first_state(),
                )
            return
        source = f"gs://{provenance.get('bucket')}/{provenance.get('object')}#{provenance.get('generation')}"
        raise PermanentError(
            f"{order.model} version {order.version} is already installed"
            f"{' from ' + source if provenance else ''}; versions are immutable, "
            "publish a new version number"
        )


def _provenance(order: _Order) -> dict[str, object]:
    return {
        "bucket": order.ref.bucket,
        "object": order.ref.name,
        "generation": order.ref.generation,
        "job": order.job_id,
    }
