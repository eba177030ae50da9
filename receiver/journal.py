"""The durable job table: one row per (bucket, object, generation), shared by all processes.

SQLite in WAL mode under the state dir, its schema versioned (`receiver.schema`). Every
gunicorn worker process opens it; every write is one `BEGIN IMMEDIATE` transaction, so
claims are exclusive across processes and a job acknowledged to Pub/Sub is on disk
(synchronous=FULL) before the response.

    queued --claim--> running --> installed
       ^                 |  \\--> failed      (permanent, or out of attempts)
       |                 |  \\--> skipped     (older than every version kept)
       '--retry_later----'  (or release: interrupted by shutdown, not an attempt)
A running job holds a lease that its worker renews while it makes progress; a job whose
lease ran out (its process died, or stalled) is claimed again by whoever looks next. Every
move out of `running` names its owner and succeeds only while that owner still holds the
job, so a worker that lost its lease can never overwrite its successor's outcome.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from dataclasses import dataclass

from receiver import schema
from receiver.layout import ModelVersion
from receiver.objectref import ObjectRef
from receiver.vocabulary import JobState

__all__ = ["Job", "JobState", "Journal"]

_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


@dataclass(frozen=True)
class Job:
    id: int
    bucket: str
    object_name: str
    generation: int
    model: str
    version: int
    archive_format: str
    size: int | None
    md5: str | None
    crc32c: str | None
    state: JobState
    reason: str | None
    attempts: int
    not_before: float
    lease_until: float | None
    owner: str | None
    bytes_done: int
    started_at: float | None
    created_at: float
    updated_at: float
    withdraw_requested: int = 0  # its object was deleted (RECEIVER_ON_DELETE=remove)

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(
            self.bucket, self.object_name, self.generation, self.size, self.md5, self.crc32c
        )

    @property
    def release(self) -> ModelVersion:
        """The version this job installs."""
        return ModelVersion(self.model, self.version, self.archive_format)

    @property
    def source(self) -> str:
        return self.ref.url


class Journal(schema.Database):
    """Jobs on disk. Safe to share between threads; each thread gets its own connection."""

    def enqueue(self, obj: ObjectRef, target: ModelVersion) -> tuple[Job, bool]:
        """Record a job for this object generation; returns (job, created)."""
        now = time.time()
        with self._tx() as db:
            # Looked up first (in the same transaction): an ignored INSERT would still use
            # up an AUTOINCREMENT id, and job numbers would skip whenever two workers race.
            existing = self.find(obj)
            if existing is not None:
                return existing, False
            db.execute(
                "INSERT INTO jobs (bucket, object_name, generation, model, version,"
                " archive_format, size, md5, crc32c, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    obj.bucket,
                    obj.name,
                    obj.generation,
                    target.model,
                    target.version,
                    target.archive_format,
                    obj.size,
                    obj.md5,
                    obj.crc32c,
                    JobState.QUEUED.value,
                    now,
                    now,
                ),
            )
        job = self.find(obj)
        assert job is not None  # inserted just now
        return job, True

    def claim(self, owner: str, lease_seconds: float, job_id: int | None = None) -> Job | None:
        """Take the oldest runnable job (or job `job_id` if runnable, due or not):
        queued and due, or running with an expired lease."""
        now = time.time()
        with self._tx() as db:
            if job_id is None:
                row = db.execute(
                    "SELECT id FROM jobs WHERE (state = ? AND not_before <= ?)"
                    " OR (state = ? AND lease_until < ?) ORDER BY id LIMIT 1",
                    (JobState.QUEUED.value, now, JobState.RUNNING.value, now),
                ).fetchone()
            else:
                row = db.execute(
                    "SELECT id FROM jobs WHERE id = ? AND (state = ?"
                    " OR (state = ? AND lease_until < ?))",
                    (job_id, JobState.QUEUED.value, JobState.RUNNING.value, now),
                ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = ?, owner = ?, lease_until = ?, attempts = attempts + 1,"
                " bytes_done = 0, started_at = ?, updated_at = ? WHERE id = ?",
                (JobState.RUNNING.value, owner, now + lease_seconds, now, now, row["id"]),
            )
            claimed = db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
        return _job(claimed)

    def heartbeat(self, job_id: int, owner: str, bytes_done: int, lease_seconds: float) -> bool:
        """Record progress and extend the lease; False if the job is no longer ours."""
        now = time.time()
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET bytes_done = ?, lease_until = ?, updated_at = ?"
                " WHERE id = ? AND owner = ? AND state = ?",
                (bytes_done, now + lease_seconds, now, job_id, owner, JobState.RUNNING.value),
            )
        return cursor.rowcount == 1

    def finish(self, job_id: int, owner: str, state: JobState, reason: str | None = None) -> bool:
        """Move a running job to a final state with its reason; False if it is not ours."""
        return self._leave_running(job_id, owner, state=state.value, reason=reason)

    def retry_later(self, job_id: int, owner: str, reason: str, delay_seconds: float) -> bool:
        """Put a job back in the queue, not to be claimed for `delay_seconds`."""
        return self._leave_running(
            job_id,
            owner,
            state=JobState.QUEUED.value,
            reason=reason,
            not_before=time.time() + delay_seconds,
        )

    def release(self, job_id: int, owner: str) -> bool:
        """Give back a job interrupted by shutdown; the interrupted attempt does not count."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, owner = NULL, lease_until = NULL,"
                " attempts = MAX(attempts - 1, 0), updated_at = ?"
                " WHERE id = ? AND owner = ? AND state = ?",
                (JobState.QUEUED.value, time.time(), job_id, owner, JobState.RUNNING.value),
            )
        return cursor.rowcount == 1

    def _leave_running(self, job_id: int, owner: str, **fields: object) -> bool:
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            cursor = db.execute(
                f"UPDATE jobs SET {columns}, lease_until = NULL, updated_at = ?"
                " WHERE id = ? AND owner = ? AND state = ?",
                (*fields.values(), time.time(), job_id, owner, JobState.RUNNING.value),
            )
        return cursor.rowcount == 1

    def request_withdrawal(self, obj: ObjectRef) -> Job | None:
        """Mark the unfinished job of a deleted object generation: its version is withdrawn
        when the install ends. None if there is no such job, or it has ended."""
        with self._tx() as db:
            db.execute(
                f"UPDATE jobs SET withdraw_requested = 1, updated_at = ?"
                f" WHERE bucket = ? AND object_name = ? AND generation = ?"
                f" AND state IN ({', '.join('?' * len(_UNFINISHED))})",
                (time.time(), obj.bucket, obj.name, obj.generation, *_UNFINISHED),
            )
        job = self.find(obj)
        return job if job is not None and job.withdraw_requested else None

    def reopen_finished(self, job_id: int, state: JobState, reason: str) -> bool:
        """Change the outcome of an installed job: TF Serving failed, later, to load it."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE id = ? AND state = ?",
                (state.value, reason, time.time(), job_id, JobState.INSTALLED.value),
            )
        return cursor.rowcount == 1

    def requeue(self, job_id: int) -> Job | None:
        """Run a job again from scratch (the `retry` command); None if there is no such job."""
        self._set(job_id, state=JobState.QUEUED.value, reason=None, attempts=0, not_before=0.0)
        return self.get(job_id)

    def forget_finished(self, older_than_seconds: float) -> int:
        """Delete finished jobs not touched for this long (RECEIVER_JOB_RETENTION_DAYS), so
        that history never slows /status or claims; returns how many went."""
        finals = [state.value for state in JobState if state.final]
        with self._tx() as db:
            cursor = db.execute(
                f"DELETE FROM jobs WHERE state IN ({', '.join('?' * len(finals))})"
                " AND updated_at < ?",
                (*finals, time.time() - older_than_seconds),
            )
        return cursor.rowcount

    def release_running(self) -> int:
        """At start-up, before any worker runs: every running job was cut off; queue it again."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, lease_until = NULL, owner = NULL WHERE state = ?",
                (JobState.QUEUED.value, JobState.RUNNING.value),
            )
        return cursor.rowcount

    def _set(self, job_id: int, **fields: object) -> None:
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE jobs SET {columns}, updated_at = ? WHERE id = ?",
                (*fields.values(), time.time(), job_id),
            )

    def get(self, job_id: int) -> Job | None:
        row = self._connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def find(self, obj: ObjectRef) -> Job | None:
        """The job for this object generation, if there is one."""
        row = (
            self._connection()
            .execute(
                "SELECT * FROM jobs WHERE bucket = ? AND object_name = ? AND generation = ?",
                (obj.bucket, obj.name, obj.generation),
            )
            .fetchone()
        )
        return _job(row) if row else None

    def latest_for_model(self, model: str) -> Job | None:
        row = (
            self._connection()
            .execute("SELECT * FROM jobs WHERE model = ? ORDER BY id DESC LIMIT 1", (model,))
            .fetchone()
        )
        return _job(row) if row else None

    def recent(self, limit: int = 20) -> list[Job]:
        rows = self._connection().execute(
            "SELECT * FROM jobs ORDER BY updated_at DESC, id DESC LIMIT ?", (limit,)
        )
        return [_job(row) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._connection().execute("SELECT state, n FROM job_counts")
        counts = {state.value: 0 for state in JobState}
        counts.update({state: count for state, count in rows})
        return counts


_JOB_FIELDS = tuple(field.name for field in dataclasses.fields(Job))


def _job(row: sqlite3.Row) -> Job:
    # By name: a column a later migration adds is not a field of this release's Job.
    values = {name: row[name] for name in _JOB_FIELDS}
    values["state"] = JobState(values["state"])
    return Job(**values)
