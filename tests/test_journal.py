import multiprocessing
import time
from pathlib import Path

from receiver.journal import Journal
from receiver.layout import ModelVersion
from receiver.objectref import ObjectRef
from receiver.vocabulary import JobState


def stored(generation: int = 1, name: str = "p/m/1.tar.gz") -> ObjectRef:
    return ObjectRef(bucket="b", name=name, generation=generation, crc32c="AAAAAA==")


TARGET = ModelVersion("m", 1, "tar.gz")


def journal_at(path: Path) -> Journal:
    journal = Journal(path / "journal.sqlite3")
    journal.initialize()
    return journal


def test_one_job_per_object_generation(tmp_path):
    journal = journal_at(tmp_path)
    first, created = journal.enqueue(stored(), TARGET)
    again, created_again = journal.enqueue(stored(), TARGET)
    newer, created_newer = journal.enqueue(stored(generation=2), TARGET)
    assert (created, created_again, created_newer) == (True, False, True)
    assert again.id == first.id != newer.id


def test_a_duplicate_uses_up_no_job_number(tmp_path):
    # Two workers' syncs at start both offer version 1: the next push is still job 2.
    journal = journal_at(tmp_path)
    journal.enqueue(stored(), TARGET)
    journal.enqueue(stored(), TARGET)
    following, _ = journal.enqueue(stored(name="p/m/2.tar.gz"), ModelVersion("m", 2, "tar.gz"))
    assert following.id == 2


def test_jobs_survive_a_restart(tmp_path):
    job, _ = journal_at(tmp_path).enqueue(stored(), TARGET)
    reopened = journal_at(tmp_path)
    assert reopened.get(job.id) == job
    assert reopened.counts()["queued"] == 1


def test_a_claimed_job_is_not_claimed_twice(tmp_path):
    journal = journal_at(tmp_path)
    journal.enqueue(stored(), TARGET)
    assert journal.claim("a", lease_seconds=60) is not None
    assert journal.claim("b", lease_seconds=60) is None


def test_an_expired_lease_lets_another_worker_take_over(tmp_path):
    journal = journal_at(tmp_path)
    journal.enqueue(stored(), TARGET)
    first = journal.claim("dead-worker", lease_seconds=0.01)
    time.sleep(0.05)
    second = journal.claim("live-worker", lease_seconds=60)
    assert second is not None and second.id == first.id
    assert (second.owner, second.attempts) == ("live-worker", 2)
    assert not journal.heartbeat(first.id, "dead-worker", 10, 60)


def test_a_worker_that_lost_its_lease_cannot_record_anything(tmp_path):
    journal = journal_at(tmp_path)
    job, _ = journal.enqueue(stored(), TARGET)
    journal.claim("stalled", lease_seconds=0.01)
    time.sleep(0.05)
    journal.claim("successor", lease_seconds=60)
    assert not journal.finish(job.id, "stalled", JobState.FAILED, "too late")
    assert not journal.retry_later(job.id, "stalled", "too late", 0)
    assert not journal.release(job.id, "stalled")
    assert journal.finish(job.id, "successor", JobState.INSTALLED)
    assert not journal.finish(job.id, "stalled", JobState.FAILED, "too late")
    after = journal.get(job.id)
    assert (after.state, after.owner, after.reason) == (JobState.INSTALLED, "successor", None)


def test_retry_later_waits_before_the_job_is_claimable(tmp_path):
    journal = journal_at(tmp_path)
    job, _ = journal.enqueue(stored(), TARGET)
    journal.claim("w", 60)
    journal.retry_later(job.id, "w", "storage 503", delay_seconds=3600)
    assert journal.claim("w", 60) is None
    assert journal.get(job.id).reason == "storage 503"


def test_release_running_requeues_interrupted_jobs(tmp_path):
    journal = journal_at(tmp_path)
    job, _ = journal.enqueue(stored(), TARGET)
    journal.claim("w", 3600)
    assert journal.release_running() == 1
    assert journal.get(job.id).state is JobState.QUEUED


def test_requeue_resets_a_failed_job(tmp_path):
    journal = journal_at(tmp_path)
    job, _ = journal.enqueue(stored(), TARGET)
    journal.claim("w", 60)
    journal.finish(job.id, "w", JobState.FAILED, "corrupt archive")
    again = journal.requeue(job.id)
    assert (again.state, again.attempts, again.reason) == (JobState.QUEUED, 0, None)
    assert journal.requeue(999) is None


def _claim_in_process(path: str, barrier, results) -> None:
    journal = Journal(Path(path))
    barrier.wait()
    job = journal.claim(f"process-{multiprocessing.current_process().pid}", 60)
    results.put(job.id if job else None)


def test_concurrent_processes_claim_each_job_once(tmp_path):
    journal = journal_at(tmp_path)
    for generation in range(3):
        journal.enqueue(stored(generation=generation + 1), TARGET)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(6), context.Queue()
    processes = [
        context.Process(target=_claim_in_process, args=(str(journal.path), barrier, results))
        for _ in range(6)
    ]
    for process in processes:
        process.start()
    claimed = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join()
    assert sorted(c for c in claimed if c is not None) == [1, 2, 3]
    assert claimed.count(None) == 3


def test_old_finished_jobs_are_forgotten_and_nothing_else(tmp_path):
    journal = journal_at(tmp_path)
    old_done, _ = journal.enqueue(stored(generation=1), TARGET)
    old_queued, _ = journal.enqueue(stored(generation=2), TARGET)
    new_done, _ = journal.enqueue(stored(generation=3), TARGET)
    for job in (old_done, new_done):
        assert journal.claim("w", 60, job_id=job.id)
        assert journal.finish(job.id, "w", JobState.INSTALLED)
    db = journal._connection()
    db.execute(
        "UPDATE jobs SET updated_at = updated_at - 40 * 86400 WHERE id IN (?, ?)",
        (old_done.id, old_queued.id),
    )
    assert journal.forget_finished(30 * 86400) == 1
    assert journal.get(old_done.id) is None
    assert journal.get(old_queued.id) is not None  # still to do: never forgotten
    assert journal.get(new_done.id) is not None


def test_counts_follow_every_change(tmp_path):
    journal = journal_at(tmp_path)
    for generation in (1, 2, 3):
        journal.enqueue(stored(generation=generation), TARGET)
    job = journal.claim("w", 60)
    journal.finish(job.id, "w", JobState.FAILED, "corrupt")
    journal.claim("w", 60)
    expected = {"queued": 1, "running": 1, "installed": 0, "failed": 1, "skipped": 0}
    assert journal.counts() == expected
    journal.forget_finished(-1)
    assert journal.counts() == {**expected, "failed": 0}
