"""Parse a push delivery into one `ObjectEvent`, whatever shape Google sent it in.

Shapes accepted (see the README's "Delivery formats"):
  * wrapped Pub/Sub push: {"message": {"data", "attributes", "messageId", ...}, "subscription"}
    carrying a Cloud Storage notification (payloadFormat JSON_API_V1 or NONE).

Everything here is a pure function of the body and headers. A body that is not one of
the shapes raises `RejectedDeliveryError` with a reason saying what was expected.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from receiver.errors import RejectedDeliveryError


class EventKind(enum.StrEnum):
    FINALIZE = "finalize"
    DELETE = "delete"
    ARCHIVE = "archive"
    METADATA_UPDATE = "metadata_update"


# Cloud Storage notification `eventType` attribute values
# (https://cloud.google.com/storage/docs/pubsub-notifications#events).
_NOTIFICATION_KINDS = {
    "OBJECT_FINALIZE": EventKind.FINALIZE,
    "OBJECT_DELETE": EventKind.DELETE,
    "OBJECT_ARCHIVE": EventKind.ARCHIVE,
    "OBJECT_METADATA_UPDATE": EventKind.METADATA_UPDATE,
}

ACCEPTED_FORMATS = "a wrapped Pub/Sub push of a Cloud Storage notification"


@dataclass(frozen=True)
class ObjectEvent:
    """Something happened to one generation of one Cloud Storage object."""

    bucket: str
    name: str
    generation: int
    kind: EventKind | None  # None: an event type we do not know
    event_type: str  # as sent, for messages and logs
    delivery_format: str
    size: int | None = None
    md5: str | None = None  # base64, as in the object resource
    crc32c: str | None = None  # base64 big-endian, as in the object resource
    message_id: str | None = None
    overwritten_by_generation: int | None = None


def parse_delivery(body: bytes, headers: Mapping[str, str]) -> ObjectEvent:
    """Turn a push request into an `ObjectEvent`, or raise `RejectedDeliveryError`."""
    document = _json_object(body, "request body")
    if isinstance(document.get("message"), dict):
        return _parse_wrapped_push(document["message"])
    raise RejectedDeliveryError(f"unknown delivery shape: expected {ACCEPTED_FORMATS}")


def _parse_wrapped_push(message: dict[str, Any]) -> ObjectEvent:
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise RejectedDeliveryError("message.attributes is not a JSON object")
    missing = [key for key in ("eventType", "bucketId", "objectId") if key not in attributes]
    if missing:
        raise RejectedDeliveryError(
            f"not a Cloud Storage notification: attributes lack {', '.join(missing)}"
        )
    resource = _object_resource(message.get("data"), attributes.get("payloadFormat"))
    generation = attributes.get("objectGeneration", resource.get("generation"))
    event_type = str(attributes["eventType"])
    return ObjectEvent(
        bucket=_text(attributes["bucketId"], "bucketId"),
        name=_text(attributes["objectId"], "objectId"),
        generation=_int64(generation, "objectGeneration"),
        kind=_NOTIFICATION_KINDS.get(event_type),
        event_type=event_type,
        delivery_format="pubsub-push",
        size=_optional_int64(resource.get("size"), "size"),
        md5=resource.get("md5Hash"),
        crc32c=resource.get("crc32c"),
        message_id=message.get("messageId") or message.get("message_id"),
        overwritten_by_generation=_optional_int64(
            attributes.get("overwrittenByGeneration"), "overwrittenByGeneration"
        ),
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
    if not isinstance(document, dict):
        raise RejectedDeliveryError(f"{what} is not a JSON object")
    return document


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise RejectedDeliveryError(f"{field} must be a non-empty string")
    return value


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
