"""The receiver's exception tree, in two halves: what a push gets back, and why a job failed.

    ReceiverError
    ├── ConfigError                  bad environment; start-up stops
    ├── DeliveryError                a push that cannot be taken; carries its HTTP answer
    │   ├── RejectedDeliveryError    authenticated but unusable: 200 `rejected`, quarantined
    │   ├── UnauthenticatedError     no token, malformed token, bad signature, expired: 401
    │   ├── ForbiddenError           valid token for the wrong audience, issuer or sender: 403
    │   ├── PayloadTooLargeError     request body over the limit: 413
    │   └── AuthUnavailableError     Google's certs could not be fetched: 503
    └── JobError                     why an install (or a listing) did not succeed
        ├── PermanentError           retrying cannot help: the job is failed with the reason
        │   ├── SupersededError      older than every version kept: skipped, never downloaded
        │   └── ArchiveError         the archive is hostile or over a limit
        │       └── CorruptArchiveError  not a complete archive (as a mangled download looks)
        └── TransientError           may work later: the job is retried with backoff

Delivery statuses follow the delivery contract in the README: Pub/Sub redelivers anything
that is not a 2xx, and its push backoff is subscription-wide, so only faults that a
retry can fix (or that never come from a healthy subscription) get a non-2xx. Job errors
never become HTTP statuses themselves: in install-ack mode `intake.settle` maps the job's
state to the answer.
"""

from __future__ import annotations

from receiver.vocabulary import PushOutcome


class ReceiverError(Exception):
    """Base of every error the receiver raises on purpose."""

    @property
    def reason(self) -> str:
        return str(self)


class ConfigError(ReceiverError):
    """A variable in the environment is missing or has a bad value."""


class DeliveryError(ReceiverError):
    """A push the receiver does not take; `web` answers it with `http_status` and `outcome`."""

    http_status = 500
    outcome = PushOutcome.ERROR

    def __init__(self, message: str, *, label: str | None = None) -> None:
        super().__init__(message)
        # A short, fixed word for metrics (the kind of auth failure); never user data.
        self.label = label or self.outcome


class RejectedDeliveryError(DeliveryError):
    """An authenticated delivery whose body cannot be used (malformed envelope, unknown shape)."""

    http_status = 200
    outcome = PushOutcome.REJECTED


class UnauthenticatedError(DeliveryError):
    """The request carries no usable token: missing, malformed, badly signed or expired."""

    http_status = 401
    outcome = PushOutcome.UNAUTHENTICATED


class ForbiddenError(DeliveryError):
    """The token is valid but not for us: wrong audience, issuer or sender."""

    http_status = 403
    outcome = PushOutcome.FORBIDDEN


class PayloadTooLargeError(DeliveryError):
    """The request body is larger than the receiver accepts."""

    http_status = 413
    outcome = PushOutcome.TOO_LARGE


class AuthUnavailableError(DeliveryError):
    """The certificates needed to check a token could not be fetched; Pub/Sub should retry."""

    http_status = 503
    outcome = PushOutcome.RETRY

    def __init__(self, message: str) -> None:
        super().__init__(message, label="certs_unavailable")


class JobError(ReceiverError):
    """An install did not succeed."""


class PermanentError(JobError):
    """The job can never succeed: corrupt archive, no SavedModel, over a limit, object gone."""


class SupersededError(PermanentError):
    """The version is older than every version kept; installing it would only prune it."""


class ArchiveError(PermanentError):
    """The archive is corrupt, hostile, or over a limit."""


class CorruptArchiveError(ArchiveError):
    """The bytes do not form a complete archive (which a download mangled in transit looks like)."""


class TransientError(JobError):
    """A failure that may go away on its own: storage 5xx, timeouts, resets, checksum mismatch."""
