"""Sync (bucket -> model dir) and the readiness it leads to (receiver.readiness), against
the real storage emulator."""

import json

import pytest

from receiver.config import Settings
from receiver.download import ObjectStore
from receiver.journal import Journal
from receiver.quarantine import Quarantine
from receiver.readiness import FIRST_SYNC_KEY, readiness, startup
from receiver.status import document, text_report
from receiver.sync import SYNC_JITTER, Syncer, sync, versions_by_model
from tests.helpers import FIXTURES, upload_model


def test_newest_version_per_model(runtime, bucket, settings):
    for model, version in [("a", 1), ("a", 10), ("a", 9), ("b", 3)]:
        upload_model(bucket, version, model=model)
    bucket.blob("models/a/notes.txt").upload_from_string(b"not a model")
    listing = runtime.store.list_objects(bucket.name, settings.prefix)
    found = versions_by_model(listing, settings.prefix)
    assert {model: [t.version for _, t in versions] for model, versions in found.items()} == {
        "a": [10, 9, 1],
        "b": [3],
    }


def test_sync_queues_what_is_missing_and_nothing_else(runtime, bucket, settings):
    upload_model(bucket, 2, model="served")
    upload_model(bucket, 7, model="fresh")
    (settings.model_dir / "served" / "2").mkdir(parents=True)  # already there
    jobs = sync(settings, runtime.store, runtime.journal)
    assert [(job.model, job.version) for job in jobs] == [("fresh", 7)]
    runtime.worker.run_once()
    assert sync(settings, runtime.store, runtime.journal) == []


def test_a_missed_push_is_healed_by_the_next_sync(runtime, bucket, settings):
    upload_model(bucket, 1)
    syncer = Syncer(settings, runtime.store, runtime.journal)
    assert syncer.run_if_due()
    runtime.worker.run_once()
    assert (settings.model_dir / "half_plus_two" / "1" / "saved_model.pb").exists()


def test_a_fleets_periodic_syncs_are_spread_over_a_tenth_of_the_interval(runtime, environ):
    settings = Settings.from_env({**environ, "RECEIVER_SYNC_INTERVAL": "300"})
    fleet = [Syncer(settings, runtime.store, runtime.journal) for _ in range(8)]
    for syncer in fleet:  # each replica's first sync at start, then the next one due
        syncer._at_start, syncer._next_at = True, 0.0
        runtime.journal.set_meta(FIRST_SYNC_KEY, None)
        assert syncer.run_if_due()
    due = [syncer.seconds_to_next() for syncer in fleet]
    assert all(300 * (1 - SYNC_JITTER) - 1 <= seconds <= 300 * (1 + SYNC_JITTER) for seconds in due)
    assert max(due) - min(due) > 1  # not all in the same second
    assert Syncer(
        Settings.from_env({**environ, "RECEIVER_SYNC_INTERVAL": "0"}),
        runtime.store,
        runtime.journal,
    ).interval() == float("inf")


def test_ready_only_after_the_first_sync_installs(runtime, bucket, settings):
    upload_model(bucket, 1)
    ready, reason = readiness(settings, runtime.journal)
    assert (ready, reason) == (False, "the first sync of the bucket has not finished")
    Syncer(settings, runtime.store, runtime.journal).run_if_due()
    ready, reason = readiness(settings, runtime.journal)
    assert not ready and "half_plus_two version 1" in reason
    runtime.worker.run_once()
    assert readiness(settings, runtime.journal) == (True, "ready")


def test_ready_at_once_when_the_bucket_is_empty(runtime, settings):
    Syncer(settings, runtime.store, runtime.journal).run_if_due()
    assert json.loads(runtime.journal.get_meta(FIRST_SYNC_KEY)) == []
    assert readiness(settings, runtime.journal)[0]


def test_without_sync_on_start_ready_needs_only_a_writable_model_dir(environ, tmp_path):
    settings = Settings.from_env({**environ, "RECEIVER_SYNC_ON_START": "false"})
    settings.model_dir.mkdir(parents=True)
    journal = Journal(tmp_path / "j.sqlite3")
    journal.initialize()
    assert readiness(settings, journal) == (True, "ready (no sync at start)")


