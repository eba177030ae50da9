"""The HTTP face of the receiver: `create_app(settings)` and its routes.

Routes parse, call and map; status codes come from the exception tree (errors.py) and
from `intake.Outcome`, and are turned into responses in one place, `_error_response`.
"""

from __future__ import annotations

import logging
import os

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from receiver import events, intake
from receiver.config import Settings
from receiver.errors import PayloadTooLargeError, ReceiverError, RejectedDeliveryError
from receiver.runtime import Runtime, status
from receiver.sync import readiness

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024  # Pub/Sub messages are at most 10 MB

bp = Blueprint("receiver", __name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; with no settings, read them from the environment."""
    settings = settings or Settings.from_env(os.environ)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["receiver"] = Runtime.create(settings)
    app.register_blueprint(bp)
    app.register_error_handler(ReceiverError, _error_response)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    return app


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["receiver"]
    return rt


@bp.post("/")
def push() -> tuple[Response, int]:
    rt = runtime()
    if rt.verifier is not None:
        rt.verifier.verify(request.headers.get("Authorization"))
    event = events.parse_delivery(
        request.get_data(),
        dict(request.headers.items()),
        rt.settings.unwrapped_without_metadata,
    )
    outcome = intake.accept(event, rt.settings, rt.journal)
    if outcome.job is not None and not outcome.job.state.final:
        rt.worker.wake.set()
        if rt.settings.ack == "installed":
            outcome = intake.settle(outcome.job, rt.journal, rt.settings.ack_timeout, rt.serving)
    log.info("push %s: %s (%s)", event.name, outcome.outcome, outcome.reason)
    return jsonify(outcome.to_dict()), outcome.status


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    ready, reason = readiness(runtime().settings, runtime().journal)
    return jsonify({"ready": ready, "reason": reason}), 200 if ready else 503


@bp.get("/status")
def status_page() -> tuple[Response, int]:
    return jsonify(status(runtime())), 200


def _error_response(error: ReceiverError) -> tuple[Response, int]:
    body: dict[str, object] = {"outcome": error.outcome, "reason": error.reason}
    if isinstance(error, RejectedDeliveryError):
        # Authenticated but unusable: acknowledge, and keep the body for the operator.
        body["quarantine"] = runtime().quarantine.keep(
            request.get_data(), dict(request.headers.items()), error.reason
        )
    log.warning("%s %s -> %s: %s", request.method, request.path, error.http_status, error.reason)
    return jsonify(body), error.http_status


def _too_large(_: RequestEntityTooLarge) -> tuple[Response, int]:
    return _error_response(
        PayloadTooLargeError(f"request body is larger than {MAX_BODY_BYTES} bytes")
    )
