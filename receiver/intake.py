"""Decide what a parsed event means for us: queue a job, or acknowledge with a reason.

Pure policy over an `ObjectEvent` and the journal; the HTTP layer only maps the
returned `Outcome` to a response.
"""

from __future__ import annotations

from dataclasses import dataclass

from receiver.config import Settings
from receiver.events import EventKind, ObjectEvent
from receiver.journal import Job, JobState, Journal
from receiver.layout import Ignored, parse_object_name


@dataclass(frozen=True)
class Outcome:
    """What happened to a delivery: `status` for Pub/Sub, the rest for people."""

    status: int
    outcome: str
    reason: str
    job: Job | None = None

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"outcome": self.outcome, "reason": self.reason}
        if self.job is not None:
            body.update(job=self.job.id, model=self.job.model, version=self.job.version)
        return body


def accept(event: ObjectEvent, settings: Settings, journal: Journal) -> Outcome:
    """Record a job for a new model version, or say why the event needs none."""
    if event.bucket != settings.bucket:
        return _ignored(f"bucket {event.bucket!r} is not the source bucket {settings.bucket!r}")
    if event.kind is not EventKind.FINALIZE:
        return _ignored(f"event type {event.event_type} is not an upload; nothing to install")
    target = parse_object_name(event.name, settings.prefix)
    if isinstance(target, Ignored):
        return _ignored(target.reason)
    job, created = journal.enqueue(event, target)
    if created:
        return Outcome(202, "queued", f"installing {job.model} version {job.version}", job)
    return _duplicate(job)


def _duplicate(job: Job) -> Outcome:
    if job.state is JobState.INSTALLED:
        return Outcome(200, "duplicate", "this object generation is already installed", job)
    if job.state is JobState.FAILED:
        return Outcome(
            200, "duplicate", f"this object generation failed earlier: {job.reason}", job
        )
    return Outcome(200, "duplicate", f"this object generation is already {job.state.value}", job)


def _ignored(reason: str) -> Outcome:
    return Outcome(200, "ignored", reason)
