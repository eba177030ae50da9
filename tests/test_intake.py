"""What each event means: deletes, overwrites, out-of-order versions (through the HTTP API)."""

import json
import threading

import pytest

from receiver.config import Settings
from receiver.vocabulary import JobState
from receiver.web import create_app
from tests.helpers import push_body, same_files, upload_model


@pytest.fixture
def removing(environ):
    """A receiver configured with RECEIVER_ON_DELETE=remove, and a way to push to it."""
    app = create_app(Settings.from_env({**environ, "RECEIVER_ON_DELETE": "remove"}))
    return app.extensions["receiver"], app.test_client()


def send(client, token, blob, event_type="OBJECT_FINALIZE", **attributes):
    envelope = json.loads(push_body(blob, event_type=event_type))
    envelope["message"]["attributes"].update(attributes)
    return client.post("/", json=envelope, headers={"Authorization": f"Bearer {token()}"})


def install(runtime, client, token, blob):
    assert send(client, token, blob).status_code == 202
    runtime.worker.run_once()


def versions(settings):
    return sorted(p.name for p in (settings.model_dir / "half_plus_two").iterdir())


def test_delete_withdraws_the_version_that_object_installed(removing, bucket, token, settings):
    runtime, client = removing
    first, second = upload_model(bucket, 1), upload_model(bucket, 2)
    install(runtime, client, token, first)
    install(runtime, client, token, second)
    response = send(client, token, second, "OBJECT_DELETE")
    assert (response.status_code, response.get_json()["outcome"]) == (200, "removed")
    assert versions(settings) == ["1"]


def test_archive_withdraws_too(removing, bucket, token, settings):
    runtime, client = removing
    first, second = upload_model(bucket, 1), upload_model(bucket, 2)
    install(runtime, client, token, first)
    install(runtime, client, token, second)
    assert send(client, token, first, "OBJECT_ARCHIVE").get_json()["outcome"] == "removed"
    assert versions(settings) == ["2"]


def test_the_last_version_is_never_removed(removing, bucket, token, settings):
    runtime, client = removing
    only = upload_model(bucket, 1)
    install(runtime, client, token, only)
    response = send(client, token, only, "OBJECT_DELETE")
    assert (response.status_code, response.get_json()["outcome"]) == (200, "ignored")
    assert "last one" in response.get_json()["reason"]
    assert same_files(settings.model_dir / "half_plus_two" / "1")


def test_a_delete_caused_by_an_overwrite_is_not_a_withdrawal(removing, bucket, token, settings):
    runtime, client = removing
    first, second = upload_model(bucket, 1), upload_model(bucket, 2)
    install(runtime, client, token, first)
    install(runtime, client, token, second)
    response = send(client, token, second, "OBJECT_DELETE", overwrittenByGeneration="999")
    assert "overwrite" in response.get_json()["reason"]
    assert versions(settings) == ["1", "2"]


def test_deleting_the_object_of_a_refused_overwrite_withdraws_its_version(
    removing, bucket, token, settings
):
    """124 installed from generation 1; generation 2 refused (versions are immutable); then
    the object is deleted: the bucket no longer has a 124, so neither does TF Serving."""
    runtime, client = removing
    install(runtime, client, token, upload_model(bucket, 123))
    install(runtime, client, token, upload_model(bucket, 124))
    overwrite = upload_model(bucket, 124)  # a new generation of the same object
    install(runtime, client, token, overwrite)
    assert "immutable" in runtime.journal.recent(1)[0].reason
    response = send(client, token, overwrite, "OBJECT_DELETE")
    assert (response.status_code, response.get_json()["outcome"]) == (200, "removed")
    assert versions(settings) == ["123"]


def test_delete_of_another_object_naming_the_same_version_leaves_it(
    removing, bucket, token, settings
):
    runtime, client = removing
    install(runtime, client, token, upload_model(bucket, 1))
    install(runtime, client, token, upload_model(bucket, 2))
    other = upload_model(bucket, 2, archive_format="zip")  # also names version 2
    response = send(client, token, other, "OBJECT_DELETE")
    assert response.get_json()["outcome"] == "ignored"
    assert "not installed from this object" in response.get_json()["reason"]
    assert versions(settings) == ["1", "2"]


