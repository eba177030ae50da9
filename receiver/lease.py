"""A claimed job's lease, kept while its install runs, and the install's way to stop.

The worker hands the installer a `Heartbeat` as its progress callback. A thread of its
own renews the job's lease in the journal (`kept_alive`); the callback raises `Cancelled`
when the process is shutting down and `LeaseLost` when another worker has taken the job
over, so an install never goes on for a job that is no longer its worker's.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

from receiver.journal import Job, Journal
from receiver.status import download_progress

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0  # a running job whose worker is silent this long is taken over
_HEARTBEAT_SECONDS = 2.0
_PROGRESS_LOG_SECONDS = 5.0


class Cancelled(Exception):
    """Raised inside an install when the process is shutting down and out of grace time."""


class LeaseLost(Exception):
    """Raised inside an install whose job another worker has taken over (its lease ran out)."""


class Heartbeat:
    """Progress callback: keeps the bytes done for the lease keeper (`kept_alive`) to
    record, stops the install on shutdown or takeover, and logs the download's progress."""

    def __init__(
        self,
        journal: Journal,
        job: Job,
        owner: str,
        lease_seconds: float,
        cancel: threading.Event,
        also: Callable[[int], None] | None = None,
    ) -> None:
        self._journal = journal
        self._job = job
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._bytes_done = 0
        self._cancel = cancel
        self._also = also
        self._lost = threading.Event()  # set by the lease keeper when another worker took over
        self._last_log = time.monotonic()

    def __call__(self, bytes_done: int) -> None:
        if self._cancel.is_set():
            raise Cancelled()
        if self._lost.is_set():
            raise LeaseLost()
        if self._also is not None:
            self._also(bytes_done)
        self._bytes_done = bytes_done
        now = time.monotonic()
        if now - self._last_log >= _PROGRESS_LOG_SECONDS:
            self._last_log = now
            progress = download_progress(replace(self._job, bytes_done=bytes_done))
            if progress is not None:
                log.info("job %s: downloaded %s", self._job.id, progress.describe())

    @contextlib.contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Renew the lease from a thread of its own for as long as the install runs, so no
        phase that reports no progress (reading a zip's index, unpacking a spooled zip,
        checking links, fsyncing, waiting for TF Serving) lets another worker take the job
        over. A process that dies stops renewing: its job is taken over once the lease runs
        out."""
        done = threading.Event()

        every = min(_HEARTBEAT_SECONDS, self._lease_seconds / 4)

        def renew() -> None:
            while not done.wait(every):
                try:
                    held = self._renew()
                except sqlite3.Error as exc:  # locked past its busy timeout, disk full
                    log.warning("job %s: lease not renewed (%s); trying again", self._job.id, exc)
                    continue
                if not held:
                    self._lost.set()
                    return

        keeper = threading.Thread(target=renew, name=f"lease-{self._job.id}", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()

    def confirm(self) -> None:
        """Renew the lease now; raise `LeaseLost` if the job is no longer this worker's."""
        if not self._renew():
            raise LeaseLost()

    def still_held(self) -> bool:
        return not self._lost.is_set() and self._renew()

    def _renew(self) -> bool:
        return self._journal.heartbeat(
            self._job.id, self._owner, self._bytes_done, self._lease_seconds
        )
