"""Reconcile the model dir with the bucket, and say when the receiver is ready.

Sync lists the source prefix and queues the newest version of every model that has no
installed version as new: a fresh pod serves without waiting for the next upload, and
a missed push heals itself. It runs in the install thread at start
(RECEIVER_SYNC_ON_START) and every RECEIVER_SYNC_INTERVAL seconds; `python -m receiver
sync` runs it once. Readiness waits for the first sync's installs, so a Kubernetes
probe keeps TF Serving (which exits if a configured model has no version) out of traffic.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

from receiver import intake, servable
from receiver.config import Settings
from receiver.errors import ReceiverError
from receiver.events import ObjectEvent
from receiver.journal import Job, Journal
from receiver.layout import ModelVersion, parse_object_name
from receiver.storage import ObjectStore

log = logging.getLogger(__name__)

FIRST_SYNC_KEY = "first_sync"  # journal meta: job ids queued by this start's first sync
_MAX_FAILURE_BACKOFF_SECONDS = 60.0


def newest_versions(
    events: list[ObjectEvent], prefix: str, done_marker: str = "_SUCCESS"
) -> dict[str, tuple[ObjectEvent, ModelVersion]]:
    """For each model in the listing, its highest version (latest generation on a tie).

    Archives and completed directory uploads (their done markers) are both candidates.
    """
    newest: dict[str, tuple[ObjectEvent, ModelVersion]] = {}
    for event in events:
        target = parse_object_name(event.name, prefix, done_marker)
        if not isinstance(target, ModelVersion):
            continue
        best = newest.get(target.model)
        if best is None or (target.version, event.generation) > (
            best[1].version,
            best[0].generation,
        ):
            newest[target.model] = (event, target)
    return newest


def sync(settings: Settings, store: ObjectStore, journal: Journal) -> list[Job]:
    """Queue what the bucket has that the model dir lacks; returns the jobs to wait for."""
    listing = store.list_objects(settings.bucket, settings.prefix)
    jobs = []
    for model, (event, target) in sorted(
        newest_versions(listing, settings.prefix, settings.done_marker).items()
    ):
        installed = servable.installed_versions(settings.model_dir / model)
        if installed and installed[-1] >= target.version:
            continue
        outcome = intake.accept(event, settings, journal)
        log.info(
            "sync: %s version %s: %s (%s)", model, target.version, outcome.outcome, outcome.reason
        )
        if outcome.job is not None:
            jobs.append(outcome.job)
    return jobs


class Syncer:
    """Runs `sync` when due: at start if asked, then every interval; backs off on failure."""

    def __init__(self, settings: Settings, store: ObjectStore, journal: Journal) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        interval = settings.sync_interval or math.inf
        self._next_at = time.monotonic() + (0.0 if settings.sync_on_start else interval)
        self._failures = 0

    def run_if_due(self) -> bool:
        """Sync if it is time; True if a sync ran and succeeded."""
        now = time.monotonic()
        if now < self._next_at:
            return False
        try:
            jobs = sync(self.settings, self.store, self.journal)
        except ReceiverError as exc:
            self._failures += 1
            delay = min(2.0**self._failures, _MAX_FAILURE_BACKOFF_SECONDS)
            log.warning("sync failed, trying again in %.0fs: %s", delay, exc.reason)
            self._next_at = now + delay
            return False
        self._failures = 0
        self.journal.set_meta(FIRST_SYNC_KEY, json.dumps([j.id for j in jobs]), only_if_unset=True)
        self.journal.set_meta("last_sync", str(time.time()))
        self._next_at = now + (self.settings.sync_interval or math.inf)
        return True


def readiness(settings: Settings, journal: Journal) -> tuple[bool, str]:
    """Ready once the model dir is writable and the first sync's installs have ended."""
    if not settings.model_dir.is_dir():
        return False, f"model dir {settings.model_dir} does not exist"
    if not os.access(settings.model_dir, os.W_OK):
        return False, f"model dir {settings.model_dir} is not writable"
    if not settings.sync_on_start:
        return True, "ready (no sync at start)"
    record = journal.get_meta(FIRST_SYNC_KEY)
    if record is None:
        return False, "the first sync of the bucket has not finished"
    jobs = [journal.get(job_id) for job_id in json.loads(record)]
    pending = [job for job in jobs if job is not None and not job.state.final]
    if pending:
        names = ", ".join(f"{job.model} version {job.version}" for job in pending)
        return False, f"installing what the first sync found: {names}"
    return True, "ready"
