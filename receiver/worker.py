"""The job loop: claim a job from the journal, install it, record the outcome.

One worker thread runs in each gunicorn worker process (started and stopped by the
hooks in gunicorn.conf.py); the journal's claims keep them from taking the same job.
Transient failures are retried with capped exponential backoff and jitter, up to
RECEIVER_MAX_ATTEMPTS; permanent ones fail the job at once with their reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from receiver import metrics, modeldir, servable
from receiver.errors import PermanentError, SupersededError, TransientError
from receiver.installer import Installer, InstallResult
from receiver.journal import Job, Journal
from receiver.lease import LEASE_SECONDS, Cancelled, Heartbeat, LeaseLost
from receiver.logs import log_context
from receiver.sync import Syncer
from receiver.vocabulary import JobState

log = logging.getLogger(__name__)

_IDLE_POLL_SECONDS = 0.5
_FORGET_EVERY_SECONDS = 3600.0  # how often old finished jobs are deleted
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
_MALLOC_ARENAS = 2


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before attempt n+1: base * 2**(n-1), capped, with +-50% jitter."""

    max_attempts: int
    base_seconds: float = 2.0
    cap_seconds: float = 300.0

    def delay(self, attempts: int) -> float:
        raw = min(self.base_seconds * 2.0 ** max(attempts - 1, 0), self.cap_seconds)
        return raw * random.uniform(0.5, 1.5)


class Worker:
    """Runs jobs one at a time. `run_once` is one step, so tests can drive it directly."""

    def __init__(
        self,
        journal: Journal,
        installer: Installer,
        retry: RetryPolicy,
        syncer: Syncer | None = None,
        lease_seconds: float = LEASE_SECONDS,
        retention_days: float = 0,
    ) -> None:
        self.journal = journal
        self.installer = installer
        self.retry = retry
        self.syncer = syncer
        self.lease_seconds = lease_seconds
        self.retention_days = retention_days
        self._forget_at = 0.0  # monotonic time of the next clean-up of old jobs
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.wake = threading.Event()
        # Notified whenever a job this worker ran is recorded: a push waiting for its
        # install (RECEIVER_ACK=installed) is answered then, not at its next poll.
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        limit_malloc_arenas()
        self._thread = threading.Thread(target=self.run, name="receiver-worker", daemon=True)
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Warm stop: let the running install finish within `grace` s, then cancel it cleanly."""
        self._stop.set()
        self.wake.set()
        if self._thread is None:
            return
        self._thread.join(grace)
        if self._thread.is_alive():
            log.warning(
                "worker %s: install still running after %.0fs; cancelling", self.owner, grace
            )
            self._cancel.set()
            self._thread.join(10)

    def run(self) -> None:
        log.info("worker %s: started", self.owner)
        while not self._stop.is_set():
            try:
                if self.syncer is not None:
                    self.syncer.run_if_due()
                for model in self.installer.rollout.confirm_pending():
                    if self.syncer is not None:
                        self.syncer.model_failed(model)
                self.installer.rollout.empty_trash()
                self._forget_old_jobs()
                worked = self.run_once()
            except Exception:
                log.exception("worker %s: unexpected error; carrying on", self.owner)
                worked = False
            if not worked:
                self.wake.wait(_IDLE_POLL_SECONDS)
                self.wake.clear()
        log.info("worker %s: stopped", self.owner)

    def _forget_old_jobs(self) -> None:
        if not self.retention_days or time.monotonic() < self._forget_at:
            return
        self._forget_at = time.monotonic() + _FORGET_EVERY_SECONDS
        forgotten = self.journal.forget_finished(self.retention_days * 86400)
        if forgotten:
            log.info("forgot %s finished jobs older than %g days", forgotten, self.retention_days)

    def run_once(self) -> bool:
        """Claim and run one job; False when there was nothing to do."""
        job = self.journal.claim(self.owner, self.lease_seconds)
        if job is None:
            return False
        model_root = self.installer.settings.model_dir / job.model
        for debris in servable.remove_job_debris(model_root, job.id):
            log.warning("job %s: removed what an interrupted attempt left: %s", job.id, debris)
        if job.attempts > self.retry.max_attempts:
            last = job.reason or "each attempt was cut off (its process died mid-install)"
            self._fail(job, f"gave up after {job.attempts - 1} attempts: {last}")
            return True
        if job.withdraw_requested:
            self._finish(job, JobState.SKIPPED, "its object was deleted before it was installed")
            return True
        with log_context(
            job=job.id,
            model=job.model,
            version=job.version,
            object=job.object_name,
            generation=job.generation,
        ):
            try:
                self.run_job(job)
            finally:
                return_freed_memory()
        return True

    def wait_for_news(self, timeout: float) -> None:
        """Sleep until a job this worker ran is recorded, or for `timeout` s at most."""
        with self.changed:
            self.changed.wait(timeout)

    def run_job(self, job: Job, on_progress: Callable[[int], None] | None = None) -> None:
        """Install one claimed job and record its outcome (the CLI's `install` uses it too)."""
        log.info("job %s: attempt %s, %s", job.id, job.attempts, job.source)
        started = time.monotonic()
        heartbeat = self._heartbeat(job, on_progress)
        try:
            with heartbeat.kept_alive():
                result = self.installer.install(
                    job.ref, job.release, job.id, heartbeat, still_ours=heartbeat.confirm
                )
        except Cancelled:
            log.warning("job %s: interrupted by shutdown; it resumes after restart", job.id)
            self._record(job, self.journal.release(job.id, self.owner))
        except LeaseLost:
            _log_taken_over(job)
        except SupersededError as exc:
            self._finish(job, JobState.SKIPPED, exc.reason)
        except PermanentError as exc:
            self._fail(job, exc.reason)
        except TransientError as exc:
            self._retry_or_fail(job, exc.reason)
        except Exception as exc:  # a bug, or an OS error we did not foresee: keep the reason
            if not heartbeat.still_held():  # its successor cleared this attempt's staging
                _log_taken_over(job)
                return
            log.exception("job %s: unexpected error", job.id)
            self._retry_or_fail(job, f"unexpected error: {exc!r}")
        else:
            if self._withdrawn_after_delete(job):
                return
            note = result.note or ("already installed" if result.already_installed else None)
            if self._finish(job, JobState.INSTALLED, note):
                _record_install(result, time.monotonic() - started)
        finally:
            # The outcome is recorded and its waiters woken (`_record`): only now delete
            # what the install pruned (hidden from TF Serving already).
            self.installer.rollout.empty_trash()

    def _withdrawn_after_delete(self, job: Job) -> bool:
        """Its object was deleted while it installed (RECEIVER_ON_DELETE=remove): withdraw."""
        current = self.journal.get(job.id)
        if current is None or not current.withdraw_requested:
            return False
        model_root = self.installer.settings.model_dir / job.model
        refusal = modeldir.remove_version(model_root, job.version)
        if refusal is not None and "not installed" in refusal:
            refusal = None  # the delete's own answer withdrew it already
        reason = (
            f"its object was deleted while it installed; {refusal}, so it stays"
            if refusal
            else "its object was deleted while it installed; withdrawn"
        )
        log.warning("job %s: %s", job.id, reason)
        self._finish(job, JobState.INSTALLED if refusal else JobState.SKIPPED, reason)
        return True

    def _retry_or_fail(self, job: Job, reason: str) -> None:
        if job.attempts >= self.retry.max_attempts:
            self._fail(job, f"gave up after {job.attempts} attempts: {reason}")
            return
        delay = self.retry.delay(job.attempts)
        log.warning(
            "job %s: attempt %s failed, retrying in %.1fs: %s", job.id, job.attempts, delay, reason
        )
        self._record(job, self.journal.retry_later(job.id, self.owner, reason, delay))

    def _fail(self, job: Job, reason: str) -> None:
        """The one place a job is recorded as failed for good."""
        log.error("job %s: failed: %s", job.id, reason)
        if self._finish(job, JobState.FAILED, reason) and self.syncer is not None:
            self.syncer.model_failed(job.model)

    def _finish(self, job: Job, state: JobState, reason: str | None) -> bool:
        recorded = self.journal.finish(job.id, self.owner, state, reason)
        if recorded:
            metrics.JOBS_FINISHED.labels(state=state.value).inc()
        return self._record(job, recorded)

    def _record(self, job: Job, recorded: bool) -> bool:
        """Every outcome passes here, also those of jobs that end before they install:
        wake the pushes waiting on it."""
        if not recorded:
            log.warning(
                "job %s: no longer held by this worker; its outcome is not recorded", job.id
            )
        with self.changed:
            self.changed.notify_all()
        return recorded

    def _heartbeat(self, job: Job, also: Callable[[int], None] | None) -> Heartbeat:
        return Heartbeat(self.journal, job, self.owner, self.lease_seconds, self._cancel, also)


def _log_taken_over(job: Job) -> None:
    log.warning(
        "job %s: another worker took this job over (this one was silent past its "
        "lease); install abandoned, nothing recorded",
        job.id,
    )


def return_freed_memory() -> None:
    """Hand the heap an install freed back to the system (glibc's `malloc_trim`).

    An install passes gigabytes through 512 KiB buffers on several threads; glibc keeps
    what each thread freed for reuse, and in a long-lived worker that grew the peak by a
    third over a few 1 GiB installs (docs/benchmarks.md). Elsewhere this does nothing."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def limit_malloc_arenas() -> None:
    """Let glibc keep at most two heaps for the process's threads (`mallopt(M_ARENA_MAX)`).

    Every install runs on new threads, and glibc may give each thread a heap of its own,
    up to eight per core, keeping in each what was freed there: a worker's memory climbed
    with every install (ten 100 MiB installs: 81 to 103 MiB), where with two heaps it
    stayed at 75 MiB from the second on, at the same speed (docs/benchmarks.md, Memory).
    A limit set for glibc itself (MALLOC_ARENA_MAX, or arena_max in GLIBC_TUNABLES) wins.
    Elsewhere this does nothing."""
    if platform.libc_ver()[0] != "glibc":
        return
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return
    if _LIBC.mallopt(_M_ARENA_MAX, _MALLOC_ARENAS) != 1:
        log.warning("glibc refused to limit its heaps to %d; memory may grow", _MALLOC_ARENAS)


def _record_install(result: InstallResult, seconds: float) -> None:
    if result.already_installed:
        return
    metrics.INSTALL_SECONDS.observe(seconds)
    metrics.INSTALL_BYTES.observe(result.bytes_downloaded)
    if result.download_seconds > 0:
        metrics.DOWNLOAD_THROUGHPUT.observe(result.bytes_downloaded / result.download_seconds)
