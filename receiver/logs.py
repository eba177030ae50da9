"""Logging: one JSON object a line for Cloud Logging, or readable text on a terminal.

JSON lines use Cloud Logging's structured-logging fields (`severity`, `message`, `time`,
`logging.googleapis.com/trace`), plus the fields of whatever the line is about: the
job's `model`, `version`, `object` and `generation` while a job runs, the request's
trace while a request is served. Those come from `log_context`, a context variable, so
call sites stay plain `log.info(...)`. gunicorn's own logs go through the same handler.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import os
import re
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from gunicorn import glogging

from receiver.vocabulary import LogFormat

# Cloud Logging field names (https://cloud.google.com/logging/docs/structured-logging).
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
_SEVERITY = {"WARNING": "WARNING", "CRITICAL": "CRITICAL", "ERROR": "ERROR", "INFO": "INFO"}
_CLOUD_TRACE_RE = re.compile(r"^(?P<trace>[0-9a-fA-F]{32})(?:/(?P<span>\d+))?")
_TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-")
_TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
_JSON = json.JSONEncoder(default=str)  # built once: json.dumps(default=...) builds one a call

_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "receiver_log_context", default=types.MappingProxyType({})
)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add `fields` to every log line written inside the block (this thread or task)."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def bind(**fields: object) -> contextvars.Token[Mapping[str, object]]:
    """Add `fields` to this thread's log lines until `unbind` (for hooks that cannot nest)."""
    return _context.set({**_context.get(), **fields})


def unbind(token: contextvars.Token[Mapping[str, object]]) -> None:
    _context.reset(token)


class _Headers(Protocol):
    def get(self, key: str, default: str) -> str: ...


def trace_fields(headers: _Headers) -> dict[str, object]:
    """Cloud Logging trace fields from X-Cloud-Trace-Context or W3C traceparent headers.

    `headers` is looked up by those two names: a request's (case-insensitive) headers."""
    match = _CLOUD_TRACE_RE.match(
        headers.get("X-Cloud-Trace-Context", "")
    ) or _TRACEPARENT_RE.match(headers.get("traceparent", ""))
    if not match:
        return {}
    # GOOGLE_CLOUD_PROJECT is Google's own variable; with it the trace links in the console.
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    trace = match["trace"]
    fields: dict[str, object] = {
        TRACE_FIELD: f"projects/{project}/traces/{trace}" if project else trace
    }
    if match["span"]:
        fields[SPAN_FIELD] = match["span"]
    return fields


class JsonFormatter(logging.Formatter):
    """One Cloud Logging structured entry per record."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEBUG"),
            "message": message,
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "logger": record.name,
            "process": record.process,
            **_context.get(),
        }
        return _JSON.encode(entry)


class TextFormatter(logging.Formatter):
    """The usual one-line format, with the context fields appended."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in _context.get().items() if not k.startswith("logging.")}
        if fields:
            line += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return line


def resolve_format(log_format: LogFormat) -> LogFormat:
    """`auto` means text on a terminal, JSON otherwise (containers, log collectors)."""
    if log_format is LogFormat.AUTO:
        return LogFormat.TEXT if sys.stderr.isatty() else LogFormat.JSON
    return log_format


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    text = resolve_format(log_format) is LogFormat.TEXT
    return TextFormatter() if text else JsonFormatter()


def lean_records() -> None:
    """Leave out of every log record what no line here shows: the caller's file and line
    (a walk up the stack), the thread's and the multiprocessing process's names. The
    logging HOWTO's "Optimization" section names these switches; with them a push's log
    line costs about a fifth less."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


def configure_logging(log_format: LogFormat = LogFormat.AUTO, level: int = logging.INFO) -> None:
    """Send records to stderr in the chosen format, unless the host set up logging already."""
    lean_records()
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    root.addHandler(handler)
    root.setLevel(level)


class GunicornLogger(glogging.Logger):  # type: ignore[misc]  # gunicorn has no types
    """gunicorn's logger, writing access lines only when an access log is asked for.

    gunicorn turns its access log on whenever `logconfig_dict` is set, as it is here to
    share our format; this keeps it to `--access-logfile` (or `accesslog`)."""

    @property
    def access_log_enabled(self) -> bool:
        return bool(self.cfg.accesslog)


def gunicorn_logconfig(log_format: LogFormat) -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its logs and ours through one stderr handler."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "receiver": {"()": f"receiver.logs.{type(formatter_for(log_format)).__name__}"}
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "receiver",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }
