"""Metrics as Prometheus scrapes them, after real installs and real auth failures."""

from prometheus_client.parser import text_string_to_metric_families

from receiver.config import Settings
from receiver.versions import Versions
from receiver.vocabulary import LoadState
from receiver.web import create_app
from tests.helpers import push_body, upload_model


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delta(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_an_install_and_an_auth_failure_are_counted(client, runtime, bucket, push, settings):
    before = scrape(client)
    push(upload_model(bucket, 123))
    runtime.worker.run_once()
    client.post("/", data=b"{}", headers={"Authorization": "Bearer nonsense"})
    client.post("/", data=b"{}")
    after = scrape(client)

    assert (
        delta(before, after, "receiver_pushes_total", format="pubsub-push", outcome="queued") == 1
    )
    assert delta(before, after, "receiver_auth_failures_total", reason="malformed_token") == 1
    assert delta(before, after, "receiver_auth_failures_total", reason="missing_token") == 1
    assert delta(before, after, "receiver_jobs_finished_total", state="installed") == 1
    assert delta(before, after, "receiver_install_duration_seconds_count") == 1
    assert delta(before, after, "receiver_install_bytes_sum") == upload_model_size(bucket)
    assert delta(before, after, "receiver_download_bytes_per_second_count") == 1
    assert after[("receiver_jobs", (("state", "installed"),))] == 1
    assert after[("receiver_journal_depth", ())] == 0
    assert after[("receiver_installed_version", (("model", "half_plus_two"),))] == 123


def upload_model_size(bucket):
    return bucket.get_blob("models/half_plus_two/123.tar.gz").size


def test_journal_depth_counts_waiting_jobs(client, bucket, push):
    push(upload_model(bucket, 1))
    push(upload_model(bucket, 2))
    assert scrape(client)[("receiver_journal_depth", ())] == 2


def test_last_sync_time_is_exported(client, runtime, bucket):
    runtime.worker.syncer.run_if_due()
    assert scrape(client)[("receiver_last_sync_timestamp_seconds", ())] > 0


def test_pages_can_be_hidden_for_an_internet_facing_endpoint(environ, bucket, token):
    app = create_app(Settings.from_env({**environ, "RECEIVER_EXPOSE_STATUS": "false"}))
    client = app.test_client()
    for path in ("/", "/status", "/metrics"):
        assert client.get(path).status_code == 404
    response = client.post(
        "/", data=push_body(upload_model(bucket, 1)), headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status_code == 202
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)


def test_each_model_reports_its_installed_generation_and_available_version(
    client, runtime, bucket, push
):
    blob = upload_model(bucket, 123)
    push(blob)
    runtime.worker.run_once()
    samples = scrape(client)
    model = (("model", "half_plus_two"),)
    assert samples[("receiver_installed_generation", model)] == blob.generation
    assert ("receiver_available_version", model) not in samples  # TF Serving has not said
    Versions(runtime.journal).set_state("half_plus_two", 123, LoadState.AVAILABLE)
    assert scrape(client)[("receiver_available_version", model)] == 123


def test_a_version_placed_by_hand_is_counted_as_status_lists_it(client, settings):
    placed = settings.model_dir / "half_plus_two" / "7"
    placed.mkdir(parents=True)
    (placed / "saved_model.pb").write_bytes(b"graph")
    key = (
        "receiver_serving_state",
        (("model", "half_plus_two"), ("state", "unrecorded"), ("version", "7")),
    )
    assert scrape(client)[key] == 1
