"""What a person or a program sees of the receiver: one document for /status, the page,
`receiver status` and metrics to read from.

`versions_view` joins what is on disk with what the journal knows of each version (its
source and TF Serving's verdict), so a version TF Serving failed to load, and that was
withdrawn, stays visible with TF Serving's own message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from receiver import capacity, modelconfig, servable
from receiver.config import Settings
from receiver.journal import Journal
from receiver.quarantine import Quarantine
from receiver.sync import NOTES_KEY
from receiver.versions import LoadState, VersionRecord, Versions

AUTH_OFF_WARNING = (
    "authentication is OFF (RECEIVER_AUTH=none): anyone who can reach this endpoint "
    "can make it download and install objects from the source bucket"
)
NOT_CONFIRMED = "loads are not confirmed: RECEIVER_TFSERVING_URL is not set"


@dataclass(frozen=True)
class VersionView:
    """One version of one model as /status shows it."""

    model: str
    version: int
    on_disk: bool
    load_state: str  # a LoadState, or "unrecorded" for a version placed by hand
    error: str | None
    notes: str | None
    source: str | None

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "on_disk": self.on_disk,
            "load_state": self.load_state,
            "error": self.error,
            "notes": self.notes,
            "source": self.source,
        }


def versions_view(settings: Settings, journal: Journal) -> dict[str, list[VersionView]]:
    """Every model's versions, on disk or withdrawn, newest first."""
    records: dict[tuple[str, int], VersionRecord] = {
        (record.model, record.version): record for record in Versions(journal).all()
    }
    on_disk = servable.installed_models(settings.model_dir)
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
        return VersionView(model, version, on_disk, "unrecorded", None, None, None)
    return VersionView(
        model,
        version,
        on_disk,
        record.load_state.value,
        record.error,
        record.notes,
        record.source,
    )


def document(settings: Settings, journal: Journal, quarantine: Quarantine) -> dict[str, object]:
    """What /status shows: models and their versions, recent jobs, quarantine, modes."""
    body: dict[str, object] = {
        "auth": "google" if settings.auth_enabled else "none",
        "source": settings.source,
        "ack": settings.ack,
        "last_sync": journal.get_meta("last_sync"),
        # model -> why it is not on the bucket's newest version (a broken upload fell back)
        "sync_notes": json.loads(journal.get_meta(NOTES_KEY) or "{}"),
        "model_dir": str(settings.model_dir),
        "models": servable.installed_models(settings.model_dir),
        "versions": {
            model: [view.to_dict() for view in views]
            for model, views in versions_view(settings, journal).items()
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
        "recent_jobs": [job.to_dict() for job in journal.recent()],
        "quarantine": {"count": quarantine.count(), "recent": quarantine.entries()},
    }
    if settings.model_config_file is not None:
        body["model_config"] = modelconfig.describe(settings.model_config_file)
    if not settings.auth_enabled:
        body["warning"] = AUTH_OFF_WARNING
    return body
