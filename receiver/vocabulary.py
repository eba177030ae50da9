"""The receiver's words: one StrEnum for each family of outcomes, states and modes.

Every module compares against these members rather than string literals, so mypy
catches a misspelt state; the values are what JSON, the journal, metrics and the
environment carry. The delivery contract (docs/delivery-contract.md) is checked against
`PushOutcome` by a test (tests/test_vocabulary.py).
"""

from __future__ import annotations

import enum


class PushOutcome(enum.StrEnum):
    """The `outcome` of every answer to a push (docs/delivery-contract.md)."""

    QUEUED = "queued"  # 202: a job was recorded
    INSTALLED = "installed"  # RECEIVER_ACK=installed: the version is in place (and serving)
    FAILED = "failed"  # RECEIVER_ACK=installed: the job failed for good
    SKIPPED = "skipped"  # older than every version kept: not downloaded
    REMOVED = "removed"  # a delete withdrew its version
    WITHDRAWING = "withdrawing"  # a delete for an install under way: withdrawn at its end
    DUPLICATE = "duplicate"  # this object generation was seen before
    IGNORED = "ignored"  # not for us: other bucket, other event, not a model name
    REJECTED = "rejected"  # authenticated but unusable: quarantined, acknowledged
    UNAUTHENTICATED = "unauthenticated"  # 401
    FORBIDDEN = "forbidden"  # 403
    TOO_LARGE = "too_large"  # 413
    RETRY = "retry"  # 503: Pub/Sub should redeliver
    ERROR = "error"  # 500: a bug; the traceback is in the log


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    INSTALLED = "installed"
    FAILED = "failed"
    SKIPPED = "skipped"  # superseded before it was installed, or its object deleted

    @property
    def final(self) -> bool:
        return self in (JobState.INSTALLED, JobState.FAILED, JobState.SKIPPED)


# What a push waiting for its install (RECEIVER_ACK=installed) answers once the job ends.
FINAL_OUTCOMES = {
    JobState.INSTALLED: PushOutcome.INSTALLED,
    JobState.FAILED: PushOutcome.FAILED,
    JobState.SKIPPED: PushOutcome.SKIPPED,
}


class LoadState(enum.StrEnum):
    """Whether TF Serving loaded a version, as far as the receiver knows."""

    UNCONFIRMED = "unconfirmed"  # RECEIVER_TFSERVING_URL unset: loads are not confirmed
    LOADING = "loading"  # renamed into place; waiting for TF Serving's verdict
    AVAILABLE = "available"  # TF Serving reported AVAILABLE
    TIMED_OUT = "timed_out"  # no verdict within RECEIVER_LOAD_TIMEOUT; TF Serving may retry
    FAILED = "failed"  # TF Serving's load failed (END with an error): withdrawn
    RETIRED = "retired"  # TF Serving unloaded it without error (a newer version serves)
    # Only shown, never stored: a version on disk that no install of the receiver recorded
    # (placed by hand, or installed before the journal's volume existed).
    UNRECORDED = "unrecorded"


class AuthMode(enum.StrEnum):
    """RECEIVER_AUTH"""

    GOOGLE = "google"
    NONE = "none"


class AckMode(enum.StrEnum):
    """RECEIVER_ACK"""

    QUEUED = "queued"
    INSTALLED = "installed"


class DeleteMode(enum.StrEnum):
    """RECEIVER_ON_DELETE"""

    IGNORE = "ignore"
    REMOVE = "remove"


class SlicingMode(enum.StrEnum):
    """RECEIVER_SLICING"""

    AUTO = "auto"
    ALWAYS = "always"


class UnwrappedMode(enum.StrEnum):
    """RECEIVER_UNWRAPPED_WITHOUT_METADATA"""

    REJECT = "reject"
    FINALIZE = "finalize"


class LogFormat(enum.StrEnum):
    """RECEIVER_LOG_FORMAT"""

    AUTO = "auto"
    JSON = "json"
    TEXT = "text"


class LogLevel(enum.StrEnum):
    """GUNICORN_LOG_LEVEL"""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class RelayOutcome(enum.StrEnum):
    """How a relay of one push to one peer ended (`receiver_relays_total{outcome}`)."""

    DELIVERED = "delivered"  # the peer answered 2xx (queued, duplicate, ignored, ...)
    REFUSED = "refused"  # the peer answered 4xx: its own checks said no (a bad token...)
    FAILED = "failed"  # no 2xx after every attempt: left to the peer's sync
    DROPPED = "dropped"  # the schedule was full: left to the peer's sync


class EventKind(enum.StrEnum):
    """What happened to an object, whichever delivery format said it (receiver.events)."""

    FINALIZE = "finalize"
    DELETE = "delete"
    ARCHIVE = "archive"
    METADATA_UPDATE = "metadata_update"
