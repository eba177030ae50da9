"""The routes' parse, call and map, fast: an app on a prepared runtime (`create_app(runtime=…)`)
with its journal and model dir in tmp_path and real token checks against the dev key's
certs file (a file:// URL). No storage emulator, no certs server: Cloud Storage is a
stub of an empty bucket that only a sync may ask. `runtime` and `client` here replace
conftest's, which are built on the emulator; tests/test_web.py holds the same contract
there, installs included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from flask.testing import FlaskClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from receiver.config import Settings
from receiver.dev.keys import DevSigner
from receiver.dev.tools import notification_push
from receiver.download import ObjectStore
from receiver.runtime import Runtime
from receiver.vocabulary import JobState
from receiver.web import create_app
from tests.helpers import receiver_environ
from tests.stubserver import Reply, Request, StubServer
from tests.tokenfaults import TOKEN_FAULTS

BUCKET = "models-bucket"


class EmptyBucket:
    """Cloud Storage holding an empty bucket: it answers what a sync asks (the bucket,
    then a listing of its objects: none), and records any other request and answers 503."""

    def __init__(self) -> None:
        self.url = ""  # set once it is served
        self.listings = 0
        self.asked: list[str] = []

    def answer(self, request: Request) -> Reply:
        path = request.path.split("?")[0]
        if request.method == "GET" and path == f"/storage/v1/b/{BUCKET}":
            return Reply.json({"kind": "storage#bucket", "name": BUCKET})
        if request.method == "GET" and path == f"/storage/v1/b/{BUCKET}/o":
            self.listings += 1
            return Reply.json({"kind": "storage#objects"})
        self.asked.append(f"{request.method} {request.path}")
        return Reply(503)


@pytest.fixture
def empty_bucket() -> Iterator[EmptyBucket]:
    """Every route answers from the journal and the model dir alone: any request to
    Cloud Storage but a sync's fails the test."""
    empty = EmptyBucket()
    with StubServer({method: empty.answer for method in ("GET", "POST", "PUT", "DELETE")}) as stub:
        empty.url = stub.url
        yield empty
    assert empty.asked == [], f"a route asked Cloud Storage: {empty.asked}"


@pytest.fixture
def store(empty_bucket: EmptyBucket) -> ObjectStore:
    """A real store, its client pointed at the empty bucket."""
    client = storage.Client(
        project="local",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": empty_bucket.url},
    )
    return ObjectStore(client, requests.Session())


@pytest.fixture
def runtime(tmp_path: Path, signer: DevSigner, store: ObjectStore) -> Runtime:
    settings = Settings.from_env(receiver_environ(BUCKET, tmp_path, signer.certs_url))
    return Runtime.create(settings, store=store)


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return create_app(runtime=runtime).test_client()


def notification(version: int) -> bytes:
    """Cloud Storage's notification of an uploaded archive, as Pub/Sub pushes it; there is
    no object behind it (the routes only journal it, and no worker runs here)."""
    blob = SimpleNamespace(
        name=f"models/half_plus_two/{version}.tar.gz",
        bucket=SimpleNamespace(name=BUCKET),
        generation=1_700_000_000_000_000 + version,
        size=1024,
        md5_hash=None,
        crc32c=None,
    )
    return json.dumps(notification_push(blob)).encode()


def post(client: FlaskClient, body: bytes, authorization: str | None) -> tuple[int, dict]:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.post("/push", data=body, headers=headers, content_type="application/json")
    return response.status_code, response.get_json()


def test_healthz_answers_ok(client):
    response = client.get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_is_503_with_its_reason_until_the_first_sync_then_200(client, runtime, empty_bucket):
    response = client.get("/readyz")
    assert (response.status_code, response.get_json()) == (
        503,
        {"ready": False, "reason": "the first sync of the bucket has not finished"},
    )
    assert empty_bucket.listings == 0  # readiness reads the journal, never the bucket
    assert runtime.worker.syncer.run_if_due()  # the first sync: an empty bucket, nothing to install
    assert empty_bucket.listings == 1
    response = client.get("/readyz")
    assert (response.status_code, response.get_json()) == (200, {"ready": True, "reason": "ready"})


def test_a_good_push_is_queued_and_status_shows_the_job(client, token, runtime):
    status, answer = post(client, notification(7), f"Bearer {token()}")
    assert status == 202
    assert (answer["outcome"], answer["model"], answer["version"]) == ("queued", "half_plus_two", 7)
    document = client.get("/status").get_json()
    assert set(document) == {
        "auth", "source", "ack", "last_sync", "last_sync_error", "sync_notes", "model_dir",
        "models", "versions", "serving", "jobs", "recent_jobs", "quarantine",
    }  # fmt: skip
    assert (document["auth"], document["source"]) == ("google", f"gs://{BUCKET}/models/")
    assert (document["models"], document["jobs"]["queued"]) == ({}, 1)
    (job,) = document["recent_jobs"]
    assert (job["job"], job["state"], job["object"]) == (
        answer["job"],
        "queued",
        f"gs://{BUCKET}/models/half_plus_two/7.tar.gz",
    )
    assert document["quarantine"] == {"count": 0, "recent": []}
    assert document["serving"]["confirmed"] is False


@pytest.mark.parametrize("fault", sorted(TOKEN_FAULTS))
def test_a_push_with_a_bad_token_is_refused_with_its_reason_and_journals_nothing(
    client, token, signer, runtime, fault
):
    case = TOKEN_FAULTS[fault]
    status, answer = post(client, notification(7), case.header(token, signer))
    expected = {401: "unauthenticated", 403: "forbidden"}[case.status]
    assert (status, answer["outcome"]) == (case.status, expected)
    assert re.fullmatch(case.reason, answer["reason"]), answer
    assert runtime.journal.recent() == []
    assert runtime.quarantine.count() == 0


def test_a_push_whose_body_is_not_json_is_acknowledged_as_rejected_and_quarantined(
    client, token, runtime
):
    """A 4xx would have Pub/Sub redeliver it for days (docs/delivery-contract.md): 200."""
    status, answer = post(client, b"not json {", f"Bearer {token()}")
    assert (status, answer["outcome"]) == (200, "rejected")
    assert answer["reason"] == "request body is not JSON"
    assert runtime.quarantine.count() == 1
    assert runtime.journal.recent() == []


def test_the_status_page_shows_a_failed_jobs_reason_as_text(client, token, runtime):
    _, answer = post(client, notification(7), f"Bearer {token()}")
    claimed = runtime.journal.claim("test-worker", lease_seconds=60)
    assert claimed is not None and claimed.id == answer["job"]
    # A reason quotes the archive (an entry's name): on the page it is text, never markup.
    reason = "unsafe entry '<img src=x onerror=alert(1)>': absolute path"
    runtime.journal.finish(claimed.id, "test-worker", JobState.FAILED, reason)
    page = client.get("/")
    assert (page.status_code, page.mimetype) == (200, "text/html")
    html = page.get_data(as_text=True)
    shown = "unsafe entry &#39;&lt;img src=x onerror=alert(1)&gt;&#39;: absolute path"
    assert f'<td class="reason">{shown}</td>' in html
    assert "<img" not in html
