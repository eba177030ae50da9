"""What a person or a program sees of the receiver: one document for /status, the page,
`receiver status` and metrics to read from.

`versions_view` joins what is on disk with what the journal knows of each version (its
source and TF Serving's verdict), so a version TF Serving failed to load, and that was
withdrawn, stays visible with TF Serving's own message.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path

from receiver import capacity, modelconfig, modeldir
from receiver.config import Settings
from receiver.journal import Job, Journal
from receiver.quarantine import Quarantine
from receiver.readiness import last_success, readiness, sync_error, sync_notes
from receiver.versions import VersionRecord, Versions
from receiver.vocabulary import JobState, LoadState

AUTH_OFF_WARNING = (
    "authentication is OFF (RECEIVER_AUTH=none): anyone who can reach this endpoint "
    "can make it download and install objects from the source bucket"
)
NOT_CONFIRMED = "loads are not confirmed: RECEIVER_TFSERVING_URL is not set"


@dataclass(frozen=True)
class DownloadProgress:
    """A running job's download: bytes done, of how many, and how fast."""

    bytes_done: int
    size: int | None
    rate: float  # bytes per second since the attempt started

    @property
    def percent(self) -> float | None:
        return 100.0 * self.bytes_done / self.size if self.size else None

    @property
    def eta_seconds(self) -> float | None:
        if not self.size or self.rate <= 0:
            return None
        return max(self.size - self.bytes_done, 0) / self.rate

    def to_dict(self) -> dict[str, object]:
        return {
            "bytes_done": self.bytes_done,
            "size": self.size,
            "percent": None if self.percent is None else round(self.percent, 1),
            "bytes_per_second": round(self.rate),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
        }

    def describe(self, estimate: bool = True) -> str:
        """'12.0 MiB of 96.0 MiB (12%), 5.1 MiB/s, about 17 s left'"""
        done = _mib(self.bytes_done)
        text = f"{done} of {_mib(self.size)} ({self.percent:.0f}%)" if self.size else done
        text += f", {_mib(self.rate)}/s"
        if estimate and self.eta_seconds is not None:
            text += f", about {self.eta_seconds:.0f} s left"
        return text


def download_progress(job: Job, now: float | None = None) -> DownloadProgress | None:
    """Download figures of a running job: done, rate and time left."""
    if job.state is not JobState.RUNNING or job.started_at is None:
        return None
    elapsed = max((now or time.time()) - job.started_at, 1e-3)
    return DownloadProgress(job.bytes_done, job.size, job.bytes_done / elapsed)


def job_dict(job: Job) -> dict[str, object]:
    progress = download_progress(job)
    return {
        "job": job.id,
        "model": job.model,
        "version": job.version,
        "object": f"gs://{job.bucket}/{job.object_name}",
        "generation": job.generation,
        "state": job.state.value,
        "reason": job.reason,
        "attempts": job.attempts,
        "bytes_done": job.bytes_done,
        "size": job.size,
        "progress": progress.to_dict() if progress else None,
        "updated_at": job.updated_at,
    }


def job_line(job: Job) -> str:
    """One job as a sentence: 'job 3 installed: m version 4 from gs://…#…'."""
    line = f"job {job.id} {job.state.value}: {job.model} version {job.version} from {job.source}"
    return f"{line} ({job.reason})" if job.reason else line


def text_report(settings: Settings, journal: Journal, jobs: int) -> str:
    """What `receiver status` prints: versions with TF Serving's state, then recent jobs."""
    rows: list[list[str]] = []
    versions = versions_view(settings.model_dir, journal)
    for model, views in versions.items():
        rows += [
            [model, str(view.version), view.load_state.value + " (withdrawn)" * (not view.on_disk),
             view.error or view.notes or ""]
            for view in views
        ] or [[model, "(none)", "", ""]]  # fmt: skip
    text = _table(
        ["MODEL", "VERSION", "TF SERVING", "DETAIL"], rows or [["(no models)", "", "", ""]]
    )
    if not settings.tfserving_url:
        text += NOT_CONFIRMED + "\n"
    failure = sync_error(journal)
    if failure is not None:
        text += f"last sync failed at {iso_time(float(str(failure['at'])))}: {failure['error']}\n"
    job_rows = [
        [str(job.id), job.state.value, job.model, str(job.version), str(job.attempts),
         iso_time(job.updated_at),
         _detail(job, versions)]
        for job in journal.recent(jobs)
    ]  # fmt: skip
    return (
        text
        + "\n"
        + _table(
            ["JOB", "STATE", "MODEL", "VERSION", "TRIES", "UPDATED", "DETAIL"],
            job_rows or [["", "(no jobs)", "", "", "", "", ""]],
        )
    )


