"""gunicorn settings for the receiver: `gunicorn -c gunicorn.conf.py`.

The master validates the configuration and cleans up after a crash once, before any
worker starts; each worker process then runs one install thread beside its web threads.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

# prometheus-client picks single- or multi-process mode when first imported, so the
# directory where every worker writes its samples is set before anything imports it.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
else:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="receiver-metrics-")

from prometheus_client import multiprocess  # noqa: E402

from receiver.config import ServerSettings, Settings, check_model_dir  # noqa: E402
from receiver.errors import ConfigError  # noqa: E402
from receiver.logs import GunicornLogger, gunicorn_logconfig, lean_records  # noqa: E402
from receiver.runtime import prepare_host  # noqa: E402
from receiver.variables import RECEIVER  # noqa: E402
from receiver.vocabulary import (
    AckMode,  # noqa: E402
    LogFormat,  # noqa: E402
)

try:
    _server = ServerSettings.from_env(os.environ)
except ConfigError as exc:
    # gunicorn has not set up logging yet: one plain line, and the same exit code as below.
    print(f"receiver: configuration error: {exc}", file=sys.stderr)
    sys.exit(2)

# Server socket
bind = f"0.0.0.0:{_server.port}"
# No runtime control socket: one fixed path per user would clash between receivers.
control_socket_disable = True
# Workers' heartbeat files in memory, not on a (possibly read-only) root filesystem.
if Path("/dev/shm").is_dir():
    worker_tmp_dir = "/dev/shm"

# Worker processes: web threads answer pushes while the install thread works.
wsgi_app = "receiver.web:create_app()"
workers = _server.workers
# gthread, with a lane of its own for /healthz and /readyz and no request thread spent on
# a connection before it sends anything (receiver/probelane.py, docs/operating.md).
worker_class = "receiver.probelane.ProbeLaneWorker"
threads = _server.threads
# Seconds a kept-alive connection, or a new one that has sent nothing yet, stays open.
# Pub/Sub and probes send at once; a longer wait only helps a client that dawdles.
keepalive = 5
# Must exceed RECEIVER_ACK_TIMEOUT: with RECEIVER_ACK=installed a push waits for its install.
timeout = _server.timeout
graceful_timeout = _server.graceful_timeout

# Logging: gunicorn's records and the receiver's, one line each on stderr, in the format
# RECEIVER_LOG_FORMAT asks for (a bad value is reported by on_starting below). No access
# log unless asked for (GUNICORN_CMD_ARGS="--access-logfile -"): the receiver logs every
# push with its outcome, the platform logs requests (Cloud Run, an ingress), and a line
# per health probe is noise; formatting it was 15% of a push (docs/benchmarks.md).
accesslog = None
errorlog = "-"
logger_class = GunicornLogger
loglevel = _server.log_level
try:
    _log_format = RECEIVER["log_format"].read(os.environ)
except ConfigError:
    _log_format = LogFormat.AUTO  # until on_starting reports the bad value
logconfig_dict = gunicorn_logconfig(_log_format)
lean_records()  # in the master, so in every worker forked from it


def on_starting(server: Any) -> None:
    """Validate settings and clean up after a crash, before any worker is forked."""
    try:
        settings = Settings.from_env(os.environ)
        check_model_dir(settings)
    except ConfigError as exc:
        _refuse(str(exc))
    if settings.ack is AckMode.INSTALLED and server.cfg.timeout <= settings.ack_timeout:
        _refuse(
            f"GUNICORN_TIMEOUT ({server.cfg.timeout}s) must exceed RECEIVER_ACK_TIMEOUT "
            f"({settings.ack_timeout:g}s) when RECEIVER_ACK=installed"
        )
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()  # samples of an earlier run would be added to this one's
    prepare_host(settings)


def _refuse(message: str) -> None:
    # gunicorn has set up logging by now: the line comes out in the chosen format, the
    # text one naming the logger ("receiver: configuration error: …") once.
    logging.getLogger("receiver").critical("configuration error: %s", message)
    sys.exit(2)


def post_worker_init(worker: Any) -> None:
    """Start this process's install thread; pushes waiting on installs watch `alive`."""
    runtime = worker.wsgi.extensions["receiver"]
    runtime.serving = lambda: worker.alive
    runtime.worker.start()


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the install thread; a job cut short is resumed after restart."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "receiver" in getattr(app, "extensions", {}):
        runtime = app.extensions["receiver"]
        if runtime.relay is not None:
            runtime.relay.drain(timeout=2)  # the last pushes' relays; what is left: sync
        runtime.worker.stop(grace=max(graceful_timeout - 5, 1))


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live metrics (its counters stay counted)."""
    multiprocess.mark_process_dead(worker.pid)
