import base64
import dataclasses
import json

import pytest

from receiver.errors import RejectedDeliveryError
from receiver.events import parse_delivery
from receiver.vocabulary import EventKind, UnwrappedMode
from tests.helpers import FIXTURES

FINALIZE = FIXTURES / "pubsub" / "gcs-notification-OBJECT_FINALIZE-push-envelope.json"
DELETE_CAPTURE = FIXTURES / "pubsub" / "gcs-notification-OBJECT_DELETE-captured.json"


def envelope(attributes, resource=None, **message):
    data = base64.b64encode(json.dumps(resource).encode()).decode() if resource else ""
    return json.dumps(
        {"message": {"attributes": attributes, "data": data, **message}, "subscription": "s"}
    ).encode()


ATTRIBUTES = {
    "bucketId": "b",
    "objectId": "p/m/1.tar.gz",
    "objectGeneration": "1587627537231057",
    "eventType": "OBJECT_FINALIZE",
    "payloadFormat": "JSON_API_V1",
}


def test_real_finalize_push_envelope():
    event = parse_delivery(FINALIZE.read_bytes(), {})
    assert event.ref.bucket == "real-world-plantuml"
    assert event.ref.name == "urls/world"
    assert event.ref.generation == 1514567459302142
    assert event.kind is EventKind.FINALIZE
    assert event.ref.size == 6
    assert event.ref.md5 == "sZRqySSS0jR8YjW00mERhA=="
    assert event.ref.crc32c == "NT3Yvg=="
    assert event.message_id == "18133860677053"


@pytest.mark.parametrize("as_number", [False, True])
def test_int64_fields_as_strings_or_numbers(as_number):
    resource: dict[str, object] = {
        "generation": "1587627537231057",
        "size": "352",
        "crc32c": "rTVTeQ==",
    }
    if as_number:
        resource = {**resource, "generation": 1587627537231057, "size": 352}
    attributes = {k: v for k, v in ATTRIBUTES.items() if k != "objectGeneration"}
    event = parse_delivery(envelope(attributes, resource), {})
    assert (event.ref.generation, event.ref.size, event.ref.crc32c) == (
        1587627537231057,
        352,
        "rTVTeQ==",
    )


def test_payload_format_none_works_from_attributes_alone():
    event = parse_delivery(envelope({**ATTRIBUTES, "payloadFormat": "NONE"}), {})
    assert (event.ref.name, event.ref.generation, event.ref.size, event.ref.crc32c) == (
        "p/m/1.tar.gz",
        1587627537231057,
        None,
        None,
    )


def test_snake_case_message_id():
    event = parse_delivery(envelope(ATTRIBUTES, message_id="42"), {})
    assert event.message_id == "42"


def test_overwrite_delete_from_real_capture():
    captured = json.loads(DELETE_CAPTURE.read_text())
    body = json.dumps(
        {"message": {"attributes": captured["Attributes"], "data": captured["Data"]}}
    ).encode()
    event = parse_delivery(body, {})
    assert event.kind is EventKind.DELETE
    assert event.overwritten_by_generation == 1547005977309556


def test_unknown_event_type_is_kept_for_the_caller_to_ignore():
    event = parse_delivery(envelope({**ATTRIBUTES, "eventType": "OBJECT_SOMETHING_NEW"}), {})
    assert event.kind is None
    assert event.event_type == "OBJECT_SOMETHING_NEW"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"nomessage": {}}', "unknown delivery shape"),
        (DELETE_CAPTURE.read_bytes(), "unknown delivery shape"),  # a Go struct dump, not a push
        (envelope({"bucketId": "b"}), "lack eventType, objectId"),
        (envelope({**ATTRIBUTES, "objectGeneration": "abc"}), "must be an integer"),
        (envelope({**ATTRIBUTES, "objectGeneration": "-5"}), "out of range"),
        (json.dumps({"message": {"attributes": ATTRIBUTES, "data": "%%%"}}).encode(), "base64"),
        (envelope({**ATTRIBUTES, "objectId": ""}), "objectId must be a non-empty string"),
    ],
)
def test_malformed_deliveries_are_rejected_with_a_reason(body, reason):
    with pytest.raises(RejectedDeliveryError, match=reason):
        parse_delivery(body, {})


# --- Every other delivery format ---------------------------------------------------------

CLOUDEVENTS = FIXTURES / "cloudevents"
FINALIZE_ENVELOPE = json.loads(FINALIZE.read_text())


def binary_cloudevent_headers(ce_type, source, subject=None):
    headers = {
        "ce-specversion": "1.0",
        "ce-type": ce_type,
        "ce-source": source,
        "ce-id": "1234",
        "Content-Type": "application/json",
    }
    if subject:
        headers["ce-subject"] = subject
    return headers


def test_binary_cloudevent_of_a_storage_object():
    body = (CLOUDEVENTS / "StorageObjectData-simple.json").read_bytes()
    headers = binary_cloudevent_headers(
        "google.cloud.storage.object.v1.finalized",
        "//storage.googleapis.com/projects/_/buckets/some-bucket",
        "objects/folder/Test.cs",
    )
    event = parse_delivery(body, headers)
    assert (event.ref.bucket, event.ref.name, event.ref.generation) == (
        "some-bucket",
        "folder/Test.cs",
        1587627537231057,
    )
    assert (event.kind, event.ref.size, event.ref.crc32c) == (
        EventKind.FINALIZE,
        352,
        "rTVTeQ==",
    )
    assert event.delivery_format == "cloudevent-binary"


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            CLOUDEVENTS / "StorageObjectData-structured-finalized.json",
            ("sample-bucket", "MyFile", 96883251, 0, "AAAAAA=="),  # int64s as JSON numbers
        ),
        (
            FIXTURES / "pubsub" / "storage-cloudevent-input.json",
            ("some-bucket", "folder/Test.cs", 1587627537231057, 352, "rTVTeQ=="),  # as strings
        ),
    ],
)
def test_structured_cloudevents_of_a_storage_object(fixture, expected):
    event = parse_delivery(fixture.read_bytes(), {"Content-Type": "application/cloudevents+json"})
    assert (
        event.ref.bucket,
        event.ref.name,
        event.ref.generation,
        event.ref.size,
        event.ref.crc32c,
    ) == expected
    assert (event.kind, event.delivery_format) == (EventKind.FINALIZE, "cloudevent-structured")


