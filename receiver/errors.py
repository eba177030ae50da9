"""The receiver's exception tree; each class carries its HTTP status and outcome.

    ReceiverError
    ├── ConfigError                  bad environment; start-up stops
    ├── PermanentError               retrying cannot help: the job is failed, the push acked (200)
    │   ├── RejectedDeliveryError    authenticated but unusable: acked as `rejected`, quarantined
    │   └── SupersededError          older than every version kept: skipped, never downloaded
    ├── TransientError               may work later: the job is retried, the push nacked (503)
    │   └── AuthUnavailableError     Google's certs could not be fetched (503, not 401)
    ├── UnauthenticatedError         no token, malformed token, bad signature, expired (401)
    ├── ForbiddenError               valid token for the wrong audience, issuer or sender (403)
    └── PayloadTooLargeError         request body over the limit (413)

Status codes follow the delivery contract in the README: Pub/Sub redelivers anything
that is not a 2xx, and its push backoff is subscription-wide, so only faults that a
retry can fix (or that never come from a healthy subscription) get a non-2xx.
"""

from __future__ import annotations


class ReceiverError(Exception):
    """Base of every error the receiver raises on purpose."""

    http_status = 500
    outcome = "error"
    retryable = False

    def __init__(self, message: str, *, label: str | None = None) -> None:
        super().__init__(message)
        # A short, fixed word for metrics (e.g. the kind of auth failure); never user data.
        self.label = label or self.outcome

    @property
    def reason(self) -> str:
        return str(self)


class ConfigError(ReceiverError):
    """A variable in the environment is missing or has a bad value."""


class PermanentError(ReceiverError):
    """The job can never succeed: corrupt archive, no SavedModel, over a limit, object gone."""

    http_status = 200
    outcome = "failed"


class RejectedDeliveryError(PermanentError):
    """An authenticated delivery whose body cannot be used (malformed envelope, unknown shape)."""

    outcome = "rejected"


class SupersededError(PermanentError):
    """The version is older than every version kept; installing it would only prune it."""

    outcome = "skipped"


class TransientError(ReceiverError):
    """A failure that may go away on its own: storage 5xx, timeouts, resets, checksum mismatch."""

    http_status = 503
    outcome = "retry"
    retryable = True


class AuthUnavailableError(TransientError):
    """The certificates needed to check a token could not be fetched."""

    def __init__(self, message: str) -> None:
        super().__init__(message, label="certs_unavailable")


class UnauthenticatedError(ReceiverError):
    """The request carries no usable token: missing, malformed, badly signed or expired."""

    http_status = 401
    outcome = "unauthenticated"


class ForbiddenError(ReceiverError):
    """The token is valid but not for us: wrong audience, issuer or sender."""

    http_status = 403
    outcome = "forbidden"


class PayloadTooLargeError(ReceiverError):
    """The request body is larger than the receiver accepts."""

    http_status = 413
    outcome = "too_large"
