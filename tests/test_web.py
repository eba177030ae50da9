"""The HTTP contract: status codes and bodies as Pub/Sub and an operator see them."""

import json
import re
from pathlib import Path

import pytest

from receiver import quarantine
from receiver.config import Settings
from receiver.errors import ConfigError
from receiver.web import create_app
from tests.helpers import push_body, upload_model


def test_factory_refuses_bad_settings():
    with pytest.raises(ConfigError, match="RECEIVER_SOURCE"):
        create_app(Settings.from_env({}))


def test_healthz(client):
    assert client.get("/healthz").status_code == 200


def test_the_push_has_its_own_path_and_post_slash_still_works(client, bucket, token, runtime):
    headers = {"Authorization": f"Bearer {token()}"}
    first = client.post("/push", data=push_body(upload_model(bucket, 1)), headers=headers)
    again = client.post("/", data=push_body(upload_model(bucket, 2)), headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert [job.version for job in runtime.journal.recent()] == [2, 1]
    assert client.get("/push").status_code == 405  # an ingress exposing /push shows nothing


def test_a_refused_push_on_push_path_is_401_and_counted(client, bucket):
    before = _metric(client, "receiver_auth_failures_total")
    response = client.post("/push", data=push_body(upload_model(bucket, 1)))
    assert response.status_code == 401
    assert _metric(client, "receiver_auth_failures_total") == before + 1


def _metric(client, name: str) -> float:
    lines = client.get("/metrics").get_data(as_text=True).splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(name + "{"))


def test_startupz_is_503_until_the_first_sync_then_200(client, runtime):
    response = client.get("/startupz")
    assert response.status_code == 503
    assert response.get_json() == {
        "started": False,
        "reason": "the first sync of the bucket has not finished",
    }
    runtime.worker.syncer.run_if_due()  # an empty bucket: nothing to install
    assert client.get("/startupz").get_json() == {"started": True, "reason": "started"}


def test_queued_push_answers_202_with_the_job(client, bucket, push, runtime):
    response = push(upload_model(bucket, 123))
    assert response.status_code == 202
    body = response.get_json()
    assert body["outcome"] == "queued"
    assert (body["model"], body["version"]) == ("half_plus_two", 123)
    assert runtime.journal.get(body["job"]) is not None


def test_duplicate_pushes_are_acknowledged_without_a_second_job(client, bucket, push, runtime):
    blob = upload_model(bucket, 123)
    first = push(blob, message_id="1")
    again = push(blob, message_id="2")  # Cloud Storage republished: new message id
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["outcome"] == "duplicate"
    assert again.get_json()["job"] == first.get_json()["job"]
    assert runtime.journal.counts()["queued"] == 1


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m["attributes"].update(bucketId="some-other-bucket"), "not the source bucket"),
        (lambda m: m["attributes"].update(eventType="OBJECT_DELETE"), "RECEIVER_ON_DELETE=ignore"),
        (lambda m: m["attributes"].update(eventType="OBJECT_METADATA_UPDATE"), "not an upload"),
        (lambda m: m["attributes"].update(objectId="models/readme.txt"), "is not named"),
        (lambda m: m["attributes"].update(objectId="elsewhere/m/1.tar"), "outside the prefix"),
    ],
)
def test_events_that_are_not_ours_are_acknowledged_and_ignored(
    client, bucket, token, runtime, mutate, reason
):
    envelope = json.loads(push_body(upload_model(bucket, 1)))
    mutate(envelope["message"])
    response = client.post("/", json=envelope, headers={"Authorization": f"Bearer {token()}"})
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "ignored"
    assert reason in response.get_json()["reason"]
    assert runtime.journal.recent() == []


def test_malformed_envelope_is_acknowledged_as_rejected_and_quarantined(client, token, runtime):
    body = b'{"message": {"attributes": {"hello": "world"}}}'
    response = client.post(
        "/",
        data=body,
        headers={"Authorization": f"Bearer {token()}"},
        content_type="application/json",
    )
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["outcome"] == "rejected"
    assert "not a Cloud Storage notification" in answer["reason"]
    (kept,) = runtime.quarantine.directory.glob("*.json")
    record = json.loads(kept.read_text())
    assert record["body"] == body.decode()
    assert "Authorization" not in record["headers"]
    status = client.get("/status").get_json()
    assert status["quarantine"]["count"] == 1
    assert status["quarantine"]["recent"][0]["reason"] == answer["reason"]


def test_quarantine_is_bounded(client, token, runtime):
    for _ in range(quarantine.MAX_ENTRIES + 5):
        runtime.quarantine.keep(b"x", {}, "test")
    assert runtime.quarantine.count() == quarantine.MAX_ENTRIES


