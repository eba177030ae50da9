"""Settings: one frozen object read from the environment once and validated at start-up.

Each variable is declared once, in `receiver.variables` (name, default, parser, meaning);
`Settings.from_env` reads every declaration of `RECEIVER` into the field it names, then
checks the rules that involve more than one variable. A bad value raises `ConfigError`
with one line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from receiver.errors import ConfigError
from receiver.peers import Peers
from receiver.variables import RECEIVER, SERVER
from receiver.vocabulary import AckMode, AuthMode, DeleteMode, LogFormat, LogLevel, UnwrappedMode

# Pub/Sub's longest ack deadline: a push answered later counts as a nack anyway.
MAX_ACK_TIMEOUT = 600


def _default(key: str) -> Any:
    """The parsed default of a declared setting, for the dataclasses' own defaults."""
    var = RECEIVER[key]
    return var.parse(var.name, var.default or "")


@dataclass(frozen=True)
class Limits:
    """What an archive may unpack to; breaking one fails the job for good."""

    max_unpacked_bytes: int
    max_files: int
    max_ratio: int
    unpacked_setting: str = RECEIVER["limits.max_unpacked_bytes"].name  # what sets that


@dataclass(frozen=True)
class Slicing:
    """How large objects are downloaded: `slices` ranged reads at once (`download.sliced`)."""

    slices: int = _default("slicing.slices")
    slice_bytes: int = _default("slicing.slice_bytes")
    threshold: int = _default("slicing.threshold")  # 0: never sliced
    # True: begin as one stream, slice only if the reader waits on it (`ObjectStore.open`)
    adaptive: bool = _default("slicing.adaptive")

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
    # get a 503 at once, so waits never hold every request thread. Its default follows
    # GUNICORN_THREADS (`_max_waiting_pushes`).
    max_waiting_pushes: int
    peers: Peers | None = None  # RECEIVER_PEERS: relay pushes to these (receiver.relay)

    @property
    def auth_enabled(self) -> bool:
        return self.auth is not AuthMode.NONE

    @property
    def source(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], verifies_pushes: bool = True, reads_storage: bool = True
    ) -> Settings:
        """Read and validate the settings; raise `ConfigError` naming the first bad variable.

        `verifies_pushes=False` (commands that never check a token: install, sync, status,
        retry) does not ask for RECEIVER_AUDIENCE and RECEIVER_ALLOWED_SENDERS;
        `reads_storage=False` (`receiver status`, which reads the model dir and journal
        only) does not ask for RECEIVER_SOURCE: its bucket and prefix are then "".
        """
        skipped = set() if reads_storage or RECEIVER["source"].raw(environ) else {"source"}
        values = {key: var.read(environ) for key, var in RECEIVER.items() if key not in skipped}
        bucket, prefix = values.pop("source", ("", ""))
        parts = {part: _pop_part(values, part) for part in ("limits", "slicing")}
        waiting = _max_waiting_pushes(values.pop("max_waiting_pushes"), environ)
        values["state_dir"] = values["state_dir"] or values["model_dir"] / ".receiver"
        settings = cls(
            bucket=bucket,
            prefix=prefix,
            limits=Limits(**parts["limits"]),
            slicing=Slicing(**parts["slicing"]),
            max_waiting_pushes=waiting,
            **values,
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
        return cls(**{field: var.read(environ) for field, var in SERVER.items()})


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


def _pop_part(values: dict[str, Any], part: str) -> dict[str, Any]:
    """The `part.`-keyed values (the fields of Limits or Slicing), taken out of `values`."""
    keys = [key for key in values if key.startswith(f"{part}.")]
    return {key.removeprefix(f"{part}."): values.pop(key) for key in keys}


def _max_waiting_pushes(waiting: int | None, environ: Mapping[str, str]) -> int:
    threads: int = SERVER["threads"].read(environ)
    if waiting is None:
        return max(threads - 2, 1)
    if waiting >= max(threads, 2):  # with one thread, one waiting push is all there is
        raise ConfigError(
            f"RECEIVER_MAX_WAITING_PUSHES has value {waiting}: must be below GUNICORN_THREADS "
            f"({threads}), or waiting pushes can hold every request thread"
        )
    return waiting
