"""The HTTP face of the receiver: `create_app(settings)` and its routes.

Routes parse, call and map; status codes come from the exception tree (errors.py) and
from `intake.Outcome`, and are turned into responses in one place, `_error_response`.
"""

from __future__ import annotations

import logging
import os
import threading

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    render_template,
    request,
)
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge

from receiver import events, intake, logs, metrics, relay
from receiver.config import Settings
from receiver.errors import (
    AuthUnavailableError,
    DeliveryError,
    ForbiddenError,
    PayloadTooLargeError,
    RejectedDeliveryError,
    UnauthenticatedError,
)
from receiver.journal import Job
from receiver.readiness import readiness, startup
from receiver.runtime import Runtime
from receiver.status import document, page
from receiver.vocabulary import AckMode, JobState, PushOutcome

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024  # Pub/Sub messages are at most 10 MB

_AUTH_ERRORS = (UnauthenticatedError, ForbiddenError, AuthUnavailableError)

bp = Blueprint("receiver", __name__)

# The push has a path of its own, so an ingress can expose it and nothing else; `POST /`
# stays for subscriptions made before /push existed.
PUSH_PATHS = ("/push", "/")


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the app; with no settings, read them from the environment.

    `runtime`: collaborators prepared by the caller (route tests pass one built on local
    parts); without it they are built from the settings, storage client included."""
    if runtime is not None:
        settings = runtime.settings
    settings = settings or Settings.from_env(os.environ)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["receiver"] = runtime or Runtime.create(settings)
    app.extensions["receiver.waiting"] = threading.Semaphore(settings.max_waiting_pushes)
    # The page compares states and modes by the enums, not by their spelling.
    app.jinja_env.globals.update(AckMode=AckMode, JobState=JobState)
    app.register_blueprint(bp)
    app.register_error_handler(DeliveryError, _error_response)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(InternalServerError, _unexpected)
    app.register_error_handler(HTTPException, _http_error)
    app.before_request(_enter_request_log_context)
    app.teardown_request(_leave_request_log_context)
    return app


def _enter_request_log_context() -> None:
    fields = logs.trace_fields(request.headers)
    g.log_token = logs.bind(**fields) if fields else None


def _leave_request_log_context(_: BaseException | None) -> None:
    token = g.pop("log_token", None)
    if token is not None:
        logs.unbind(token)


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["receiver"]
    return rt


@bp.post("/push")
@bp.post("/")
def push() -> tuple[Response, int]:
    rt = runtime()
    if rt.verifier is not None:
        rt.verifier.verify(request.headers.get("Authorization"))
    event = events.parse_delivery(
        request.get_data(), dict(request.headers.items()), rt.settings.unwrapped_without_metadata
    )
    outcome = intake.accept(event, rt.settings, rt.journal)
    # The marker only stops a second relay (and a relay's wait): the token was checked above.
    relayed = relay.RELAYED_HEADER in request.headers
    relaying = rt.relay is not None and not relayed and relay.concerns_peers(outcome)
    if relaying and rt.relay is not None:
        rt.relay.forward(request.get_data(), dict(request.headers.items()))
    if outcome.job is not None and not outcome.job.state.final:
        rt.worker.wake.set()
        if rt.settings.ack is AckMode.INSTALLED and not relayed:
            outcome = _wait_for_install(rt, outcome.job)
    log.info(
        "push %s%s: %s (%s)%s",
        event.ref.name,
        " (relayed)" if relayed else "",
        outcome.outcome,
        outcome.reason,
        "; relaying to the peers" if relaying else "",
    )
    metrics.PUSHES.labels(format=event.delivery_format, outcome=outcome.outcome).inc()
    return jsonify(outcome.to_dict()), outcome.status


def _wait_for_install(rt: Runtime, job: Job) -> intake.Outcome:
    """RECEIVER_ACK=installed: wait, unless enough pushes wait already (each holds a thread)."""
    waiting: threading.Semaphore = current_app.extensions["receiver.waiting"]
    if not waiting.acquire(blocking=False):
        return intake.Outcome(
            503,
            PushOutcome.RETRY,
            f"{rt.settings.max_waiting_pushes} pushes already wait for installs in this process "
            "(RECEIVER_MAX_WAITING_PUSHES); the job is queued, redeliver to wait on it",
            job,
        )
    try:
        return intake.settle(
            job, rt.journal, rt.settings.ack_timeout, rt.serving, rt.worker.wait_for_news
        )
    finally:
        waiting.release()


@bp.get("/")
def status_page() -> str:
    _require_exposed()
    rt = runtime()
    return render_template("status.html", **page(rt.settings, rt.journal, rt.quarantine))


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify({"status": "ok"}), 200


@bp.get("/startupz")
def startupz() -> tuple[Response, int]:
    started, reason = startup(runtime().settings, runtime().journal)
    if not runtime().settings.expose_status:
        reason = "started" if started else "not started"  # the details name models
    return jsonify({"started": started, "reason": reason}), 200 if started else 503


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    ready, reason = readiness(runtime().settings, runtime().journal)
    if not runtime().settings.expose_status:
        reason = "ready" if ready else "not ready"  # the details name models and paths
    return jsonify({"ready": ready, "reason": reason}), 200 if ready else 503


@bp.get("/status")
def status_json() -> tuple[Response, int]:
    _require_exposed()
    rt = runtime()
    return jsonify(document(rt.settings, rt.journal, rt.quarantine)), 200


@bp.get("/metrics")
def metrics_page() -> Response:
    _require_exposed()
    rt = runtime()
    return Response(metrics.render(rt.journal, rt.settings.model_dir), mimetype=CONTENT_TYPE_LATEST)


def _require_exposed() -> None:
    if not runtime().settings.expose_status:
        abort(404)  # RECEIVER_EXPOSE_STATUS=false: as if these pages did not exist


def _error_response(error: DeliveryError) -> tuple[Response, int]:
    body: dict[str, object] = {"outcome": error.outcome, "reason": error.reason}
    if isinstance(error, RejectedDeliveryError):
        # Authenticated but unusable: acknowledge, and keep the body for the operator.
        body["quarantine"] = runtime().quarantine.keep(
            request.get_data(), dict(request.headers.items()), error.reason
        )
    log.warning("%s %s -> %s: %s", request.method, request.path, error.http_status, error.reason)
    if request.method == "POST" and request.path in PUSH_PATHS:
        metrics.PUSHES.labels(format="unknown", outcome=error.outcome).inc()
        if isinstance(error, _AUTH_ERRORS):
            metrics.AUTH_FAILURES.labels(reason=error.label).inc()
    return jsonify(body), error.http_status


def _too_large(_: RequestEntityTooLarge) -> tuple[Response, int]:
    return _error_response(
        PayloadTooLargeError(f"request body is larger than {MAX_BODY_BYTES} bytes")
    )


def _unexpected(_: InternalServerError) -> tuple[Response, int]:
    # Flask has logged the traceback already (Flask.log_exception); the answer names nothing
    # of it, since an exception's text can hold paths, object names or a token's claims.
    return _error_response(
        DeliveryError("unexpected error in the receiver; its log has the details")
    )


def _http_error(error: HTTPException) -> tuple[Response, int]:
    """Werkzeug's own answers (404, 405, a body that never arrived): JSON like the rest."""
    status = error.code or 500
    body = {"outcome": PushOutcome.ERROR.value, "reason": error.description or error.name}
    log.warning("%s %s -> %s: %s", request.method, request.path, status, error.name)
    return jsonify(body), status
