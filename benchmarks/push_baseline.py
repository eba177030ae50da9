"""The baseline for the push benchmark: Google's published push-sample approach.

Verifies every push with `google.oauth2.id_token.verify_token(..., certs_url=...)`, which
fetches the certificates again on every call, then answers 204. Served by gunicorn with
the receiver's own settings (benchmarks/push.py starts it):

    RECEIVER_AUDIENCE=... RECEIVER_CERTS_URL=http://... \\
        gunicorn -c gunicorn.conf.py benchmarks.push_baseline:app   (see push.py)
"""

from __future__ import annotations

import os

import google.auth.transport.requests
from flask import Flask, request
from google.oauth2 import id_token

app = Flask(__name__)
_AUDIENCE = os.environ.get("RECEIVER_AUDIENCE", "")
_CERTS_URL = os.environ.get("RECEIVER_CERTS_URL", "")
_TRANSPORT = google.auth.transport.requests.Request()


@app.post("/")
def push() -> tuple[str, int]:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    try:
        id_token.verify_token(token, _TRANSPORT, audience=_AUDIENCE, certs_url=_CERTS_URL)
    except ValueError:
        return "", 401
    request.get_json(force=True)
    return "", 204
