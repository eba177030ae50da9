"""The journal's database: its connections, and its tables as numbered migrations.

Migrations are applied in order and counted in `PRAGMA user_version`. A journal on a volume outlives the release that wrote it, so the schema is never edited in
place: a change is a new migration at the end of `MIGRATIONS`. `migrate` applies the ones
a journal lacks, each in one transaction with its version bump, so a crash halfway leaves
the journal at the last whole step. Migration 1 is the schema of the releases before
versioning (they left `user_version` at 0); it is written with IF NOT EXISTS, so applying
it to such a journal changes nothing but the version.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_BUSY_TIMEOUT_SECONDS = 30.0

_JOBS = """
CREATE TABLE IF NOT EXISTS jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket         TEXT    NOT NULL,
    object_name    TEXT    NOT NULL,
    generation     INTEGER NOT NULL,
    model          TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    archive_format TEXT    NOT NULL,
    size           INTEGER,
    md5            TEXT,
    crc32c         TEXT,
    state          TEXT    NOT NULL,
    reason         TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    not_before     REAL    NOT NULL DEFAULT 0,
    lease_until    REAL,
    owner          TEXT,
    bytes_done     INTEGER NOT NULL DEFAULT 0,
    started_at     REAL,
    created_at     REAL    NOT NULL,
    updated_at     REAL    NOT NULL,
    UNIQUE (bucket, object_name, generation)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, not_before);
CREATE INDEX IF NOT EXISTS jobs_by_model ON jobs (model, id);
CREATE INDEX IF NOT EXISTS jobs_by_update ON jobs (updated_at, id);
-- Jobs per state, kept by triggers, so /status and /metrics read a handful of rows
-- however long the history (counting 50,000 rows on every scrape took milliseconds).
CREATE TABLE IF NOT EXISTS job_counts (
    state TEXT PRIMARY KEY,
    n     INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF state ON jobs
    WHEN OLD.state != NEW.state BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO job_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- A journal from before job_counts existed: count its jobs once.
INSERT INTO job_counts (state, n)
    SELECT state, COUNT(*) FROM jobs WHERE NOT EXISTS (SELECT 1 FROM job_counts)
    GROUP BY state;
"""

# What is known of each installed version: where it came from, its size, and what TF
# Serving said when it loaded it (`receiver.versions`).
_VERSIONS = """
CREATE TABLE IF NOT EXISTS versions (
    model        TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    job_id       INTEGER,
    source       TEXT,
    bytes        INTEGER NOT NULL DEFAULT 0,
    load_state   TEXT    NOT NULL,
    error        TEXT,
    notes        TEXT,
    installed_at REAL    NOT NULL,
    available_at REAL,
    updated_at   REAL    NOT NULL,
    PRIMARY KEY (model, version)
);
"""

# A delete (RECEIVER_ON_DELETE=remove) that arrives while its generation is queued or
# installing: the worker withdraws the version when the install ends.
_WITHDRAW_REQUESTED = """
ALTER TABLE jobs ADD COLUMN withdraw_requested INTEGER NOT NULL DEFAULT 0;
"""

MIGRATIONS: tuple[str, ...] = (_JOBS, _VERSIONS, _WITHDRAW_REQUESTED)


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the journal to the newest schema; returns the version it is at.

    Every gunicorn worker process opens the journal at start: the version is read inside
    the write transaction, so of two processes starting at once only one applies a step.
    """
    while True:
        connection.execute("BEGIN IMMEDIATE")
        try:
            current = int(connection.execute("PRAGMA user_version").fetchone()[0])
            if current > len(MIGRATIONS):
                raise RuntimeError(
                    f"the journal has schema version {current}, newer than this release "
                    f"knows ({len(MIGRATIONS)}); run the newer release or move it aside"
                )
            if current == len(MIGRATIONS):
                connection.execute("COMMIT")
                return current
            for statement in _statements(MIGRATIONS[current]):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {current + 1}")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """A script's statements one by one (a trigger's body holds semicolons of its own);
    comment lines left out."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements


class Database:
    """The journal's SQLite file: one connection per thread, WAL, every write durable
    before it returns (synchronous=FULL), and the small shared values of `meta`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def initialize(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        migrate(self._connection())

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None
            )
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            self._local.connection = connection
        return connection

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before any read so concurrent claims cannot interleave."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction, for the other tables kept in the journal (`versions`)."""
        return self._tx()

    def query(self, sql: str, parameters: tuple[object, ...]) -> list[sqlite3.Row]:
        return self._connection().execute(sql, parameters).fetchall()

    def set_meta(self, key: str, value: str | None, only_if_unset: bool = False) -> bool:
        """Write (or with None, delete) a small shared value; False if `only_if_unset` lost."""
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
                return True
            verb = "INSERT OR IGNORE" if only_if_unset else "INSERT OR REPLACE"
            cursor = db.execute(f"{verb} INTO meta (key, value) VALUES (?, ?)", (key, value))
        return cursor.rowcount == 1

    def get_meta(self, key: str) -> str | None:
        row = self._connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])
