"""The ceiling for the push benchmark: a Flask route that only parses the JSON body.

Served by gunicorn with the receiver's own settings (benchmarks/push.py starts it), it
shows what Flask and gunicorn cost on their own: no push can be answered faster here.
"""

from __future__ import annotations

from flask import Flask, request

app = Flask(__name__)


@app.post("/")
def push() -> tuple[str, int]:
    request.get_json()
    return "", 204
