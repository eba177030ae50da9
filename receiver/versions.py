"""What the receiver knows of each version it installed: its source, size and load state.

One row per (model, version) in the journal's `versions` table, written by the install
pipeline as the version moves through `LoadState`, read by /status, the status page, the
CLI and metrics. A version's files are the truth of what is installed; this table says
what TF Serving made of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from receiver.journal import Journal
from receiver.vocabulary import LoadState

__all__ = ["LoadState", "VersionRecord", "Versions"]


@dataclass(frozen=True)
class VersionRecord:
    model: str
    version: int
    job_id: int | None
    source: str | None
    bytes: int
    load_state: LoadState
    error: str | None  # TF Serving's own message, for a failed load
    notes: str | None  # what the SavedModel check noticed but did not refuse
    installed_at: float
    available_at: float | None
    updated_at: float

    @property
    def load_seconds(self) -> float | None:
        """From the rename to TF Serving reporting AVAILABLE."""
        return None if self.available_at is None else self.available_at - self.installed_at


class Versions:
    """The `versions` table, through the journal's connections and transactions."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def installed(
        self,
        model: str,
        version: int,
        *,
        job_id: int,
        source: str,
        size: int,
        state: LoadState,
        notes: str | None = None,
    ) -> None:
        """Record a version that was just renamed into place (again, if it was before)."""
        now = time.time()
        with self._journal.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO versions (model, version, job_id, source, bytes,"
                " load_state, notes, installed_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model, version, job_id, source, size, state.value, notes, now, now),
            )

    def set_state(
        self, model: str, version: int, state: LoadState, error: str | None = None
    ) -> bool:
        """Record a new load state; False if the version already had it (every worker
        process may learn the same verdict: only the first one counts it)."""
        now = time.time()
        available_at = now if state is LoadState.AVAILABLE else None
        with self._journal.transaction() as db:
            cursor = db.execute(
                "UPDATE versions SET load_state = ?, error = ?, updated_at = ?,"
                " available_at = COALESCE(available_at, ?)"
                " WHERE model = ? AND version = ? AND load_state != ?",
                (state.value, error, now, available_at, model, version, state.value),
            )
        return cursor.rowcount == 1

    def get(self, model: str, version: int) -> VersionRecord | None:
        rows = self._journal.query(
            "SELECT * FROM versions WHERE model = ? AND version = ?", (model, version)
        )
        return _record(rows[0]) if rows else None

    def of_model(self, model: str) -> list[VersionRecord]:
        rows = self._journal.query(
            "SELECT * FROM versions WHERE model = ? ORDER BY version", (model,)
        )
        return [_record(row) for row in rows]

    def all(self) -> list[VersionRecord]:
        rows = self._journal.query("SELECT * FROM versions ORDER BY model, version", ())
        return [_record(row) for row in rows]

    def forget(self, model: str, version: int) -> None:
        """The version is gone from disk (pruned, withdrawn, or removed by hand)."""
        with self._journal.transaction() as db:
            db.execute("DELETE FROM versions WHERE model = ? AND version = ?", (model, version))


def _record(row: object) -> VersionRecord:
    values = dict(row)  # type: ignore[call-overload]
    values["load_state"] = LoadState(values["load_state"])
    return VersionRecord(**values)
