"""Reconcile the model dir with the bucket (what it leaves in the journal, and what the
receiver's startup and readiness make of it, are receiver.readiness).

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
from receiver.readiness import (
    FIRST_SYNC_KEY,
    LAST_SYNC_KEY,
    MODELS_KEY,
    NOTES_KEY,
    SYNC_ERROR_KEY,
)
from receiver.vocabulary import JobState

log = logging.getLogger(__name__)

_ATTEMPT_KEY = "sync_attempt"  # journal meta: until when one process's attempt holds the rest
_ATTEMPT_SECONDS = 300.0  # a sync that takes longer (or whose process died) is tried again
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
