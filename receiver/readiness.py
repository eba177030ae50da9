"""What the sync leaves in the journal, and whether the receiver has started and is ready.

The sync (receiver.sync) writes these records; /startupz, /readyz, /status, the status
page, `receiver status` and metrics read them here, so none of the readers needs the
sync's storage side. Startup gates TF Serving's start (the sidecar's startup probe);
readiness also waits for every model in the bucket to have a version, which one broken
upload of a new model can prevent for good, so it is for monitoring and never gates
traffic.
"""

from __future__ import annotations

import json
import os
import time

from receiver import modeldir
from receiver.config import Settings
from receiver.journal import Journal

SYNC_ERROR_KEY = "sync_error"  # journal meta: the last sync's failure, until one succeeds
STARTED_KEY = "started"  # journal meta: when startup first passed on this volume
LAST_SYNC_KEY = "last_sync"  # journal meta: when the last sync succeeded (Unix time)
FIRST_SYNC_KEY = "first_sync"  # journal meta: job ids queued by this start's first sync
MODELS_KEY = "sync_models"  # journal meta: the models the last sync found in the bucket
NOTES_KEY = "sync_notes"  # journal meta: model -> why it is not on its newest version


def startup(settings: Settings, journal: Journal) -> tuple[bool, str]:
    """Started once the model dir is writable and the first sync's installs have ended,
    done or failed: what gates TF Serving's start. A model with no version does not hold
    it back (it is not in TF Serving's config until it has one); the reason names it."""
    if not settings.model_dir.is_dir():
        return False, f"model dir {settings.model_dir} does not exist"
    if not os.access(settings.model_dir, os.W_OK):
        return False, f"model dir {settings.model_dir} is not writable"
    if not settings.sync_on_start:
        return True, "started (no sync at start)"
    if journal.get_meta(STARTED_KEY) is not None:
        # An earlier start on this volume passed: the receiver's container restarted in
        # a running pod, and TF Serving beside it serves what is there. Holding this back
        # again would take the pod out of service until the bucket answers.
        return True, "started (an earlier start on this volume had passed)"
    record = journal.get_meta(FIRST_SYNC_KEY)
    if record is None:
        failure = sync_error(journal)
        if failure is not None:
            return False, (
                f"the first sync of the bucket has not finished: it failed "
                f"({failure['error']}); trying again"
            )
        return False, "the first sync of the bucket has not finished"
    jobs = [journal.get(job_id) for job_id in json.loads(record)]
    # A version renamed into place counts, though its job may still wait for TF Serving's
    # verdict: TF Serving itself starts only once this says started (the startup probe).
    pending = [
        job
        for job in jobs
        if job is not None
        and not job.state.final
        and not (settings.model_dir / job.model / str(job.version)).is_dir()
    ]
    if pending:
        names = ", ".join(f"{job.model} version {job.version}" for job in pending)
        return False, f"installing what the first sync found: {names}"
    journal.set_meta(STARTED_KEY, str(time.time()), only_if_unset=True)
    dark = models_without_a_version(settings, journal)
    return True, f"started; {dark}" if dark else "started"


def readiness(settings: Settings, journal: Journal) -> tuple[bool, str]:
    """Ready once started and every model in the bucket has a version TF Serving can
    load: a signal for monitoring, never a probe (see docs/deploying.md, "Probes")."""
    started, reason = startup(settings, journal)
    if not started:
        return False, reason
    if not settings.sync_on_start:
        return True, "ready (no sync at start)"
    dark = models_without_a_version(settings, journal)
    return (False, dark) if dark else (True, "ready")


def models_without_a_version(settings: Settings, journal: Journal) -> str | None:
    """Which models of the bucket (as the last sync saw it) have no version, and why."""
    dark = [
        model
        for model in json.loads(journal.get_meta(MODELS_KEY) or "[]")
        if not modeldir.installed_versions(settings.model_dir / model)
    ]
    if not dark:
        return None
    notes = sync_notes(journal)
    reasons = [f"{model}: {notes.get(model) or _latest(journal, model)}" for model in dark]
    return f"no version installed for {', '.join(dark)} ({'; '.join(reasons)})"


def _latest(journal: Journal, model: str) -> str:
    job = journal.latest_for_model(model)
    if job is None:
        return "nothing queued yet"
    return f"version {job.version} is {job.state.value}" + (f": {job.reason}" if job.reason else "")


def last_success(journal: Journal) -> float | None:
    """When the last sync succeeded (Unix time), if one has."""
    value = journal.get_meta(LAST_SYNC_KEY)
    return None if value is None else float(value)


def sync_notes(journal: Journal) -> dict[str, str]:
    """model -> why it is not on the bucket's newest version (a broken upload fell back)."""
    notes = json.loads(journal.get_meta(NOTES_KEY) or "{}")
    return notes if isinstance(notes, dict) else {}


def sync_error(journal: Journal) -> dict[str, object] | None:
    """The last sync's failure (`at`, `error`, `retry_at`), while no sync has succeeded."""
    value = journal.get_meta(SYNC_ERROR_KEY)
    failure = json.loads(value) if value else None
    return failure if isinstance(failure, dict) else None