def test_an_unreachable_bucket_leaves_the_receiver_unready(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    journal = Journal(tmp_path / "j.sqlite3")
    journal.initialize()
    settings.model_dir.mkdir(parents=True)
    syncer = Syncer(settings, ObjectStore.from_environment(), journal)
    assert not syncer.run_if_due()
    assert not syncer.run_if_due()  # backing off: not due again yet
    assert not readiness(settings, journal)[0]


@pytest.mark.parametrize("interval", ["0", "30"])
def test_sync_runs_again_only_with_an_interval(runtime, environ, interval):
    settings = Settings.from_env({**environ, "RECEIVER_SYNC_INTERVAL": interval})
    syncer = Syncer(settings, runtime.store, runtime.journal)
    assert syncer.run_if_due()
    assert not syncer.run_if_due()  # neither is due again right away


def test_a_missing_model_dir_is_not_ready(environ, tmp_path):
    settings = Settings.from_env({**environ, "RECEIVER_MODEL_DIR": str(tmp_path / "gone")})
    journal = Journal(tmp_path / "j.sqlite3")
    journal.initialize()
    ready, reason = readiness(settings, journal)
    assert not ready and "does not exist" in reason


def run_until_idle(runtime):
    """What the install thread does: sync when due, run jobs, until nothing is left."""
    while runtime.worker.syncer.run_if_due() or runtime.worker.run_once():
        pass


def sync_notes(runtime) -> dict:
    """What /status says about models that are not on their newest version."""
    notes = document(runtime.settings, runtime.journal, runtime.quarantine)["sync_notes"]
    assert isinstance(notes, dict)
    return notes


def upload_broken(bucket, version):
    """A version that can never install: a tarball of config files, not a SavedModel."""
    upload_model(bucket, version, source=FIXTURES / "tfserving_configs")


def test_a_broken_newest_version_falls_back_to_the_newest_that_installs(
    runtime, bucket, settings, caplog
):
    upload_model(bucket, 4)
    upload_broken(bucket, 5)
    upload_broken(bucket, 6)
    run_until_idle(runtime)
    assert sorted(p.name for p in (settings.model_dir / "half_plus_two").iterdir()) == ["4"]
    assert readiness(settings, runtime.journal) == (True, "ready")
    note = sync_notes(runtime)["half_plus_two"]
    assert "version 6 failed: not a SavedModel" in note
    assert "version 5 failed: not a SavedModel" in note
    assert "falling back to version 4" in caplog.text
    # Later syncs keep saying why the model is not on its newest version.
    runtime.worker.syncer.model_failed("half_plus_two")  # (only due when a model is dark)
    assert sync(settings, runtime.store, runtime.journal) == []
    assert "serving version 4" in sync_notes(runtime)["half_plus_two"]


def test_a_model_without_an_installable_version_is_not_ready_and_leaves_no_empty_dir(
    runtime, bucket, settings
):
    upload_model(bucket, 1, model="fine")
    upload_broken(bucket, 5)
    run_until_idle(runtime)
    ready, reason = readiness(settings, runtime.journal)
    assert not ready
    assert "no version installed for half_plus_two" in reason
    assert "version 5 failed: not a SavedModel" in reason
    assert sorted(p.name for p in settings.model_dir.iterdir()) == ["fine"]


def test_a_model_without_an_installable_version_does_not_hold_back_startup(
    runtime, bucket, settings
):
    # What the sidecar's startup probe asks: TF Serving starts on "fine"; "half_plus_two"
    # (nothing installable) is named, and does not keep the pod from starting.
    upload_model(bucket, 1, model="fine")
    upload_broken(bucket, 5)
    Syncer(settings, runtime.store, runtime.journal).run_if_due()
    started, reason = startup(settings, runtime.journal)
    assert not started and "installing what the first sync found" in reason
    run_until_idle(runtime)
    started, reason = startup(settings, runtime.journal)
    assert started
    assert "no version installed for half_plus_two" in reason
    assert not readiness(settings, runtime.journal)[0]


def test_startup_waits_for_the_first_sync_and_a_writable_model_dir(environ, tmp_path):
    settings = Settings.from_env({**environ, "RECEIVER_MODEL_DIR": str(tmp_path / "gone")})
    journal = Journal(tmp_path / "j.sqlite3")
    journal.initialize()
    started, reason = startup(settings, journal)
    assert not started and "does not exist" in reason
    settings.model_dir.mkdir(parents=True)
    assert startup(settings, journal) == (False, "the first sync of the bucket has not finished")


def test_the_sync_at_start_runs_once_whichever_worker_process_is_first(runtime, bucket, settings):
    upload_model(bucket, 1)
    first = Syncer(settings, runtime.store, runtime.journal)
    second = Syncer(settings, runtime.store, runtime.journal)  # the other gunicorn worker
    assert first.run_if_due()
    upload_model(bucket, 2)  # published after the start's sync: its push will queue it
    assert not second.run_if_due()
    assert [(job.model, job.version) for job in runtime.journal.recent()] == [("half_plus_two", 1)]


class CountingStore(ObjectStore):
    """The real store, counting how often the bucket is listed."""

    listings = 0

    def list_objects(self, bucket, prefix):
        CountingStore.listings += 1
        return super().list_objects(bucket, prefix)


def test_a_failing_sync_says_why_everywhere_and_is_tried_by_one_process(
    environ, emulator, monkeypatch
):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    settings = Settings.from_env({**environ, "RECEIVER_SOURCE": "gs://no-such-bucket-here/models"})
    journal = Journal(settings.state_dir / "journal.sqlite3")
    journal.initialize()
    settings.model_dir.mkdir(parents=True)
    store = CountingStore.from_environment()
    CountingStore.listings = 0
    first, second = Syncer(settings, store, journal), Syncer(settings, store, journal)
    assert not first.run_if_due()
    assert not second.run_if_due()  # the first one's failure holds it off: no second listing
    assert CountingStore.listings == 1
    started, reason = startup(settings, journal)
    assert not started
    assert reason.startswith("the first sync of the bucket has not finished: it failed (")
    assert reason.endswith(
        "(cannot list gs://no-such-bucket-here/models/: bucket gs://no-such-bucket-here does "
        "not exist (or this identity cannot see it)); trying again"
    ), reason  # what /readyz answers: the bucket named, not Cloud Storage's raw 404
    body = document(settings, journal, Quarantine(settings.state_dir / "q"))
    assert "cannot list gs://no-such-bucket-here/models/" in str(body["last_sync_error"])
    assert "last sync failed at 20" in text_report(settings, journal, 5)


def test_a_restarted_receiver_on_a_volume_that_had_started_passes_startup_at_once(
    runtime, bucket, settings
):
    """A sidecar's container restart (OOM, liveness) in a running pod: TF Serving beside it
    serves what is on the volume; the pod must not leave service until the bucket answers."""
    upload_model(bucket, 1)
    Syncer(settings, runtime.store, runtime.journal).run_if_due()
    runtime.worker.run_once()
    assert startup(settings, runtime.journal)[0]
    runtime.journal.set_meta(FIRST_SYNC_KEY, None)  # what a restart does (prepare_host)
    assert startup(settings, runtime.journal) == (
        True,
        "started (an earlier start on this volume had passed)",
    )
