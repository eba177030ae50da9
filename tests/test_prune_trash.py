"""What a prune leaves for later (hidden `.trash-…` versions) must not cost the next install
its room, whichever worker process runs that install."""

import threading

from receiver import capacity, modeldir
from receiver.config import Settings
from receiver.vocabulary import JobState
from receiver.web import create_app
from tests.helpers import upload_model
from tests.installs import push_with


def worker_process(environ, **overrides):
    """One gunicorn worker process's runtime: its own journal connection, rollout, worker."""
    app = create_app(Settings.from_env({**environ, "RECEIVER_RETRY_DELAY": "0", **overrides}))
    return app.extensions["receiver"], app.test_client()


def test_the_push_after_an_acknowledged_install_finds_the_room_the_prune_made(
    environ, bucket, token, monkeypatch
):
    """RECEIVER_KEEP_VERSIONS=2 on a volume sized for two kept versions plus one installing
    (docs/deploying.md#disk). A publisher waits for version 3's install (RECEIVER_ACK=
    installed), then publishes 4; the push lands on the other worker process (gunicorn's
    default is two) while the first is still deleting the version 3's prune replaced."""
    before, before_client = worker_process(environ)
    for version in (1, 2):
        push_with(before_client, token, upload_model(bucket, version))
        assert before.worker.run_once()
    kept = capacity.tree_bytes(before.settings.model_dir)
    # Room for one more version (half_plus_two: 12 KiB on disk, a 30 KiB tar), not two.
    limit = str(kept + 36_000)
    first, first_client = worker_process(environ, RECEIVER_VOLUME_SIZE_LIMIT=limit)
    second, second_client = worker_process(environ, RECEIVER_VOLUME_SIZE_LIMIT=limit)
    push_with(first_client, token, upload_model(bucket, 3))

    deleting = threading.Event()
    release = threading.Event()
    empty_trash = modeldir.empty_trash

    def slow_in_the_first_process(model_root):
        pruned = any(model_root.glob(".trash-*"))
        if pruned and threading.current_thread() is thread:
            deleting.set()
            release.wait(120)  # a gigabyte's deletion takes a while
        empty_trash(model_root)

    monkeypatch.setattr(modeldir, "empty_trash", slow_in_the_first_process)
    thread = threading.Thread(target=first.worker.run_once)
    thread.start()
    try:
        while not deleting.wait(0.1):
            assert thread.is_alive(), "the first process pruned nothing"
        (three,) = [j for j in first.journal.recent() if j.version == 3]
        assert three.state is JobState.INSTALLED  # the waiting push has its answer
        job_id = push_with(second_client, token, upload_model(bucket, 4))
        assert second.worker.run_once()
        four = second.journal.get(job_id)
        assert four.state is JobState.INSTALLED, four.reason
    finally:
        release.set()
        thread.join()


def test_trash_a_dead_worker_process_left_is_deleted_by_the_next_install(environ, bucket, token):
    """A worker process killed between its prune and the deletion (gunicorn forks a new
    one; only the master's start sweeps debris): the next install, in any process, deletes
    the trash before it measures its room, rather than the volume carrying it till a restart."""
    dead, dead_client = worker_process(environ)
    dead.installer.rollout.empty_trash = lambda: None  # killed before it got there
    for version in (1, 2, 3):
        push_with(dead_client, token, upload_model(bucket, version))
        assert dead.worker.run_once()
    model_root = dead.settings.model_dir / "half_plus_two"
    assert [p.name[:9] for p in model_root.glob(".trash-*")] == [".trash-1-"]
    forked, forked_client = worker_process(environ)
    push_with(forked_client, token, upload_model(bucket, 1, model="other_model"))
    assert forked.worker.run_once()
    assert sorted(p.name for p in model_root.iterdir()) == ["2", "3"]
