"""Settings: one frozen object read from the environment once and validated at start-up.

Every environment variable the receiver reads is named once, in `ENV`, with its
default and meaning; the README's configuration table is checked against it by a test.
A bad value raises `ConfigError` with one line naming the variable.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from receiver.errors import ConfigError
from receiver.peers import Peers, parse_peers
from receiver.vocabulary import (
    AckMode,
    AuthMode,
    DeleteMode,
    LogFormat,
    LogLevel,
    SlicingMode,
    UnwrappedMode,
)

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
MIB = 1024**2
GIB = 1024**3
_SLICES, _SLICE_BYTES, _SLICED_FROM = 8, 4 * MIB, 128 * MIB  # sliced download defaults

# name -> (default, meaning). None means required or derived from another variable.
ENV: dict[str, tuple[str | None, str]] = {
    "RECEIVER_SOURCE": (None, "gs://BUCKET/PREFIX the models are published under"),
    "RECEIVER_MODEL_DIR": ("/models", "TF Serving's model base directory"),
    "RECEIVER_STATE_DIR": (None, "journal and quarantine; default <model dir>/.receiver"),
    "RECEIVER_KEEP_VERSIONS": ("2", "versions kept per model after an install; 0 keeps all"),
    "RECEIVER_AUTH": ("google", "`google` (verify push tokens) or `none` (explicitly off)"),
    "RECEIVER_AUDIENCE": (None, "expected `aud` of push tokens (required with auth on)"),
    "RECEIVER_ALLOWED_SENDERS": (None, "comma-separated service-account emails"),
    "RECEIVER_CERTS_URL": (GOOGLE_CERTS_URL, "Google's signing certs: https:// or file://"),
    "RECEIVER_MAX_UNPACKED_BYTES": (str(64 * GIB), "largest total unpacked size of a model"),
    "RECEIVER_MAX_FILES": ("100000", "most entries an archive may hold"),
    "RECEIVER_MAX_RATIO": ("200", "largest unpacked/compressed ratio (bomb guard)"),
    "RECEIVER_SAVED_MODEL_TAGS": ("serve", "tag set TF Serving loads (its --saved_model_tags)"),
    "RECEIVER_MAX_GRAPH_BYTES": ("1Gi", "largest saved_model.pb checked (parsed in memory)"),
    "RECEIVER_TFSERVING_URL": ("", "TF Serving's REST URL: confirm each load; empty = don't"),
    "RECEIVER_LOAD_TIMEOUT": ("600", "seconds to wait for TF Serving's verdict on a load"),
    "RECEIVER_SERVING_MEMORY_LIMIT": ("", "TF Serving's memory: refuse a swap that won't fit"),
    "RECEIVER_VOLUME_SIZE_LIMIT": ("", "the model volume's size limit (an emptyDir's sizeLimit)"),
    "RECEIVER_MAX_ATTEMPTS": ("5", "attempts for a job that fails transiently"),
    "RECEIVER_RETRY_DELAY": ("2", "seconds before the first retry; doubles each attempt"),
    "RECEIVER_READ_TIMEOUT": ("60", "seconds of silence from Cloud Storage before a retry"),
    "RECEIVER_DOWNLOAD_SLICES": (str(_SLICES), "parallel ranged reads of a large object; 1 = one"),
    "RECEIVER_SLICE_BYTES": (
        str(_SLICE_BYTES),
        "bytes per ranged read; at most slices × this held",
    ),
    "RECEIVER_SLICED_DOWNLOAD_THRESHOLD": (
        str(_SLICED_FROM),
        "objects at least this large may be read in slices; 0 = never",
    ),
    "RECEIVER_SLICING": (
        "auto",
        "`auto`: slice only if one slow stream keeps the unpacker waiting; `always`",
    ),
    "RECEIVER_ACK": ("queued", "`queued` (202 once journaled) or `installed` (answer when done)"),
    "RECEIVER_ACK_TIMEOUT": ("540", "longest wait in `installed` mode before a 503"),
    "RECEIVER_MAX_WAITING_PUSHES": (
        None,
        "pushes one process lets wait in `installed` mode; default GUNICORN_THREADS - 2",
    ),
    "RECEIVER_ON_DELETE": ("ignore", "`ignore` or `remove` a version whose object is deleted"),
    "RECEIVER_SYNC_ON_START": ("true", "install the bucket's newest versions at start"),
    "RECEIVER_SYNC_INTERVAL": ("0", "seconds between repeated syncs; 0 = only at start"),
    "RECEIVER_JOB_RETENTION_DAYS": ("30", "days finished jobs stay in the journal; 0 = forever"),
    "RECEIVER_UNWRAPPED_WITHOUT_METADATA": ("reject", "`reject` or `finalize` bare object pushes"),
    "RECEIVER_DONE_MARKER": ("_SUCCESS", "object that completes a directory upload"),
    "RECEIVER_MODEL_CONFIG_FILE": ("", "TF Serving --model_config_file to keep up to date"),
    "RECEIVER_EXPOSE_STATUS": ("true", "serve /, /status and /metrics; false hides all three"),
    "RECEIVER_LOG_FORMAT": (
        "auto",
        "`json` (Cloud Logging), `text`, or `auto`: text on a terminal",
    ),
    "RECEIVER_PEERS": ("", "replicas to relay pushes to: dns:NAME:PORT or URLs; empty = none"),
    # Read by gunicorn.conf.py through `ServerSettings`.
    "PORT": ("8080", "listen port"),
    "WEB_CONCURRENCY": ("2", "gunicorn worker processes"),
    "GUNICORN_THREADS": ("8", "request threads per worker process"),
    "GUNICORN_TIMEOUT": ("600", "gunicorn worker timeout, seconds"),
    "GUNICORN_GRACEFUL_TIMEOUT": ("25", "seconds to finish in-flight work on SIGTERM"),
    "GUNICORN_LOG_LEVEL": ("info", "gunicorn's log level"),
}
_Mode = TypeVar("_Mode", bound=enum.StrEnum)

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# Pub/Sub's longest ack deadline: a push answered later counts as a nack anyway.
MAX_ACK_TIMEOUT = 600
_SIZE_RE = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>|Ki|Mi|Gi|Ti)")
_SIZE_UNITS = {"": 1, "Ki": 1024, "Mi": MIB, "Gi": GIB, "Ti": 1024 * GIB}
_SOURCE_RE = re.compile(  # matched whole (fullmatch): `$` accepts a trailing newline
    r"gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(?P<prefix>.*))?"
)


@dataclass(frozen=True)
class Limits:
    """What an archive may unpack to; breaking one fails the job for good."""

    max_unpacked_bytes: int
    max_files: int
    max_ratio: int
    unpacked_setting: str = "RECEIVER_MAX_UNPACKED_BYTES"  # what sets max_unpacked_bytes


@dataclass(frozen=True)
class Slicing:
    """How large objects are downloaded: `slices` ranged reads at once (`receiver.sliced`)."""

    slices: int = _SLICES
    slice_bytes: int = _SLICE_BYTES
    threshold: int = _SLICED_FROM  # 0: never sliced
    # True: begin as one stream, slice only if the reader waits on it (`storage.open`)
    adaptive: bool = True

    @property
    def enabled(self) -> bool:
        return self.slices > 1 and self.threshold > 0


@dataclass(frozen=True)
class Settings:
    """Everything the receiver is configured with; built once by `from_env`."""

    bucket: str
    prefix: str  # "" or ending in "/"
    model_dir: Path
    state_dir: Path
    keep_versions: int
    auth: AuthMode
    audience: str
    allowed_senders: frozenset[str]
    certs_url: str
    limits: Limits
    saved_model_tags: frozenset[str]
    max_graph_bytes: int
    tfserving_url: str  # "" when loads are not confirmed
    load_timeout: float
    serving_memory_limit: int | None
    volume_size_limit: int | None
    max_attempts: int
    retry_delay: float
    read_timeout: float
    slicing: Slicing
    ack: AckMode
    ack_timeout: float
    on_delete: DeleteMode
    sync_on_start: bool
    sync_interval: float
    job_retention_days: float
    unwrapped_without_metadata: UnwrappedMode
    done_marker: str
    model_config_file: Path | None
    expose_status: bool
    log_format: LogFormat
    # Pushes a worker process lets wait for their installs (RECEIVER_ACK=installed); more
    # get a 503 at once, so waits never hold every request thread.
    max_waiting_pushes: int = 6
    peers: Peers | None = None  # RECEIVER_PEERS: relay pushes to these (receiver.relay)

    @property
    def auth_enabled(self) -> bool:
        return self.auth is not AuthMode.NONE

    @property
    def source(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], verifies_pushes: bool = True) -> Settings:
        """Read and validate the settings; raise `ConfigError` naming the first bad variable.

        `verifies_pushes=False` (commands that never check a token: install, sync, status,
        retry) does not ask for RECEIVER_AUDIENCE and RECEIVER_ALLOWED_SENDERS.
        """
        env = _Reader(environ)
        bucket, prefix = _parse_source(env.required("RECEIVER_SOURCE"))
        model_dir = env.path("RECEIVER_MODEL_DIR")
        state_dir = env.path("RECEIVER_STATE_DIR", default=model_dir / ".receiver")
        auth = env.choice("RECEIVER_AUTH", AuthMode)
        settings = cls(
            bucket=bucket,
            prefix=prefix,
            model_dir=model_dir,
            state_dir=state_dir,
            keep_versions=env.integer("RECEIVER_KEEP_VERSIONS", minimum=0),
            auth=auth,
            audience=env.text("RECEIVER_AUDIENCE"),
            allowed_senders=frozenset(env.csv("RECEIVER_ALLOWED_SENDERS")),
            certs_url=env.text("RECEIVER_CERTS_URL"),
            limits=Limits(
                max_unpacked_bytes=env.integer("RECEIVER_MAX_UNPACKED_BYTES", minimum=1),
                max_files=env.integer("RECEIVER_MAX_FILES", minimum=1),
                max_ratio=env.integer("RECEIVER_MAX_RATIO", minimum=1),
            ),
            saved_model_tags=env.tag_set("RECEIVER_SAVED_MODEL_TAGS"),
            max_graph_bytes=env.size("RECEIVER_MAX_GRAPH_BYTES", minimum=1),
            tfserving_url=env.url("RECEIVER_TFSERVING_URL"),
            load_timeout=env.number("RECEIVER_LOAD_TIMEOUT", minimum=1),
            serving_memory_limit=env.optional_size("RECEIVER_SERVING_MEMORY_LIMIT"),
            volume_size_limit=env.optional_size("RECEIVER_VOLUME_SIZE_LIMIT"),
            max_attempts=env.integer("RECEIVER_MAX_ATTEMPTS", minimum=1),
            retry_delay=env.number("RECEIVER_RETRY_DELAY", minimum=0),
            read_timeout=env.number("RECEIVER_READ_TIMEOUT", minimum=0.1),
            slicing=Slicing(
                slices=env.integer("RECEIVER_DOWNLOAD_SLICES", minimum=1),
                slice_bytes=env.integer("RECEIVER_SLICE_BYTES", minimum=64 * 1024),
                threshold=env.integer("RECEIVER_SLICED_DOWNLOAD_THRESHOLD", minimum=0),
                adaptive=env.choice("RECEIVER_SLICING", SlicingMode) is SlicingMode.AUTO,
            ),
            ack=env.choice("RECEIVER_ACK", AckMode),
            ack_timeout=env.number("RECEIVER_ACK_TIMEOUT", minimum=1),
            on_delete=env.choice("RECEIVER_ON_DELETE", DeleteMode),
            sync_on_start=env.boolean("RECEIVER_SYNC_ON_START"),
            sync_interval=env.number("RECEIVER_SYNC_INTERVAL", minimum=0),
            job_retention_days=env.number("RECEIVER_JOB_RETENTION_DAYS", minimum=0),
            unwrapped_without_metadata=env.choice(
                "RECEIVER_UNWRAPPED_WITHOUT_METADATA", UnwrappedMode
            ),
            done_marker=env.required("RECEIVER_DONE_MARKER"),
            model_config_file=env.optional_path("RECEIVER_MODEL_CONFIG_FILE"),
            expose_status=env.boolean("RECEIVER_EXPOSE_STATUS"),
            log_format=env.choice("RECEIVER_LOG_FORMAT", LogFormat),
            max_waiting_pushes=_max_waiting_pushes(env),
            peers=parse_peers(env.text("RECEIVER_PEERS")),
        )
        settings.validate(verifies_pushes)
        return settings

    def validate(self, verifies_pushes: bool = True) -> None:
        """Rules that involve more than one variable."""
        if "/" in self.done_marker:
            raise ConfigError(
                f"RECEIVER_DONE_MARKER has value {self.done_marker!r}: a file name, without '/'"
            )
        if self.state_dir == self.model_dir:
            raise ConfigError(
                f"RECEIVER_STATE_DIR is {self.state_dir}, the model dir itself: its journal "
                "and quarantine would sit among the models; use a directory of its own "
                "(the default is <model dir>/.receiver)"
            )
        if self.ack_timeout >= MAX_ACK_TIMEOUT:
            raise ConfigError(
                f"RECEIVER_ACK_TIMEOUT has value {self.ack_timeout:g}: must be below "
                f"{MAX_ACK_TIMEOUT}, Pub/Sub's longest ack deadline"
            )
        if not self.auth_enabled or not verifies_pushes:
            return
        if not self.audience:
            raise ConfigError(
                "RECEIVER_AUDIENCE is required while RECEIVER_AUTH=google: set it to the "
                "push subscription's --push-auth-token-audience"
            )
        if not self.allowed_senders:
            raise ConfigError(
                "RECEIVER_ALLOWED_SENDERS is required while RECEIVER_AUTH=google: any Google "
                "account can mint a token for any audience, so name the push service account"
            )
        if not self.certs_url.startswith(("https://", "http://", "file://")):
            raise ConfigError(
                f"RECEIVER_CERTS_URL has value {self.certs_url!r}: use an https:// or file:// URL"
            )


@dataclass(frozen=True)
class ServerSettings:
    """gunicorn's settings (gunicorn.conf.py), validated like the receiver's own."""

    port: int
    workers: int
    threads: int
    timeout: int
    graceful_timeout: int
    log_level: LogLevel

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServerSettings:
        env = _Reader(environ)
        port = env.integer("PORT", minimum=1)
        if port > 65535:
            raise ConfigError(f"PORT has value {port}: must be at most 65535")
        return cls(
            port=port,
            workers=env.integer("WEB_CONCURRENCY", minimum=1),
            threads=env.integer("GUNICORN_THREADS", minimum=1),
            timeout=env.integer("GUNICORN_TIMEOUT", minimum=1),
            graceful_timeout=env.integer("GUNICORN_GRACEFUL_TIMEOUT", minimum=1),
            log_level=env.choice("GUNICORN_LOG_LEVEL", LogLevel),
        )


def check_model_dir(settings: Settings) -> None:
    """The model dir exists (or can be made) and is writable; else one line saying which."""
    if settings.model_dir.exists() and not settings.model_dir.is_dir():
        raise ConfigError(f"RECEIVER_MODEL_DIR is {settings.model_dir}: not a directory")
    try:
        settings.model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"RECEIVER_MODEL_DIR is {settings.model_dir}: it does not exist and cannot be "
            f"created ({exc.strerror})"
        ) from None
    if not os.access(settings.model_dir, os.W_OK | os.X_OK):
        raise ConfigError(
            f"RECEIVER_MODEL_DIR is {settings.model_dir}: not writable by this user "
            f"(uid {os.getuid()}); share the volume with write access (fsGroup in Kubernetes)"
        )


def _max_waiting_pushes(env: _Reader) -> int:
    threads = env.integer("GUNICORN_THREADS", minimum=1)
    if not env.text("RECEIVER_MAX_WAITING_PUSHES"):
        return max(threads - 2, 1)
    waiting = env.integer("RECEIVER_MAX_WAITING_PUSHES", minimum=1)
    if waiting >= max(threads, 2):  # with one thread, one waiting push is all there is
        raise ConfigError(
            f"RECEIVER_MAX_WAITING_PUSHES has value {waiting}: must be below GUNICORN_THREADS "
            f"({threads}), or waiting pushes can hold every request thread"
        )
    return waiting


def _parse_source(value: str) -> tuple[str, str]:
    match = _SOURCE_RE.fullmatch(value)
    if not match:
        bucket = value.removeprefix("gs://").partition("/")[0]
        if value.startswith("gs://") and bucket:
            raise ConfigError(
                f"RECEIVER_SOURCE has value {value!r}: {bucket!r} is not a bucket name (3 to "
                "222 characters: lowercase letters, digits, '-', '_' and '.', beginning and "
                "ending with a letter or digit)"
            )
        raise ConfigError(
            f"RECEIVER_SOURCE has value {value!r}: expected gs://BUCKET or gs://BUCKET/PREFIX"
        )
    prefix = (match["prefix"] or "").strip("/")
    return match["bucket"], f"{prefix}/" if prefix else ""


class _Reader:
    """Typed access to the environment, falling back to the defaults in `ENV`."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or ENV[name][0]

    def required(self, name: str) -> str:
        value = self._raw(name)
        if value is None:
            raise ConfigError(f"{name} is required: {ENV[name][1]}")
        return value

    def text(self, name: str) -> str:
        return self._raw(name) or ""

    def path(self, name: str, default: Path | None = None) -> Path:
        value = self._raw(name)
        if value is None:
            assert default is not None, name
            return default
        path = Path(value)
        if not path.is_absolute():
            path = Path.cwd() / path
        return path

    def optional_path(self, name: str) -> Path | None:
        return self.path(name) if self.text(name) else None

    def integer(self, name: str, minimum: int) -> int:
        value = self.required(name)
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} has value {value!r}: not a whole number") from None
        if number < minimum:
            raise ConfigError(f"{name} has value {value!r}: must be at least {minimum}")
        return number

    def number(self, name: str, minimum: float) -> float:
        value = self.required(name)
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} has value {value!r}: not a number") from None
        if not number >= minimum:  # also refuses nan
            raise ConfigError(f"{name} has value {value!r}: must be at least {minimum:g}")
        return number

    def size(self, name: str, minimum: int) -> int:
        """Bytes, as a whole number or with a Ki, Mi, Gi or Ti suffix (Kubernetes' units)."""
        value = self.required(name)
        match = _SIZE_RE.fullmatch(value)
        if not match:
            raise ConfigError(
                f"{name} has value {value!r}: bytes, as a whole number or with a suffix "
                "Ki, Mi, Gi or Ti (e.g. 4Gi)"
            )
        number = int(match["number"]) * _SIZE_UNITS[match["unit"]]
        if number < minimum:
            raise ConfigError(f"{name} has value {value!r}: must be at least {minimum} bytes")
        return number

    def optional_size(self, name: str) -> int | None:
        return self.size(name, minimum=1) if self.text(name) else None

    def url(self, name: str) -> str:
        value = self.text(name).rstrip("/")
        if value and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ConfigError(
                f"{name} has value {value!r}: an http:// or https:// URL "
                "(TF Serving's REST port, e.g. http://localhost:8501)"
            )
        return value

    def tag_set(self, name: str) -> frozenset[str]:
        tags = frozenset(self.csv(name))
        if not tags:
            raise ConfigError(f"{name} has value {self.text(name)!r}: name at least one tag")
        return tags

    def boolean(self, name: str) -> bool:
        value = self.required(name).lower()
        if value not in _BOOLEANS:
            raise ConfigError(f"{name} has value {value!r}: must be true or false")
        return _BOOLEANS[value]

    def choice(self, name: str, allowed: type[_Mode]) -> _Mode:
        value = self.required(name).lower()
        try:
            return allowed(value)
        except ValueError:
            raise ConfigError(
                f"{name} has value {value!r}: must be one of {', '.join(allowed)}"
            ) from None

    def csv(self, name: str) -> list[str]:
        return [item.strip() for item in self.text(name).split(",") if item.strip()]
