"""Every environment variable the process reads, each declared once.

`RECEIVER`: the receiver's own settings, keyed by the `Settings` field each fills
(`limits.` and `slicing.` name fields of those parts; `source` fills bucket and prefix).
`SERVER`: gunicorn's, keyed by `ServerSettings` field. `PLATFORM`: variables libraries
and the platform read, declared for the reference only.

docs/configuration.md's tables are rendered from these: `python -m receiver.variables`
rewrites them, and tests/test_variables.py fails when the page is stale or when code
reads a variable not declared here.

A new setting: one `Var` in `RECEIVER` under the name of a new field of `Settings` (with
its type), a rule in `Settings.validate` if it involves another variable, then
`python -m receiver.variables`. Code elsewhere reads `settings.<field>`, or, before
there are Settings (the CLI's defaults), `RECEIVER["<field>"].raw(os.environ)`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from receiver.envvars import (
    GIB,
    MIB,
    Var,
    boolean,
    choice,
    comma_set,
    gs_source,
    markdown_table,
    number,
    optional,
    path,
    regenerate,
    size,
    tag_set,
    text,
    then,
    url,
    whole,
)
from receiver.peers import parse_peers
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
REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
_EMPTY = "(empty)"
_WITH_AUTH = "(required with auth)"

RECEIVER: dict[str, Var[Any]] = {
    "source": Var(
        "RECEIVER_SOURCE", None, gs_source, "`gs://BUCKET/PREFIX` the models are published under"
    ),
    "model_dir": Var(
        "RECEIVER_MODEL_DIR", "/models", path, "TF Serving's model base directory (shared volume)"
    ),
    "state_dir": Var(
        "RECEIVER_STATE_DIR", "", optional(path),
        "journal and quarantine (TF Serving ignores the hidden name)",
        shown="`<model dir>/.receiver`",
    ),
    "keep_versions": Var(
        "RECEIVER_KEEP_VERSIONS", "2", whole(minimum=0),
        "versions kept per model after an install; `0` keeps all",
    ),
    "auth": Var(
        "RECEIVER_AUTH", "google", choice(AuthMode),
        "`google` verifies push tokens; `none` switches auth off (logged, and shown in "
        "`/status`)",
    ),
    "audience": Var(
        "RECEIVER_AUDIENCE", "", text,
        "the `aud` the push subscription puts in its tokens", shown=_WITH_AUTH,
    ),
    "allowed_senders": Var(
        "RECEIVER_ALLOWED_SENDERS", "", comma_set,
        "comma-separated service-account emails allowed to push", shown=_WITH_AUTH,
    ),
    "certs_url": Var(
        "RECEIVER_CERTS_URL", GOOGLE_CERTS_URL, text,
        "Google's signing certs; `file://` for local use",
    ),
    "limits.max_unpacked_bytes": Var(
        "RECEIVER_MAX_UNPACKED_BYTES", str(64 * GIB), whole(minimum=1),
        "largest total unpacked size of one archive", shown=f"`{64 * GIB}` (64 GiB)",
    ),
    "limits.max_files": Var(
        "RECEIVER_MAX_FILES", "100000", whole(minimum=1),
        "most entries (files, dirs, links) in one archive",
    ),
    "limits.max_ratio": Var(
        "RECEIVER_MAX_RATIO", "200", whole(minimum=1),
        "largest unpacked/compressed ratio, checked past 16 MiB unpacked",
    ),
    "saved_model_tags": Var(
        "RECEIVER_SAVED_MODEL_TAGS", "serve", tag_set,
        "the tag set TF Serving loads (its `--saved_model_tags`, same comma syntax); a "
        "SavedModel without a meta graph of exactly this set is refused",
    ),
    "max_graph_bytes": Var(
        "RECEIVER_MAX_GRAPH_BYTES", "1Gi", size(minimum=1),
        "largest `saved_model.pb` the check parses (it is read into memory, about twice its "
        "size at the peak); larger is refused",
    ),
    "tfserving_url": Var(
        "RECEIVER_TFSERVING_URL", "", url,
        "TF Serving's REST URL, e.g. `http://localhost:8501`: confirm each load, withdraw a "
        "version TF Serving fails to load; empty: loads are not confirmed", shown=_EMPTY,
    ),
    "load_timeout": Var(
        "RECEIVER_LOAD_TIMEOUT", "600", number(minimum=1),
        "seconds to wait for TF Serving's verdict on a load; past it the version is "
        "`timed_out` (unconfirmed, not withdrawn)",
    ),
    "serving_memory_limit": Var(
        "RECEIVER_SERVING_MEMORY_LIMIT", "", optional(size(minimum=1)),
        "TF Serving's memory limit (bytes, or `Ki`/`Mi`/`Gi` suffixes): refuse a version "
        "whose swap would not fit", shown=_EMPTY,
    ),
    "volume_size_limit": Var(
        "RECEIVER_VOLUME_SIZE_LIMIT", "", optional(size(minimum=1)),
        "the model volume's size limit (bytes, or `Ki`/`Mi`/`Gi`), e.g. an `emptyDir`'s "
        "`sizeLimit`, which the free space seen from inside does not show: an install that "
        "would not fit under it is refused before the download", shown=_EMPTY,
    ),
    "max_attempts": Var(
        "RECEIVER_MAX_ATTEMPTS", "5", whole(minimum=1),
        "attempts for a job that keeps failing transiently",
    ),
    "retry_delay": Var(
        "RECEIVER_RETRY_DELAY", "2", number(minimum=0),
        "seconds before the first retry; doubles per attempt (±50% jitter, at most 300)",
    ),
    "read_timeout": Var(
        "RECEIVER_READ_TIMEOUT", "60", number(minimum=0.1),
        "seconds of silence from Cloud Storage before a download is retried",
    ),
    "slicing.slices": Var(
        "RECEIVER_DOWNLOAD_SLICES", "8", whole(minimum=1),
        "ranged reads of one large object in flight at once (sliced download, see "
        "[safety.md](safety.md)); `1` reads every object as one stream",
    ),
    "slicing.slice_bytes": Var(
        "RECEIVER_SLICE_BYTES", str(4 * MIB), whole(minimum=64 * 1024),
        "bytes per ranged read; a sliced download holds at most slices × this in memory "
        "(32 MiB by default)", shown=f"`{4 * MIB}` (4 MiB)",
    ),
    "slicing.threshold": Var(
        "RECEIVER_SLICED_DOWNLOAD_THRESHOLD", str(128 * MIB), whole(minimum=0),
        "objects at least this large may be read in slices; `0` never slices",
        shown=f"`{128 * MIB}` (128 MiB)",
    ),
    "slicing.adaptive": Var(
        "RECEIVER_SLICING", "auto",
        then(choice(SlicingMode), lambda mode: mode is SlicingMode.AUTO),
        "`auto`: such an object starts as one stream, timed in windows of a slice's "
        "worth, and goes on in slices only if, in each of its first 8 windows, the reader "
        "spent at least half the time waiting for bytes that came slower than 512 MiB/s; "
        "`always`: slices from the first byte",
    ),
    "ack": Var(
        "RECEIVER_ACK", "queued", choice(AckMode),
        "`queued`: answer 202 once the job is journaled; `installed`: answer when the "
        "version is installed ([delivery-contract.md](delivery-contract.md))",
    ),
    "ack_timeout": Var(
        "RECEIVER_ACK_TIMEOUT", "540", number(minimum=1),
        "longest wait in `installed` mode before a 503 (below Pub/Sub's 600 s ack deadline)",
    ),
    "max_waiting_pushes": Var(
        "RECEIVER_MAX_WAITING_PUSHES", "", optional(whole(minimum=1)),
        "pushes one worker process lets wait in `installed` mode; more get a 503 at once, "
        "so waits never hold every request thread (docs/operating.md)",
        shown="`GUNICORN_THREADS` − 2 (at least 1)",
    ),
    "on_delete": Var(
        "RECEIVER_ON_DELETE", "ignore", choice(DeleteMode),
        "`remove`: an `OBJECT_DELETE`/`OBJECT_ARCHIVE` withdraws the version that object "
        "installed (never the last one)",
    ),
    "sync_on_start": Var(
        "RECEIVER_SYNC_ON_START", "true", boolean,
        "at start, install the newest version of every model the bucket has and the model "
        "dir lacks",
    ),
    "sync_interval": Var(
        "RECEIVER_SYNC_INTERVAL", "0", number(minimum=0),
        "seconds between repeated syncs (each ±10%, so replicas spread out); `0` syncs only "
        "at start",
    ),
    "job_retention_days": Var(
        "RECEIVER_JOB_RETENTION_DAYS", "30", number(minimum=0),
        "finished jobs (installed, failed, skipped) older than this are deleted from the "
        "journal, hourly, so history never slows `/status` or claims; `0` keeps them "
        "forever. A redelivery of a forgotten generation is recognised by the version's "
        "`.receiver.json`; a forgotten failure is tried once more",
    ),
    "unwrapped_without_metadata": Var(
        "RECEIVER_UNWRAPPED_WITHOUT_METADATA", "reject", choice(UnwrappedMode),
        "`finalize`: treat an unwrapped push without metadata headers as an upload (see "
        "[publishing.md](publishing.md#delivery-formats))",
    ),
    "done_marker": Var(
        "RECEIVER_DONE_MARKER", "_SUCCESS", text,
        "the object that completes a directory upload",
    ),
    "model_config_file": Var(
        "RECEIVER_MODEL_CONFIG_FILE", "", optional(path),
        "keep this TF Serving `--model_config_file` listing every model (see "
        "[publishing.md](publishing.md#many-models))",
    ),
    "expose_status": Var(
        "RECEIVER_EXPOSE_STATUS", "true", boolean,
        "serve the status page `/`, `/status` and `/metrics`; `false` answers 404 on all three",
    ),
    "log_format": Var(
        "RECEIVER_LOG_FORMAT", "auto", choice(LogFormat),
        "`json` (Cloud Logging structured lines), `text`, or `auto`: text on a terminal, "
        "JSON otherwise",
    ),
    "peers": Var(
        "RECEIVER_PEERS", "", then(text, lambda value: parse_peers(value)),
        "the other replicas, to relay each push naming a model version to: `dns:NAME:PORT` "
        "(every address of a headless Service, looked up at each relay, our own left out) or "
        'a comma-separated list of URLs (docs/deploying.md, "Topologies")',
    ),
}  # fmt: skip

# Read by gunicorn.conf.py, through `ServerSettings`.
SERVER: dict[str, Var[Any]] = {
    "port": Var("PORT", "8080", whole(minimum=1, maximum=65535),
                "listen port (bound on `0.0.0.0`)"),
    "workers": Var("WEB_CONCURRENCY", "2", whole(minimum=1),
                   "gunicorn worker processes (each runs one install thread)"),
    "threads": Var("GUNICORN_THREADS", "8", whole(minimum=1),
                   "request threads per worker process"),
    "timeout": Var("GUNICORN_TIMEOUT", "600", whole(minimum=1),
                   "gunicorn worker timeout, seconds; must exceed `RECEIVER_ACK_TIMEOUT`"),
    "graceful_timeout": Var("GUNICORN_GRACEFUL_TIMEOUT", "25", whole(minimum=1),
                            "seconds to finish in-flight work on SIGTERM"),
    "log_level": Var("GUNICORN_LOG_LEVEL", "info", choice(LogLevel), "gunicorn's log level"),
}  # fmt: skip

# Read by libraries and the platform; the receiver's code reads some of them by name.
PLATFORM: tuple[Var[str], ...] = (
    Var("STORAGE_EMULATOR_HOST", "", text,
        "as google-cloud-storage defines it: talk to an emulator, anonymously"),
    Var("GOOGLE_APPLICATION_CREDENTIALS", "", text,
        "as google-auth defines it: a key file instead of the platform's identity "
        "(Application Default Credentials)"),
    Var("GOOGLE_CLOUD_PROJECT", "", text,
        "the project Google's platforms set; with it, a log line's trace links to Cloud "
        "Trace"),
    Var("PROMETHEUS_MULTIPROC_DIR", "", text,
        "where prometheus-client's worker processes keep their samples; emptied at start",
        shown="a new temporary directory"),
    Var("GUNICORN_CMD_ARGS", "", text,
        "gunicorn's own extra options, e.g. `--access-logfile -` for an access log"),
    Var("MALLOC_ARENA_MAX", "", text,
        "as glibc defines it: how many heaps a process's threads share; unset, each "
        "worker keeps to 2 (its memory climbs far less over many installs)",
        shown="2 per worker"),
    Var("GLIBC_TUNABLES", "", text,
        "as glibc defines it; with `glibc.malloc.arena_max` in it, workers leave the heaps' "
        "limit to glibc"),
)  # fmt: skip


def every_variable() -> list[Var[Any]]:
    return [*RECEIVER.values(), *SERVER.values(), *PLATFORM]


def tables() -> dict[str, str]:
    """The reference's generated blocks, by name."""
    return {
        "receiver": markdown_table(RECEIVER.values()),
        "platform": markdown_table([*SERVER.values(), *PLATFORM]),
    }


def main() -> None:
    """Rewrite docs/configuration.md's tables from the declarations above."""
    REFERENCE.write_text(regenerate(REFERENCE.read_text(), tables()))
    print(f"rewrote the tables of {REFERENCE}", file=sys.stderr)


if __name__ == "__main__":
    main()