def test_unauthenticated_garbage_is_401_not_quarantined(client, runtime):
    response = client.post("/", data=b"not json")
    assert response.status_code == 401
    assert runtime.quarantine.count() == 0


def test_body_over_16_mib_is_413(client, token):
    response = client.post(
        "/", data=b"x" * (16 * 1024 * 1024 + 1), headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status_code == 413
    assert response.get_json()["outcome"] == "too_large"


def test_unreachable_certs_endpoint_is_503(client, bucket, token, certs_endpoint):
    certs_endpoint.failing = True
    response = client.post(
        "/", data=push_body(upload_model(bucket, 1)), headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status_code == 503
    assert "certs" in response.get_json()["reason"]


def test_status_lists_models_jobs_and_auth_mode(client, bucket, push, runtime):
    push(upload_model(bucket, 123))
    runtime.worker.run_once()
    status = client.get("/status").get_json()
    assert status["auth"] == "google"
    assert "warning" not in status
    assert status["models"] == {"half_plus_two": [123]}
    job = status["recent_jobs"][0]
    assert (job["state"], job["model"], job["version"]) == ("installed", "half_plus_two", 123)


def test_auth_off_is_announced_in_every_status(environ, bucket):
    app = create_app(Settings.from_env({**environ, "RECEIVER_AUTH": "none"}))
    client = app.test_client()
    response = client.post("/", data=push_body(upload_model(bucket, 1)))
    assert response.status_code == 202
    status = client.get("/status").get_json()
    assert status["auth"] == "none"
    assert "authentication is OFF" in status["warning"]


def test_status_page_shows_models_jobs_and_failures(client, bucket, push, runtime):
    push(upload_model(bucket, 123))
    runtime.worker.run_once()
    broken = bucket.blob("models/broken/1.tar.gz")
    broken.upload_from_string(b"not an archive")
    push(broken)
    runtime.worker.run_once()
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '<tr data-model="half_plus_two" data-version="123"><td>half_plus_two</td>' in html
    assert "loads are not confirmed" in html
    # A failure's reason wraps in its own cell (the reasons are what an operator came for).
    assert re.search(r'<td class="reason">[^<]*corrupt tar archive', html), html
    assert "Authentication is off" not in html


def test_status_page_warns_when_auth_is_off(environ):
    app = create_app(Settings.from_env({**environ, "RECEIVER_AUTH": "none"}))
    html = app.test_client().get("/").get_data(as_text=True)
    assert "Authentication is off" in html


def test_readiness_gives_no_details_while_the_pages_are_hidden(environ):
    hidden = create_app(Settings.from_env({**environ, "RECEIVER_EXPOSE_STATUS": "false"}))
    shown = create_app(Settings.from_env(environ))
    model_dir = Path(environ["RECEIVER_MODEL_DIR"])
    model_dir.rmdir()  # not ready, for a reason that names the path
    response = hidden.test_client().get("/readyz")
    assert (response.status_code, response.json) == (503, {"ready": False, "reason": "not ready"})
    details = shown.test_client().get("/readyz").get_json()
    assert str(model_dir) in details["reason"]


def test_an_unexpected_error_in_a_route_is_json_and_its_traceback_is_logged(settings, caplog):
    app = create_app(settings)

    def broken() -> str:
        raise RuntimeError("secret detail /models/x")

    app.add_url_rule("/broken", view_func=broken)  # any route's bug, as the handler sees it
    response = app.test_client().get("/broken")
    body = response.get_json()
    assert (response.status_code, body["outcome"]) == (500, "error")
    assert "log" in body["reason"] and "secret" not in body["reason"]
    logged = [r for r in caplog.records if r.exc_info and "secret detail" in str(r.exc_info[1])]
    assert logged


def test_werkzeugs_own_answers_are_json_too(client):
    for response in (client.get("/no-such-page"), client.delete("/")):
        body = response.get_json()
        assert response.status_code in (404, 405)
        assert body["outcome"] == "error" and body["reason"]


def test_json_nested_too_deep_is_rejected_and_acknowledged(client, token):
    body = b"[" * 100_000 + b"]" * 100_000
    response = client.post("/push", data=body, headers={"Authorization": f"Bearer {token()}"})
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "rejected"
    assert "nested too deep" in response.get_json()["reason"]


def test_startupz_gives_no_details_while_the_pages_are_hidden(environ):
    app = create_app(Settings.from_env({**environ, "RECEIVER_EXPOSE_STATUS": "false"}))
    answer = app.test_client().get("/startupz").get_json()
    assert answer["reason"] in ("started", "not started")