@pytest.mark.parametrize(
    ("ce_type", "kind"),
    [
        ("google.cloud.storage.object.v1.deleted", EventKind.DELETE),
        ("google.cloud.storage.object.v1.archived", EventKind.ARCHIVE),
        ("google.cloud.storage.object.v1.metadataUpdated", EventKind.METADATA_UPDATE),
    ],
)
def test_other_storage_cloudevent_types(ce_type, kind):
    document = json.loads((FIXTURES / "pubsub" / "storage-cloudevent-input.json").read_text())
    document["type"] = ce_type
    event = parse_delivery(json.dumps(document).encode(), {})  # structured, even untyped
    assert event.kind is kind


def test_eventarc_pubsub_cloudevent_wrapping_a_notification():
    data = {"subscription": "s", "message": FINALIZE_ENVELOPE["message"]}
    headers = binary_cloudevent_headers(
        "google.cloud.pubsub.topic.v1.messagePublished",
        "//pubsub.googleapis.com/projects/p/topics/t",
    )
    event = parse_delivery(json.dumps(data).encode(), headers)
    wrapped = parse_delivery(FINALIZE.read_bytes(), {})
    assert (
        event.ref.bucket,
        event.ref.name,
        event.ref.generation,
        event.ref.crc32c,
    ) == (
        wrapped.ref.bucket,
        wrapped.ref.name,
        wrapped.ref.generation,
        wrapped.ref.crc32c,
    )


@pytest.mark.parametrize(
    ("fixture", "headers"),
    [
        (
            CLOUDEVENTS / "MessagePublishedData-text.json",
            binary_cloudevent_headers(
                "google.cloud.pubsub.topic.v1.messagePublished", "//pubsub.googleapis.com/x"
            ),
        ),
        (CLOUDEVENTS / "MessagePublishedData-structured.json", {}),
        (FIXTURES / "pubsub" / "pubsub_text-cloudevent-input.json", {}),
    ],
)
def test_pubsub_cloudevents_that_carry_no_notification_are_rejected(fixture, headers):
    with pytest.raises(RejectedDeliveryError, match="not a Cloud Storage notification"):
        parse_delivery(fixture.read_bytes(), headers)


@pytest.mark.parametrize(
    "fixture",
    [
        FIXTURES / "pubsub" / "storage-legacy-input.json",
        FIXTURES / "pubsub" / "pubsub_text-legacy-input.json",
    ],
)
def test_legacy_background_events_are_rejected_naming_the_accepted_formats(fixture):
    with pytest.raises(RejectedDeliveryError, match="CloudEvent"):
        parse_delivery(fixture.read_bytes(), {})


def test_unknown_cloudevent_type_is_rejected():
    headers = binary_cloudevent_headers("google.cloud.audit.log.v1.written", "//x")
    with pytest.raises(RejectedDeliveryError, match="is not handled"):
        parse_delivery(b"{}", headers)


def unwrapped_headers(message, **overrides):
    attributes = message["attributes"]
    headers = {
        "X-Goog-Pubsub-Subscription-Name": "projects/p/subscriptions/s",
        "X-Goog-Pubsub-Message-Id": message["messageId"],
        "X-Goog-Pubsub-Publish-Time": message["publishTime"],
        **{name: value for name, value in attributes.items()},  # attributes become headers
    }
    headers.update(overrides)
    return headers


def test_unwrapped_push_with_metadata_matches_the_wrapped_one():
    message = FINALIZE_ENVELOPE["message"]
    body = base64.b64decode(message["data"])
    event = parse_delivery(body, unwrapped_headers(message))
    wrapped = parse_delivery(FINALIZE.read_bytes(), {})
    assert event == dataclasses.replace(wrapped, delivery_format="pubsub-unwrapped")


def test_unwrapped_push_header_names_are_case_insensitive():
    message = FINALIZE_ENVELOPE["message"]
    headers = {k.lower(): v for k, v in unwrapped_headers(message).items()}
    event = parse_delivery(base64.b64decode(message["data"]), headers)
    assert event.ref.name == "urls/world"


def test_unwrapped_push_with_payload_format_none_has_an_empty_body():
    message = FINALIZE_ENVELOPE["message"]
    event = parse_delivery(b"", unwrapped_headers(message, payloadFormat="NONE"))
    assert (event.ref.name, event.ref.generation, event.ref.crc32c) == (
        "urls/world",
        1514567459302142,
        None,
    )


def test_unwrapped_push_without_metadata_is_rejected_with_advice():
    body = (CLOUDEVENTS / "StorageObjectData-simple.json").read_bytes()
    with pytest.raises(RejectedDeliveryError, match="write metadata"):
        parse_delivery(body, {"Content-Type": "application/json"})


def test_unwrapped_push_without_metadata_can_be_taken_as_an_upload():
    body = (CLOUDEVENTS / "StorageObjectData-simple.json").read_bytes()
    event = parse_delivery(body, {}, unwrapped_without_metadata=UnwrappedMode.FINALIZE)
    assert (event.kind, event.ref.name, event.ref.generation) == (
        EventKind.FINALIZE,
        "folder/Test.cs",
        1587627537231057,
    )