def _detail(job: Job, versions: dict[str, list[VersionView]]) -> str:
    in_place = any(
        view.version == job.version and view.on_disk and view.load_state is LoadState.LOADING
        for view in versions.get(job.model, [])
    )
    if job.state is JobState.RUNNING and in_place:
        return "in place; waiting for TF Serving to load it"
    progress = download_progress(job)
    return progress.describe() if progress else (job.reason or "")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in [header, *rows]
    )


def iso_time(seconds: float) -> str:
    """A time as people read it: ISO 8601, UTC (JSON carries Unix times)."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _mib(amount: float | None) -> str:
    """MiB, or KiB below one (a small model's download read '0.0 MiB of 0.0 MiB')."""
    amount = amount or 0
    return f"{amount / 2**20:.1f} MiB" if amount >= 2**20 else f"{amount / 2**10:.1f} KiB"


@dataclass(frozen=True)
class VersionView:
    """One version of one model as /status shows it."""

    model: str
    version: int
    on_disk: bool
    load_state: LoadState
    error: str | None
    notes: str | None
    source: str | None

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "on_disk": self.on_disk,
            "load_state": self.load_state.value,
            "error": self.error,
            "notes": self.notes,
            "source": self.source,
        }


def versions_view(model_dir: Path, journal: Journal) -> dict[str, list[VersionView]]:
    """Every model's versions, on disk or withdrawn, newest first."""
    records: dict[tuple[str, int], VersionRecord] = {
        (record.model, record.version): record for record in Versions(journal).all()
    }
    on_disk = modeldir.installed_models(model_dir)
    views: dict[str, list[VersionView]] = {model: [] for model in on_disk}
    for model, versions in on_disk.items():
        for version in versions:
            views[model].append(_view(model, version, True, records.pop((model, version), None)))
    for (model, version), record in records.items():
        if record.load_state is LoadState.FAILED:  # withdrawn: kept for its reason
            views.setdefault(model, []).append(_view(model, version, False, record))
    for versions_of_model in views.values():
        versions_of_model.sort(key=lambda view: view.version, reverse=True)
    return dict(sorted(views.items()))


def _view(model: str, version: int, on_disk: bool, record: VersionRecord | None) -> VersionView:
    if record is None:
        return VersionView(model, version, on_disk, LoadState.UNRECORDED, None, None, None)
    return VersionView(
        model,
        version,
        on_disk,
        record.load_state,
        record.error,
        record.notes,
        record.source,
    )


def document(settings: Settings, journal: Journal, quarantine: Quarantine) -> dict[str, object]:
    """What /status shows: models and their versions, recent jobs, quarantine, modes."""
    body: dict[str, object] = {
        "auth": settings.auth,
        "source": settings.source,
        "ack": settings.ack,
        "last_sync": last_success(journal),
        # Until a sync succeeds: when the last one failed and why (a missing bucket, no
        # permission to list it).
        "last_sync_error": sync_error(journal),
        "sync_notes": sync_notes(journal),
        "model_dir": str(settings.model_dir),
        "models": modeldir.installed_models(settings.model_dir),
        "versions": {
            model: [view.to_dict() for view in views]
            for model, views in versions_view(settings.model_dir, journal).items()
        },
        "serving": {
            "tfserving_url": settings.tfserving_url or None,
            "confirmed": bool(settings.tfserving_url),
            "note": None if settings.tfserving_url else NOT_CONFIRMED,
            "memory_limit": settings.serving_memory_limit,
            # TF Serving's own estimate: 1.2 x the served version's bytes on disk
            "memory_estimate": capacity.memory_estimate(settings.model_dir),
        },
        "jobs": journal.counts(),
        "recent_jobs": [job_dict(job) for job in journal.recent()],
        "quarantine": {"count": quarantine.count(), "recent": quarantine.entries()},
    }
    if settings.model_config_file is not None:
        body["model_config"] = modelconfig.describe(settings.model_config_file)
    if not settings.auth_enabled:
        body["warning"] = AUTH_OFF_WARNING
    return body


def page(settings: Settings, journal: Journal, quarantine: Quarantine) -> dict[str, object]:
    """What the status page (templates/status.html) shows: the document, for people."""
    ready, ready_reason = readiness(settings, journal)
    body = document(settings, journal, quarantine)
    last_sync = body["last_sync"]
    recent = journal.recent(50)
    return {
        "settings": settings,
        "versions": versions_view(settings.model_dir, journal),
        "serving": body["serving"],
        "jobs": recent[:20],
        "running": [
            (job, download_progress(job)) for job in recent if job.state is JobState.RUNNING
        ],
        "quarantine": body["quarantine"],
        "model_config": body.get("model_config"),
        "warning": body.get("warning"),
        "ready": ready,
        "ready_reason": ready_reason,
        "last_sync": iso_time(last_sync) if isinstance(last_sync, float) else None,
        "sync_error": body["last_sync_error"],
        "iso_time": iso_time,
    }
