"""Decide what a parsed event means for us: queue a job, withdraw a version, or say why not.

Policy over an `ObjectEvent`, the journal and the model dir; the HTTP layer only maps
the returned `Outcome` to a response. `settle` is the install-ack mode's wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from receiver import modeldir
from receiver.config import Settings
from receiver.events import ObjectEvent
from receiver.journal import Job, Journal
from receiver.layout import Ignored, ModelVersion, parse_object_name, reserved_names
from receiver.objectref import ObjectRef
from receiver.versions import Versions
from receiver.vocabulary import (
    FINAL_OUTCOMES,
    DeleteMode,
    EventKind,
    JobState,
    LoadState,
    PushOutcome,
)

_SETTLE_POLL_SECONDS = 0.05  # a read of one journal row
_UNCONFIRMED = (LoadState.LOADING, LoadState.TIMED_OUT)


@dataclass(frozen=True)
class Outcome:
    """What happened to a delivery: `status` for Pub/Sub, the rest for people."""

    status: int
    outcome: PushOutcome
    reason: str
    job: Job | None = None
    # The event names a model version and the settings (bucket, names, delete mode) do not
    # rule it out: every replica has to hear of it, whatever this one made of it. What
    # this one did rests on its own disk and journal, which a peer's may not match: it
    # queued the version or its sync had it already; it skipped a version older than all it
    # keeps; it withdrew a version, refused to withdraw its last one, or never had it. A
    # peer decides for itself. Settings are the same on every replica of a Deployment.
    for_peers: bool = False

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"outcome": self.outcome, "reason": self.reason}
        if self.job is not None:
            body.update(job=self.job.id, model=self.job.model, version=self.job.version)
        return body


def accept(event: ObjectEvent, settings: Settings, journal: Journal) -> Outcome:
    """Record a job for a new model version, or say why the event needs none."""
    obj = event.ref
    if obj.bucket != settings.bucket:
        return _ignored(f"bucket {obj.bucket!r} is not the source bucket {settings.bucket!r}")
    if event.kind in (EventKind.DELETE, EventKind.ARCHIVE):
        return _withdraw(event, settings, journal)
    if event.kind is not EventKind.FINALIZE:
        return _ignored(f"event type {event.event_type} is not an upload; nothing to install")
    target = parse_object_name(
        obj.name, settings.prefix, settings.done_marker, reserved_names(settings)
    )
    if isinstance(target, Ignored):
        return _ignored(target.reason)
    return replace(queue(obj, target, settings, journal), for_peers=True)


def queue(obj: ObjectRef, target: ModelVersion, settings: Settings, journal: Journal) -> Outcome:
    """Record a job for an object generation that publishes `target` (pushes and sync)."""
    skip = modeldir.superseded(
        settings.model_dir / target.model, target.version, settings.keep_versions
    )
    if skip:
        return Outcome(200, PushOutcome.SKIPPED, skip)
    job, created = journal.enqueue(obj, target)
    if created:
        return Outcome(
            202, PushOutcome.QUEUED, f"installing {job.model} version {job.version}", job
        )
    return _duplicate(job)


def _withdraw(event: ObjectEvent, settings: Settings, journal: Journal) -> Outcome:
    """OBJECT_DELETE / OBJECT_ARCHIVE: remove the version it installed, if so configured,
    whether its install has ended, is under way, or has not started."""
    if settings.on_delete is not DeleteMode.REMOVE:
        return _ignored(f"{event.event_type} ignored (RECEIVER_ON_DELETE=ignore)")
    if event.overwritten_by_generation is not None:
        return _ignored(f"{event.event_type} is an overwrite, not a withdrawal")
    obj = event.ref
    target = parse_object_name(
        obj.name, settings.prefix, settings.done_marker, reserved_names(settings)
    )
    if isinstance(target, Ignored):
        return _ignored(target.reason)
    # Sync never withdraws: a delete that does not reach a replica that has the version
    # leaves it there, so it is for the peers even when refused here (the last version).
    return replace(_withdraw_version(obj, target, settings, journal), for_peers=True)


def _withdraw_version(
    obj: ObjectRef, target: ModelVersion, settings: Settings, journal: Journal
) -> Outcome:
    # First mark an unfinished install, then look at the disk: an install that renames
    # after the mark sees it; one that renamed before it is on disk by now.
    pending = journal.request_withdrawal(obj)
    if _installed_from(settings, target, obj):
        refusal = modeldir.remove_version(settings.model_dir / target.model, target.version)
        if refusal:
            return _ignored(refusal)
        return Outcome(
            200, PushOutcome.REMOVED, f"withdrew {target.model} version {target.version}"
        )
    if pending is not None:
        return Outcome(
            202,
            PushOutcome.WITHDRAWING,
            f"{target.model} version {target.version} is {pending.state.value} (job "
            f"{pending.id}); it is withdrawn as soon as its install ends",
        )
    return _ignored(f"{target.model} version {target.version} was not installed from this object")


def _installed_from(settings: Settings, target: ModelVersion, obj: ObjectRef) -> bool:
    # Whichever generation of this object installed the version: after a refused overwrite
    # the bucket's last generation was never installed, yet deleting it withdraws version N.
    provenance = modeldir.read_provenance(settings.model_dir / target.model / str(target.version))
    return (provenance.get("bucket"), provenance.get("object")) == (obj.bucket, obj.name)


def _duplicate(job: Job) -> Outcome:
    if job.state is JobState.INSTALLED:
        return Outcome(
            200, PushOutcome.DUPLICATE, "this object generation is already installed", job
        )
    if job.state.final:
        return Outcome(
            200, PushOutcome.DUPLICATE, f"this object generation was {job.state}: {job.reason}", job
        )
    return Outcome(
        200, PushOutcome.DUPLICATE, f"this object generation is already {job.state.value}", job
    )


def _ignored(reason: str) -> Outcome:
    return Outcome(200, PushOutcome.IGNORED, reason)


def settle(
    job: Job,
    journal: Journal,
    timeout: float,
    serving: Callable[[], bool] = lambda: True,
    wait: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Wait for a job to end (RECEIVER_ACK=installed); 503 if it fails transiently or times out.

    A redelivery of the same push waits on the same job: it never starts a second download.
    Between reads of the job, `wait(poll)`: the worker's `wait_for_news` returns as soon as
    this process's worker records a job; a job run by another process is seen by polling.
    """
    deadline = time.monotonic() + timeout
    # Attempts already made when we started waiting; a transient failure after that is news.
    baseline = job.attempts if job.state is JobState.QUEUED else job.attempts - 1
    while True:
        current = journal.get(job.id) or job
        if current.state is JobState.INSTALLED:
            record = Versions(journal).get(current.model, current.version)
            if record is not None and record.load_state in _UNCONFIRMED:
                # In place, but not serving as far as anyone knows: installed means serving.
                return Outcome(
                    503,
                    PushOutcome.RETRY,
                    f"{current.model} version {current.version} is in place but TF Serving "
                    f"has not reported it AVAILABLE ({record.load_state.value}); redeliver "
                    "to wait on",
                    current,
                )
            return Outcome(
                200,
                PushOutcome.INSTALLED,
                f"installed {current.model} version {current.version}",
                current,
            )
        if current.state.final:
            return Outcome(200, FINAL_OUTCOMES[current.state], current.reason or "", current)
        if current.state is JobState.QUEUED and current.attempts > baseline and current.reason:
            return Outcome(503, PushOutcome.RETRY, f"will retry: {current.reason}", current)
        if not serving():
            return Outcome(
                503, PushOutcome.RETRY, "shutting down; the job resumes after restart", current
            )
        if time.monotonic() >= deadline:
            return Outcome(
                503,
                PushOutcome.RETRY,
                f"still {current.state.value} after {timeout:g}s; redeliver to wait on",
                current,
            )
        wait(_SETTLE_POLL_SECONDS)
