"""gunicorn settings for the receiver: `gunicorn -c gunicorn.conf.py`.

The master validates the configuration and cleans up after a crash once, before any
worker starts; each worker process then runs one install thread beside its web threads.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from receiver.config import Settings
from receiver.errors import ConfigError
from receiver.logs import configure_logging
from receiver.runtime import prepare_host

# Server socket
bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"

# No runtime control socket: one fixed path per user would clash between receivers.
control_socket_disable = True

# Worker processes: web threads answer pushes while the install thread works.
wsgi_app = "receiver.web:create_app()"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Must exceed RECEIVER_ACK_TIMEOUT: with RECEIVER_ACK=installed a push waits for its install.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "600"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))

# Logging: the receiver's own records and gunicorn's go to stderr, one line each.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")


def on_starting(server: Any) -> None:
    """Validate settings and clean up after a crash, before any worker is forked."""
    configure_logging()
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        _refuse(str(exc))
    if settings.ack == "installed" and server.cfg.timeout <= settings.ack_timeout:
        _refuse(
            f"GUNICORN_TIMEOUT ({server.cfg.timeout}s) must exceed RECEIVER_ACK_TIMEOUT "
            f"({settings.ack_timeout:g}s) when RECEIVER_ACK=installed"
        )
    prepare_host(settings)


def _refuse(message: str) -> None:
    print(f"receiver: configuration error: {message}", file=sys.stderr)
    sys.exit(2)


def post_worker_init(worker: Any) -> None:
    """Start this process's install thread; pushes waiting on installs watch `alive`."""
    configure_logging()
    runtime = worker.wsgi.extensions["receiver"]
    runtime.serving = lambda: worker.alive
    runtime.worker.start()


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the install thread; a job cut short is resumed after restart."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "receiver" in getattr(app, "extensions", {}):
        app.extensions["receiver"].worker.stop(grace=max(graceful_timeout - 5, 1))
