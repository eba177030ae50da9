"""Journal migrations: a journal written by an earlier release opens, upgraded, intact."""

from __future__ import annotations

import sqlite3

import pytest

from receiver import schema
from receiver.journal import Journal
from receiver.versions import Versions
from receiver.vocabulary import JobState, LoadState
from tests.helpers import FIXTURES

RELEASE_0_1 = FIXTURES / "journal" / "release-0.1.sql"


def journal_of_release_0_1(tmp_path):
    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(RELEASE_0_1.read_text())
    return path


def test_a_release_0_1_journal_is_upgraded_with_its_jobs_and_counts(tmp_path):
    path = journal_of_release_0_1(tmp_path)
    journal = Journal(path)
    journal.initialize()
    assert [job.state for job in journal.recent()] == [
        JobState.QUEUED,
        JobState.FAILED,
        JobState.INSTALLED,
    ]
    assert journal.get(2).reason == "not a SavedModel"
    assert journal.counts() == {
        "queued": 1, "running": 0, "installed": 1, "failed": 1, "skipped": 0
    }  # fmt: skip
    # The table release 0.1 lacked is there and in use.
    Versions(journal).installed(
        "mnist", 1, job_id=1, source="gs://b/o#1", size=10, state=LoadState.UNCONFIRMED
    )
    assert Versions(journal).get("mnist", 1).load_state is LoadState.UNCONFIRMED
    # The queued job still runs.
    assert journal.claim("w", 60).id == 3
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)


def test_a_journal_from_before_job_counts_is_counted_once(tmp_path):
    path = journal_of_release_0_1(tmp_path)
    with sqlite3.connect(path) as db:  # as releases before the counts table left it
        db.executescript(
            "DROP TRIGGER job_counts_insert; DROP TRIGGER job_counts_update;"
            " DROP TRIGGER job_counts_delete; DROP TABLE job_counts;"
        )
    journal = Journal(path)
    journal.initialize()
    assert journal.counts()["installed"] == journal.counts()["failed"] == 1


def test_opening_twice_applies_nothing_twice(tmp_path):
    journal = Journal(journal_of_release_0_1(tmp_path))
    journal.initialize()
    journal.initialize()
    assert journal.counts()["queued"] == 1


def test_a_journal_from_a_newer_release_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(schema.MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this release knows"):
        Journal(path).initialize()
