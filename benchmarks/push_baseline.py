"""The baseline for the push benchmark: Google's published push sample, as written.

Google's sample (python-docs-samples, appengine/standard_python3/pubsub/main.py) checks
every push with `id_token.verify_oauth2_token(token, requests.Request(), audience=...)`:
a new transport per push, so the certificates are fetched again, over a new HTTPS
connection, on every call. `app` does the same through `verify_token(...,
certs_url=...)`, which `verify_oauth2_token` calls, with the certificates' URL pointed
at a local stand-in. `app_one_transport` shares one transport between pushes, as earlier
rounds of the benchmark did. Served by gunicorn with the receiver's own settings
(benchmarks/push.py starts them); RECEIVER_AUDIENCE and RECEIVER_CERTS_URL configure both.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import google.auth.transport
import google.auth.transport.requests
from flask import Flask, request
from google.oauth2 import id_token

_AUDIENCE = os.environ.get("RECEIVER_AUDIENCE", "")
_CERTS_URL = os.environ.get("RECEIVER_CERTS_URL", "")


def create_app(transport: Callable[[], google.auth.transport.Request]) -> Flask:
    app = Flask(__name__)

    @app.post("/")
    def push() -> tuple[str, int]:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            id_token.verify_token(token, transport(), audience=_AUDIENCE, certs_url=_CERTS_URL)
        except ValueError:
            return "", 401
        request.get_json(force=True)
        return "", 204

    return app


_SHARED = google.auth.transport.requests.Request()

app = create_app(google.auth.transport.requests.Request)
app_one_transport = create_app(lambda: _SHARED)
