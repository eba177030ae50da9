"""Parse a push delivery into one `ObjectEvent`, whatever shape Google sent it in.

Shapes, detected from the request (docs/publishing.md, "Delivery formats"):
  * wrapped Pub/Sub push: {"message": {"data", "attributes", "messageId", ...}, "subscription"}
  * unwrapped Pub/Sub push: the body is the object resource; with "write metadata" the
    message metadata comes as x-goog-pubsub-* headers and the attributes as plain headers
  * CloudEvents, binary (ce-* headers) or structured (application/cloudevents+json), of
    the Cloud Storage object types, or of Pub/Sub's messagePublished wrapping a notification

Everything here is a pure function of the body and headers. A body that is not one of
the shapes raises `RejectedDeliveryError` with a reason saying what was expected.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from receiver.errors import RejectedDeliveryError
from receiver.objectref import ObjectRef
from receiver.vocabulary import EventKind, UnwrappedMode

# Cloud Storage notification `eventType` attribute values
# (https://cloud.google.com/storage/docs/pubsub-notifications#events).
_NOTIFICATION_KINDS = {
    "OBJECT_FINALIZE": EventKind.FINALIZE,
    "OBJECT_DELETE": EventKind.DELETE,
    "OBJECT_ARCHIVE": EventKind.ARCHIVE,
    "OBJECT_METADATA_UPDATE": EventKind.METADATA_UPDATE,
}

# CloudEvent types (https://github.com/googleapis/google-cloudevents, proto/google/events/cloud).
_CLOUDEVENT_KINDS = {
    "google.cloud.storage.object.v1.finalized": EventKind.FINALIZE,
    "google.cloud.storage.object.v1.deleted": EventKind.DELETE,
    "google.cloud.storage.object.v1.archived": EventKind.ARCHIVE,
    "google.cloud.storage.object.v1.metadataUpdated": EventKind.METADATA_UPDATE,
}
_MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
_STORAGE_SOURCE_PREFIX = "//storage.googleapis.com/projects/_/buckets/"

ACCEPTED_FORMATS = (
    "a Pub/Sub push (wrapped, or unwrapped with write-metadata) of a Cloud Storage "
    "notification, or a CloudEvent (binary or structured) of type "
    "google.cloud.storage.object.v1.* or google.cloud.pubsub.topic.v1.messagePublished"
)
UNWRAPPED_WITHOUT_METADATA_HINT = (
    "an unwrapped push without metadata does not say what happened to the object: turn on "
    "'write metadata' on the subscription (--push-no-wrapper-write-metadata), or set "
    "RECEIVER_UNWRAPPED_WITHOUT_METADATA=finalize to treat every such push as an upload"
)


@dataclass(frozen=True)
class ObjectEvent:
    """Something happened to one generation of one Cloud Storage object."""

    ref: ObjectRef
    kind: EventKind | None  # None: an event type we do not know
    event_type: str  # as sent, for messages and logs
    delivery_format: str
    message_id: str | None = None
    overwritten_by_generation: int | None = None


def parse_delivery(
    body: bytes,
    headers: Mapping[str, str],
    unwrapped_without_metadata: UnwrappedMode = UnwrappedMode.REJECT,
) -> ObjectEvent:
    """Turn a push request into an `ObjectEvent`, or raise `RejectedDeliveryError`.

    `unwrapped_without_metadata`: "finalize" treats a bare object resource as an upload.
    """
    headers = {name.lower(): value for name, value in headers.items()}
    if "ce-specversion" in headers:
        return _parse_binary_cloudevent(body, headers)
    if headers.get("content-type", "").startswith("application/cloudevents+json"):
        return _parse_structured_cloudevent(_json_object(body, "request body"))
    with_metadata = any(name.startswith("x-goog-pubsub-") for name in headers)
    if with_metadata and not body.strip():  # unwrapped, payloadFormat NONE
        return _parse_unwrapped(headers, {})
    document = _json_object(body, "request body")
    if isinstance(document.get("message"), dict):
        return _parse_pubsub_message(document["message"], "pubsub-push")
    if with_metadata:
        return _parse_unwrapped(headers, document)
    if "specversion" in document and "type" in document:
        return _parse_structured_cloudevent(document)
    if document.get("kind") == "storage#object" or {"bucket", "name"} <= document.keys():
        if unwrapped_without_metadata is UnwrappedMode.FINALIZE:
            return _from_resource(
                document, EventKind.FINALIZE, "OBJECT_FINALIZE", "pubsub-unwrapped"
            )
        raise RejectedDeliveryError(UNWRAPPED_WITHOUT_METADATA_HINT)
    raise RejectedDeliveryError(f"unknown delivery shape: expected {ACCEPTED_FORMATS}")


def _parse_pubsub_message(message: dict[str, Any], delivery_format: str) -> ObjectEvent:
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise RejectedDeliveryError("message.attributes is not a JSON object")
    _require_notification_attributes(attributes)
    resource = _object_resource(message.get("data"), attributes.get("payloadFormat"))
    message_id = message.get("messageId") or message.get("message_id")
    return _from_notification(attributes, resource, delivery_format, message_id)


def _parse_unwrapped(headers: dict[str, str], resource: dict[str, Any]) -> ObjectEvent:
    # With write-metadata on, the message attributes arrive as headers of the same names.
    attributes = {
        key: headers[key.lower()]
        for key in (
            "eventType",
            "bucketId",
            "objectId",
            "objectGeneration",
            "payloadFormat",
            "overwrittenByGeneration",
        )
        if key.lower() in headers
    }
    message_id = headers.get("x-goog-pubsub-message-id")
    return _from_notification(attributes, resource, "pubsub-unwrapped", message_id)


def _from_notification(
    attributes: dict[str, Any],
    resource: dict[str, Any],
    delivery_format: str,
    message_id: str | None,
) -> ObjectEvent:
    """A Cloud Storage notification: attributes say what happened, the resource adds detail."""
    _require_notification_attributes(attributes)
    generation = attributes.get("objectGeneration", resource.get("generation"))
    event_type = str(attributes["eventType"])
    return ObjectEvent(
        ref=ObjectRef(
            bucket=_text(attributes["bucketId"], "bucketId"),
            name=_text(attributes["objectId"], "objectId"),
            generation=_int64(generation, "objectGeneration"),
            size=_optional_int64(resource.get("size"), "size"),
            md5=_optional_text(resource.get("md5Hash"), "md5Hash"),
            crc32c=_optional_text(resource.get("crc32c"), "crc32c"),
        ),
        kind=_NOTIFICATION_KINDS.get(event_type),
        event_type=event_type,
        delivery_format=delivery_format,
        message_id=message_id,
        overwritten_by_generation=_optional_int64(
            attributes.get("overwrittenByGeneration"), "overwrittenByGeneration"
        ),
    )


def _require_notification_attributes(attributes: Mapping[str, Any]) -> None:
    missing = [key for key in ("eventType", "bucketId", "objectId") if key not in attributes]
    if missing:
        raise RejectedDeliveryError(
            f"not a Cloud Storage notification: attributes lack {', '.join(missing)}"
        )


def _parse_binary_cloudevent(body: bytes, headers: dict[str, str]) -> ObjectEvent:
    attributes = {key[3:]: value for key, value in headers.items() if key.startswith("ce-")}
    return _from_cloudevent(attributes, _json_object(body, "CloudEvent data"), "cloudevent-binary")


def _parse_structured_cloudevent(document: dict[str, Any]) -> ObjectEvent:
    data = document.get("data")
    if not isinstance(data, dict):
        raise RejectedDeliveryError("structured CloudEvent has no JSON object in `data`")
    return _from_cloudevent(document, data, "cloudevent-structured")


def _from_cloudevent(
    attributes: Mapping[str, Any], data: dict[str, Any], delivery_format: str
) -> ObjectEvent:
    event_type = str(attributes.get("type", ""))
    if event_type == _MESSAGE_PUBLISHED:  # Eventarc Pub/Sub trigger: data wraps the message
        message = data.get("message")
        if not isinstance(message, dict):
            raise RejectedDeliveryError("messagePublished CloudEvent has no `message` object")
        return _parse_pubsub_message(message, delivery_format)
    if not event_type.startswith("google.cloud.storage.object."):
        raise RejectedDeliveryError(
            f"CloudEvent type {event_type!r} is not handled: expected {ACCEPTED_FORMATS}"
        )
    source = str(attributes.get("source", ""))
    subject = str(attributes.get("subject", ""))
    resource = {
        "bucket": source.removeprefix(_STORAGE_SOURCE_PREFIX)
        if source.startswith(_STORAGE_SOURCE_PREFIX)
        else None,
        "name": subject.removeprefix("objects/") if subject.startswith("objects/") else None,
        **{key: value for key, value in data.items() if value is not None},
    }
    return _from_resource(
        resource,
        _CLOUDEVENT_KINDS.get(event_type),
        event_type,
        delivery_format,
        attributes.get("id"),
    )


def _from_resource(
    resource: dict[str, Any],
    kind: EventKind | None,
    event_type: str,
    delivery_format: str,
    message_id: object = None,
) -> ObjectEvent:
    """An event described by the object resource alone (CloudEvents, bare unwrapped pushes)."""
    return ObjectEvent(
        ref=ObjectRef(
            bucket=_text(resource.get("bucket"), "bucket"),
            name=_text(resource.get("name"), "name"),
            generation=_int64(resource.get("generation"), "generation"),
            size=_optional_int64(resource.get("size"), "size"),
            md5=_optional_text(resource.get("md5Hash"), "md5Hash"),
            crc32c=_optional_text(resource.get("crc32c"), "crc32c"),
        ),
        kind=kind,
        event_type=event_type,
        delivery_format=delivery_format,
        message_id=str(message_id) if message_id else None,
    )


def _object_resource(data: object, payload_format: object) -> dict[str, Any]:
    """The object resource carried in `message.data`, or {} for payloadFormat NONE."""
    if not data:
        return {}
    if not isinstance(data, str):
        raise RejectedDeliveryError("message.data is not a base64 string")
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RejectedDeliveryError("message.data is not valid base64") from None
    if payload_format == "NONE":
        return {}
    return _json_object(decoded, "message.data")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RejectedDeliveryError(f"{what} is not JSON") from None
    except RecursionError:  # nested deeper than any event: a 500 would be redelivered
        raise RejectedDeliveryError(f"{what} is JSON nested too deep to be an event") from None
    if not isinstance(document, dict):
        raise RejectedDeliveryError(f"{what} is not a JSON object")
    return document


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise RejectedDeliveryError(f"{field} must be a non-empty string")
    return value


def _optional_text(value: object, field: str) -> str | None:
    return None if value is None else _text(value, field)


def _int64(value: object, field: str) -> int:
    """int64 fields arrive as JSON strings (proto3 mapping) or as numbers; accept both."""
    number = _optional_int64(value, field)
    if number is None:
        raise RejectedDeliveryError(f"{field} is missing")
    return number


def _optional_int64(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RejectedDeliveryError(f"{field} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise RejectedDeliveryError(f"{field} must be an integer, got {value!r}") from None
    if not 0 <= number < 2**63:
        raise RejectedDeliveryError(f"{field} is out of range: {value!r}")
    return number
