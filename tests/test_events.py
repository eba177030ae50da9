import base64
import json

import pytest

from receiver.errors import RejectedDeliveryError
from receiver.events import EventKind, parse_delivery
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
    assert event.bucket == "real-world-plantuml"
    assert event.name == "urls/world"
    assert event.generation == 1514567459302142
    assert event.kind is EventKind.FINALIZE
    assert event.size == 6
    assert event.md5 == "sZRqySSS0jR8YjW00mERhA=="
    assert event.crc32c == "NT3Yvg=="
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
    assert (event.generation, event.size, event.crc32c) == (1587627537231057, 352, "rTVTeQ==")


def test_payload_format_none_works_from_attributes_alone():
    event = parse_delivery(envelope({**ATTRIBUTES, "payloadFormat": "NONE"}), {})
    assert (event.name, event.generation, event.size, event.crc32c) == (
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