def test_deletes_are_ignored_by_default(client, runtime, bucket, token, settings):
    first, second = upload_model(bucket, 1), upload_model(bucket, 2)
    install(runtime, client, token, first)
    install(runtime, client, token, second)
    response = send(client, token, second, "OBJECT_DELETE")
    assert "RECEIVER_ON_DELETE=ignore" in response.get_json()["reason"]
    assert versions(settings) == ["1", "2"]


def test_a_version_older_than_everything_kept_is_skipped(client, runtime, bucket, token, settings):
    for version in (5, 6):
        install(runtime, client, token, upload_model(bucket, version))
    response = send(client, token, upload_model(bucket, 3))
    assert (response.status_code, response.get_json()["outcome"]) == (200, "skipped")
    assert "RECEIVER_KEEP_VERSIONS=2" in response.get_json()["reason"]
    assert runtime.journal.counts()["queued"] == 0
    assert versions(settings) == ["5", "6"]


def test_an_older_version_still_installs_while_there_is_room(
    client, runtime, bucket, token, settings
):
    install(runtime, client, token, upload_model(bucket, 6))
    install(runtime, client, token, upload_model(bucket, 3))
    assert versions(settings) == ["3", "6"]


@pytest.fixture
def removing_proxied(environ, fault_proxy, monkeypatch):
    """RECEIVER_ON_DELETE=remove, its storage traffic through the fault proxy."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fault_proxy.url)
    app = create_app(Settings.from_env({**environ, "RECEIVER_ON_DELETE": "remove"}))
    return app.extensions["receiver"], app.test_client()


def test_a_delete_during_the_install_withdraws_the_version_when_it_ends(
    removing_proxied, fault_proxy, bucket, token, settings
):
    runtime, client = removing_proxied
    install(runtime, client, token, upload_model(bucket, 1))
    second = upload_model(bucket, 2)
    assert send(client, token, second).status_code == 202
    fault_proxy.faults = ["hold"]  # the download of version 2 pauses halfway
    worker = threading.Thread(target=runtime.worker.run_once)
    worker.start()
    assert fault_proxy.holding.wait(30)
    response = send(client, token, second, "OBJECT_DELETE")
    assert (response.status_code, response.get_json()["outcome"]) == (202, "withdrawing")
    fault_proxy.release.set()
    worker.join(60)
    (job, _) = runtime.journal.recent(2)
    assert job.version == 2 and job.state is JobState.SKIPPED, job.reason
    assert job.reason == "its object was deleted while it installed; withdrawn"
    assert versions(settings) == ["1"]


def test_a_delete_before_the_install_starts_skips_it(removing, bucket, token, settings):
    runtime, client = removing
    install(runtime, client, token, upload_model(bucket, 1))
    second = upload_model(bucket, 2)
    assert send(client, token, second).status_code == 202
    assert send(client, token, second, "OBJECT_DELETE").get_json()["outcome"] == "withdrawing"
    runtime.worker.run_once()
    job = runtime.journal.recent(1)[0]
    assert (job.state, job.reason) == (
        JobState.SKIPPED,
        "its object was deleted before it was installed",
    )
    assert versions(settings) == ["1"]


def test_a_model_named_like_the_state_dir_is_never_installed_into_it(environ, bucket, token):
    models = environ["RECEIVER_MODEL_DIR"]
    app = create_app(Settings.from_env({**environ, "RECEIVER_STATE_DIR": f"{models}/state"}))
    runtime, client = app.extensions["receiver"], app.test_client()
    response = send(client, token, upload_model(bucket, 1, model="state"))
    assert (response.status_code, response.get_json()["outcome"]) == (200, "ignored")
    assert "RECEIVER_STATE_DIR" in response.get_json()["reason"]
    runtime.worker.syncer.run_if_due()
    assert runtime.journal.recent() == []
    assert not (runtime.settings.state_dir / "1").exists()
