"""Reconcile the model dir with the bucket, and say when the receiver is ready.

Sync lists the source prefix and queues the newest version of every model that has no
installed version as new: a fresh pod serves without waiting for the next upload, and
a missed push heals itself. A model with no version at all falls back: if its newest
version failed for good (not a SavedModel, corrupt), the next newest is queued, and so
on, so one broken upload never leaves a model dark. It runs in the install thread at
start (RECEIVER_SYNC_ON_START), every RECEIVER_SYNC_INTERVAL seconds, and again at once
when a job fails for a model with no version; `python -m receiver sync` runs it to the
end. Startup waits for the first sync's installs (done or failed), so TF Serving, which
the sidecar's startup probe holds back, starts on every model that installs; readiness
also waits for every model in the bucket to have a version, which one broken upload of
a new model can prevent for good, so it is for monitoring and must never gate traffic.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Mapping

from receiver import intake, modeldir
from receiver.config import Settings
from receiver.download import ObjectStore
from receiver.errors import ReceiverError
from receiver.journal import Job, Journal
from receiver.layout import ModelVersion, parse_object_name, reserved_names
from receiver.objectref import ObjectRef
from receiver.vocabulary import JobState

log = logging.getLogger(__name__)

SYNC_ERROR_KEY = "sync_error"  # journal meta: the last sync's failure, until one succeeds
_ATTEMPT_KEY = "sync_attempt"  # journal meta: until when one process's attempt holds the rest
_ATTEMPT_SECONDS = 300.0  # a sync that takes longer (or whose process died) is tried again
STARTED_KEY = "started"  # journal meta: when startup first passed on this volume
LAST_SYNC_KEY = "last_sync"  # journal meta: when the last sync succeeded (Unix time)
FIRST_SYNC_KEY = "first_sync"  # journal meta: job ids queued by this start's first sync
MODELS_KEY = "sync_models"  # journal meta: the models the last sync found in the bucket
NOTES_KEY = "sync_notes"  # journal meta: model -> why it is not on its newest version
_MAX_FAILURE_BACKOFF_SECONDS = 60.0
# A fleet's periodic syncs spread over ±10% of the interval. So a replica that missed a
# push and every relay of it has the version within 1.1 x RECEIVER_SYNC_INTERVAL of the
# upload, plus the install (docs/deploying.md, "Topologies").
SYNC_JITTER = 0.1


def versions_by_model(
    objects: list[ObjectRef],
    prefix: str,
    done_marker: str = "_SUCCESS",
    reserved: Mapping[str, str] | None = None,
) -> dict[str, list[tuple[ObjectRef, ModelVersion]]]:
    """For each model in the listing, its versions newest first (latest generation first).

    Archives and completed directory uploads (their done markers) are both candidates.
    """
    found: dict[str, list[tuple[ObjectRef, ModelVersion]]] = {}
    for obj in objects:
        target = parse_object_name(obj.name, prefix, done_marker, reserved)
        if isinstance(target, ModelVersion):
            found.setdefault(target.model, []).append((obj, target))
    for versions in found.values():
        versions.sort(key=lambda pair: (pair[1].version, pair[0].generation), reverse=True)
    return found


def sync(settings: Settings, store: ObjectStore, journal: Journal) -> list[Job]:
    """Queue what the bucket has that the model dir lacks; returns the jobs to wait for."""
    listing = store.list_objects(settings.bucket, settings.prefix)
    models = versions_by_model(
        listing, settings.prefix, settings.done_marker, reserved_names(settings)
    )
    jobs, notes = [], {}
    for model, versions in sorted(models.items()):
        job, note = _sync_model(model, versions, settings, journal)
        if job is not None:
            jobs.append(job)
        if note:
            notes[model] = note
    journal.set_meta(MODELS_KEY, json.dumps(sorted(models)))
    journal.set_meta(NOTES_KEY, json.dumps(notes))
    return jobs


def _sync_model(
    model: str,
    versions: list[tuple[ObjectRef, ModelVersion]],
    settings: Settings,
    journal: Journal,
) -> tuple[Job | None, str]:
    """Queue the version one model should get, if any; and why it is not the newest."""
    installed = modeldir.installed_versions(settings.model_dir / model)
    failed: list[str] = []
    for obj, target in versions:
        if installed and target.version <= installed[-1]:
            break
        earlier = journal.find(obj)
        if earlier is not None and earlier.state is JobState.FAILED:
            failed.append(f"version {target.version} failed: {earlier.reason}")
            if installed:
                return None, f"{'; '.join(failed)}; serving version {installed[-1]}"
            continue  # a model with nothing falls back to its next newest version
        outcome = intake.queue(obj, target, settings, journal)
        log.info(
            "sync: %s version %s: %s (%s)", model, target.version, outcome.outcome, outcome.reason
        )
        if failed:
            log.warning(
                "sync: %s: %s; falling back to version %s", model, "; ".join(failed), target.version
            )
            return outcome.job, f"{'; '.join(failed)}; falling back to version {target.version}"
        return outcome.job, ""
    if failed:
        log.error("sync: %s has no version that installs: %s", model, "; ".join(failed))
        return None, f"no version installs: {'; '.join(failed)}"
    return None, ""


class Syncer:
    """Runs `sync` when due: at start if asked (once per start, by whichever worker process
    is first), then every interval; backs off on failure."""

    def __init__(self, settings: Settings, store: ObjectStore, journal: Journal) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        self._next_at = time.monotonic() + (0.0 if settings.sync_on_start else self.interval())
        self._at_start = settings.sync_on_start
        self._failures = 0

    def interval(self) -> float:
        """Seconds to the next periodic sync: RECEIVER_SYNC_INTERVAL give or take
        SYNC_JITTER of it, so replicas started together do not list the bucket together."""
        if not self.settings.sync_interval:
            return math.inf
        return self.settings.sync_interval * random.uniform(1 - SYNC_JITTER, 1 + SYNC_JITTER)

    def seconds_to_next(self) -> float:
        return max(self._next_at - time.monotonic(), 0.0)

    def model_failed(self, model: str) -> None:
        """A job failed for good: if the model has no version, sync again now to fall back
        (unless sync is switched off altogether)."""
        syncing = self.settings.sync_on_start or self.settings.sync_interval
        if syncing and not modeldir.installed_versions(self.settings.model_dir / model):
            self._next_at = time.monotonic()

    def run_if_due(self) -> bool:
        """Sync if it is time; True if a sync ran and succeeded."""
        now = time.monotonic()
        if now < self._next_at:
            return False
        if self._at_start and self.journal.get_meta(FIRST_SYNC_KEY) is not None:
            # Another worker process already ran this start's sync: a second one would
            # only race pushes that arrive meanwhile for the same new versions.
            self._at_start = False
            self._next_at = now + self.interval()
            return False
        if not _claim_attempt(self.journal, _ATTEMPT_SECONDS):
            # Another worker process is syncing, or failed just now and waits: so does
            # this one, rather than listing the bucket (and logging its failure) twice.
            self._next_at = now + 1.0
            return False
        try:
            jobs = sync(self.settings, self.store, self.journal)
        except ReceiverError as exc:
            self._failures += 1
            delay = min(2.0**self._failures, _MAX_FAILURE_BACKOFF_SECONDS)
            log.warning("sync failed, trying again in %.0fs: %s", delay, exc.reason)
            self.journal.set_meta(
                SYNC_ERROR_KEY, json.dumps({"at": time.time(), "error": exc.reason})
            )
            self.journal.set_meta(_ATTEMPT_KEY, str(time.time() + delay))
            self._next_at = now + delay
            return False
        self._failures = 0
        self.journal.set_meta(SYNC_ERROR_KEY, None)
        self.journal.set_meta(_ATTEMPT_KEY, None)
        self._at_start = False
        self.journal.set_meta(FIRST_SYNC_KEY, json.dumps([j.id for j in jobs]), only_if_unset=True)
        self.journal.set_meta(LAST_SYNC_KEY, str(time.time()))
        self._next_at = now + self.interval()
        return True


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


def _claim_attempt(journal: Journal, seconds: float) -> bool:
    """Hold the other processes off syncing for `seconds`; False if another holds them."""
    with journal.transaction() as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (_ATTEMPT_KEY,)).fetchone()
        if row is not None and float(row[0]) > time.time():
            return False
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (_ATTEMPT_KEY, str(time.time() + seconds)),
        )
    return True
