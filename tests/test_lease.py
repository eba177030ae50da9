"""Leases: a worker that stalls past its lease gives the job way and records nothing."""

import contextlib
import threading
import time

from receiver.vocabulary import JobState
from receiver.worker import RetryPolicy, Worker
from tests.helpers import upload_model
from tests.installs import push_with, servable_versions, visible, visible_of_one_version


def test_a_worker_stalled_past_its_lease_gives_way_and_records_nothing(
    proxied, fault_proxy, bucket, token, settings, caplog, monkeypatch
):
    """A's process stalls mid-download (suspended, starved) past its lease; B takes the job
    over and installs it; when A wakes up it abandons its install and overwrites nothing.
    A stalled process renews nothing: its lease keeper is stalled with it."""
    monkeypatch.setattr(
        "receiver.lease.Heartbeat.kept_alive", lambda self: contextlib.nullcontext()
    )
    runtime, client = proxied
    job_id = push_with(client, token, upload_model(bucket, 9))
    stalled = Worker(runtime.journal, runtime.installer, RetryPolicy(3), lease_seconds=0.01)
    successor = Worker(runtime.journal, runtime.installer, RetryPolicy(3))
    fault_proxy.faults = ["hold"]  # A's download pauses halfway; B's goes through
    thread = threading.Thread(target=stalled.run_once)
    thread.start()
    assert fault_proxy.holding.wait(30)
    while time.time() <= runtime.journal.get(job_id).lease_until:  # A's lease runs out
        time.sleep(0.01)
    assert successor.run_once()  # A's lease has run out: B claims the job
    taken_over = runtime.journal.get(job_id)
    assert (taken_over.state, taken_over.owner) == (JobState.INSTALLED, successor.owner)
    fault_proxy.release.set()
    thread.join(30)
    after = runtime.journal.get(job_id)
    assert (after.state, after.owner, after.reason) == (JobState.INSTALLED, successor.owner, None)
    assert servable_versions(settings) == [9]
    assert visible(settings.model_dir / "half_plus_two") == visible_of_one_version(9)
    assert "another worker took this job over" in caplog.text
