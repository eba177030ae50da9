"""Every way Google delivers the event installs the model through real gunicorn and curl."""

import base64
import json

import pytest
from google.protobuf import text_format

from receiver.modelconfig import ModelServerConfig
from tests.e2e.conftest import curl_push, wait_for
from tests.helpers import push_body, same_files, upload_model


def object_resource(blob):
    return json.loads(base64.b64decode(json.loads(push_body(blob))["message"]["data"]))


def binary_cloudevent(blob):
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.storage.object.v1.finalized",
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{blob.bucket.name}",
        "ce-subject": f"objects/{blob.name}",
        "ce-id": "1",
    }
    return json.dumps(object_resource(blob)).encode(), headers


def structured_cloudevent(blob):
    document = {
        "specversion": "1.0",
        "type": "google.cloud.storage.object.v1.finalized",
        "source": f"//storage.googleapis.com/projects/_/buckets/{blob.bucket.name}",
        "subject": f"objects/{blob.name}",
        "id": "1",
        "datacontenttype": "application/json",
        "data": object_resource(blob),
    }
    return json.dumps(document).encode(), {"Content-Type": "application/cloudevents+json"}


def unwrapped_push(blob):
    message = json.loads(push_body(blob))["message"]
    headers = {
        "x-goog-pubsub-subscription-name": "projects/p/subscriptions/s",
        "x-goog-pubsub-message-id": message["messageId"],
        "x-goog-pubsub-publish-time": message["publishTime"],
        **message["attributes"],
    }
    return base64.b64decode(message["data"]), headers


def eventarc_pubsub(blob):
    data = {
        "subscription": "projects/p/subscriptions/s",
        "message": json.loads(push_body(blob))["message"],
    }
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/t",
        "ce-id": "1",
    }
    return json.dumps(data).encode(), headers


@pytest.mark.parametrize(
    "delivery", [binary_cloudevent, structured_cloudevent, unwrapped_push, eventarc_pubsub]
)
def test_each_delivery_format_installs_the_model(
    gunicorn, bucket, token, settings, tmp_path, delivery
):
    gunicorn.start()
    body, headers = delivery(upload_model(bucket, 123))
    status, answer = curl_push(gunicorn.url, token(), body, tmp_path, headers)
    assert (status, answer["outcome"]) == (202, "queued"), answer
    installed = settings.model_dir / "half_plus_two" / "123"
    wait_for(lambda: (installed / "saved_model.pb").exists(), what="the install")
    assert same_files(installed)


def test_unknown_shape_is_acknowledged_and_names_the_accepted_formats(gunicorn, token, tmp_path):
    gunicorn.start()
    status, answer = curl_push(gunicorn.url, token(), b'{"hello": "world"}', tmp_path)
    assert (status, answer["outcome"]) == (200, "rejected")
    assert "CloudEvent" in answer["reason"] and "Pub/Sub push" in answer["reason"]
    assert gunicorn.status()["quarantine"]["count"] == 1


def test_two_models_end_in_one_valid_models_config(gunicorn, bucket, token, settings, tmp_path):
    config_file = tmp_path / "models.config"
    gunicorn.env["RECEIVER_MODEL_CONFIG_FILE"] = str(config_file)
    gunicorn.start()
    for model in ("half_plus_two", "half_plus_three"):
        body = push_body(upload_model(bucket, 1, model=model))
        assert curl_push(gunicorn.url, token(), body, tmp_path)[0] == 202
    wait_for(lambda: gunicorn.status()["jobs"]["installed"] == 2, what="both installs")
    config = ModelServerConfig()
    text_format.Parse(config_file.read_text(), config)
    entries = {entry.name: entry.base_path for entry in config.model_config_list.config}
    assert entries == {
        "half_plus_two": str((settings.model_dir / "half_plus_two").resolve()),
        "half_plus_three": str((settings.model_dir / "half_plus_three").resolve()),
    }
