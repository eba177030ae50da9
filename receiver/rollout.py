"""After the rename: tell TF Serving, wait for its verdict, then prune the old or withdraw the new.

    renamed ──▶ RECEIVER_TFSERVING_URL set?
                  no:  models.config; prune (loads not confirmed)
                  yes: TF Serving answers?
                         no:  the job ends; the verdict is awaited in the background
                              (`confirm_pending`, from the worker's idle loop)
                         yes: models.config lists the model; wait for the verdict
                                         AVAILABLE  ──▶ prune the old versions
                                         END+error  ──▶ withdraw it (job failed, TF Serving's
                                                        message); the old version serves on
                                         no verdict ──▶ keep everything (timed_out)

Pruning waits for AVAILABLE so the last version TF Serving serves is never deleted
before its successor serves. A failed version is withdrawn so the newest version on disk
is again one TF Serving loaded, and its next start (which needs every model's newest
version to load) succeeds. Every step is safe to run again: a job resumed after a crash
between the rename and the end runs the rest of it (`Rollout.finish`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from receiver import metrics, modelconfig, modeldir, servable
from receiver.config import Settings
from receiver.errors import PermanentError
from receiver.journal import Journal
from receiver.tfserving import POLL_SECONDS, ServingState, TFServing, VersionStatus
from receiver.versions import VersionRecord, Versions
from receiver.vocabulary import JobState, LoadState

log = logging.getLogger(__name__)


class LoadFailedError(PermanentError):
    """TF Serving could not load the version; it has been withdrawn."""


@dataclass(frozen=True)
class RolloutResult:
    load_state: LoadState
    pruned: list[int]
    note: str | None = None  # why the job ended without a confirmed load


class Rollout:
    def __init__(
        self, settings: Settings, versions: Versions | None, journal: Journal | None = None
    ) -> None:
        self.settings = settings
        self.versions = versions
        self.journal = journal
        self.tfserving = TFServing(settings.tfserving_url) if settings.tfserving_url else None
        self._confirm_at = 0.0  # monotonic time of the next background confirmation
        self._untidy: set[str] = set()  # models with pruned versions not yet deleted

    def first_state(self) -> LoadState:
        return LoadState.LOADING if self.tfserving else LoadState.UNCONFIRMED

    def finish(self, model: str, version: int, tick: Callable[[], None]) -> RolloutResult:
        """Everything after the rename of `<model>/<version>`; `tick` renews the job's lease."""
        if self.tfserving is None:
            self._list_in_model_config(None)
            return RolloutResult(LoadState.UNCONFIRMED, self._prune(model))
        if self.tfserving.version_status(model, version).state is ServingState.UNREACHABLE:
            # Not started yet (it starts once the first sync's versions are in place), or
            # restarting. The model joins models.config only once TF Serving answers, so a
            # version it cannot load fails a config reload, never its start.
            note = (
                f"TF Serving is not answering (not started yet?): its verdict on {model} "
                f"version {version} is awaited in the background; older versions are kept"
            )
            log.info("%s", note)
            return RolloutResult(LoadState.LOADING, [], note)
        self._list_in_model_config(model)
        status = self.tfserving.wait_for_load(model, version, self.settings.load_timeout, tick)
        return self._verdict(model, version, status)

    def confirm_pending(self) -> list[str]:
        """Ask TF Serving about versions still waiting for a verdict (their jobs ended while
        it was not answering, or timed out) and act on each; returns the models whose
        version it failed to load (sync falls back for those left without a version).
        Every worker process may run this: each step is safe to run twice."""
        if self.tfserving is None or self.versions is None or time.monotonic() < self._confirm_at:
            return []
        self._confirm_at = time.monotonic() + POLL_SECONDS
        failed: list[str] = []
        for record in self.versions.all():
            if record.load_state not in (LoadState.LOADING, LoadState.TIMED_OUT):
                continue
            status = self.tfserving.version_status(record.model, record.version)
            if status.state is ServingState.UNREACHABLE:
                break  # the same for every version: ask again later
            self._list_in_model_config(record.model)
            if status.state is ServingState.AVAILABLE or status.state is ServingState.END:
                try:
                    verdict = self._verdict(record.model, record.version, status)
                    if self.journal is not None and record.job_id is not None:
                        # The job's reason said the verdict was awaited: say what it was.
                        self.journal.reopen_finished(
                            record.job_id,
                            JobState.INSTALLED,
                            f"TF Serving reported {record.model} version {record.version} "
                            f"{verdict.load_state.value} (confirmed after the install ended)",
                        )
                except LoadFailedError as exc:
                    failed.append(record.model)
                    if self.journal is not None and record.job_id is not None:
                        self.journal.reopen_finished(record.job_id, JobState.FAILED, exc.reason)
            elif record.load_state is LoadState.LOADING and _overdue(record, self.settings):
                self._record(record.model, record.version, LoadState.TIMED_OUT, status.describe())
        return failed

    def _verdict(self, model: str, version: int, status: VersionStatus) -> RolloutResult:
        if status.state is ServingState.AVAILABLE:
            self._record(model, version, LoadState.AVAILABLE)
            return RolloutResult(LoadState.AVAILABLE, self._prune(model))
        if status.failed:
            self._withdraw(model, version, status.describe())
            raise LoadFailedError(
                f"TF Serving could not load {model} version {version}, so it was withdrawn "
                f"and the version before it serves on: {status.error_message or status.error_code}"
            )
        if status.state is ServingState.END:
            # Unloaded without an error before we saw it AVAILABLE: a newer version came.
            self._record(model, version, LoadState.RETIRED)
            return RolloutResult(LoadState.RETIRED, [], "retired by TF Serving")
        self._record(model, version, LoadState.TIMED_OUT, status.describe())
        note = (
            f"TF Serving has not reported {model} version {version} AVAILABLE within "
            f"{self.settings.load_timeout:g}s (RECEIVER_LOAD_TIMEOUT; last state "
            f"{status.describe()}); older versions are kept until it does"
        )
        log.warning("%s", note)
        return RolloutResult(LoadState.TIMED_OUT, [], note)

    def _prune(self, model: str) -> list[int]:
        """Prune to RECEIVER_KEEP_VERSIONS; with loads confirmed, never the newest version TF
        Serving reported AVAILABLE, nor one above it that it has not yet confirmed (another
        worker's install may be loading, and may fail)."""
        protected = None
        if self.tfserving is not None and self.versions is not None:
            available = [
                r.version for r in self.versions.of_model(model)
                if r.load_state is LoadState.AVAILABLE
            ]  # fmt: skip
            protected = max(available, default=None)
        pruned = modeldir.prune(
            self.settings.model_dir / model, self.settings.keep_versions, protected, delete=False
        )
        if pruned:
            log.info("pruned %s versions %s", model, pruned)
            self._untidy.add(model)
        if self.versions is not None:
            for version in pruned:
                self.versions.forget(model, version)
        return pruned

    def empty_trash(self) -> None:
        """Delete the versions pruned since the last call. A prune only hides them (TF
        Serving stops seeing them at once); the worker deletes them once the job is
        recorded, so a push's answer does not wait for a gigabyte's deletion."""
        while self._untidy:
            modeldir.empty_trash(self.settings.model_dir / self._untidy.pop())

    def _withdraw(self, model: str, version: int, reason: str) -> None:
        model_root = self.settings.model_dir / model
        with modeldir.directory_lock(model_root):
            modeldir.withdraw(model_root / str(version))
        servable.remove_if_empty(model_root)
        log.error(
            "withdrew %s version %s, which TF Serving failed to load: %s", model, version, reason
        )
        self._record(model, version, LoadState.FAILED, reason)
        if self.settings.model_config_file is not None:
            modelconfig.remove_model(
                self.settings.model_config_file, model, self.settings.model_dir
            )

    def _record(self, model: str, version: int, state: LoadState, error: str | None = None) -> None:
        if self.versions is None:
            metrics.LOADS.labels(outcome=state.value).inc()
            return
        if not self.versions.set_state(model, version, state, error):
            return  # another worker process recorded (and counted) this verdict first
        metrics.LOADS.labels(outcome=state.value).inc()
        if state is LoadState.AVAILABLE:
            # TF Serving serves one version per model (latest { num_versions: 1 }): the
            # ones before this one have been unloaded.
            for older in self.versions.of_model(model):
                if older.version < version and older.load_state is LoadState.AVAILABLE:
                    self.versions.set_state(model, older.version, LoadState.RETIRED)
        record = self.versions.get(model, version)
        if state is LoadState.AVAILABLE and record is not None and record.load_seconds is not None:
            metrics.LOAD_SECONDS.observe(record.load_seconds)

    def _list_in_model_config(self, model: str | None) -> None:
        """Add `model` (None: every model with a version) to models.config, if managed."""
        if self.settings.model_config_file is not None:
            modelconfig.update_model_config(
                self.settings.model_config_file,
                self.settings.model_dir,
                only=None if model is None else {model},
            )


def _overdue(record: VersionRecord, settings: Settings) -> bool:
    return time.time() > record.installed_at + settings.load_timeout
