"""A stand-in for TF Serving, for the tests and the demo: its model-status API, real loads.

TF Serving itself cannot be installed here, so this serves TF Serving's documented REST
model-status API (`GET /v1/models/<model>[/versions/<version>]`, g3doc/api_rest.md) over a
model base directory watched with TF Serving's rules, and decides each load by really
loading the version with TensorFlow. Run it with the TensorFlow virtualenv (`make tf`):

    .venv-tf/bin/python -m receiver.dev.tfserving_standin --model-dir DIR --port 8501

What it models (tensorflow_serving, see docs/serving.md):
- every directory under DIR is a model; a child whose name parses as a whole number is a
  version; only the newest is aspired (`latest { num_versions: 1 }`), checked every
  `--poll` seconds (TF Serving's default: 1);
- a load is `tf.saved_model.load(path, tags)`, then, when
  `assets.extra/tf_serving_warmup_requests` exists, its records are counted (at most
  1,000, each a well-formed TFRecord) and `serving_default` is run once;
- AVAILABLE after a load, END with the loader's own error after a failed one; the old
  version keeps serving until the new one is AVAILABLE, and after a failed load
  (AvailabilityPreservingPolicy); an errored version is not loaded again while it stays;
- at start, every model's newest version must load or the process exits with status 1,
  as `tensorflow_model_server` does ("servable(s) did not become available").
With `--model-config-file`, only the models that file lists are served, the file read again
at every poll (TF Serving's `--model_config_file_poll_wait_seconds`): a model added later
that fails to load is END with its error and the server runs on; at start, a listed model
that fails makes it exit, as TF Serving does.
What it does not model: gRPC and predictions, version policies and labels, load retries
(`--max_num_load_retries`: the first failure is final here), resource estimates, warmup
replaying the recorded requests (it counts them and runs the signature on zeros, so a
record whose request is malformed passes here and fails TF Serving), TensorFlow's C++
loader (the Python loader used here refuses some exports the C++ one loads, e.g. one
with no variables whose data file was removed), and TF Serving's exact error codes for
Python-side loader errors (reported as UNKNOWN).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_VERSION = re.compile(r"\s*\+?[0-9]+\s*")  # absl::SimpleAtoi, as TF Serving parses names
_STATUS_PATH = re.compile(r"/v1/models/([^/]+)(?:/versions/([0-9]+))?")
MAX_WARMUP_RECORDS = 1000


class Tracked:
    """One version as TF Serving's ServableStateMonitor would report it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = "START"
        self.error_code = "OK"
        self.error_message = ""
        self.aspired = True
        self.loaded: Any = None

    def as_status(self, version: int) -> dict[str, object]:
        return {
            "version": str(version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


class StandIn:
    def __init__(self, model_dir: Path, tags: list[str], config_file: Path | None = None) -> None:
        self.model_dir = model_dir
        self.config_file = config_file
        self.served: dict[str, Path] = {}  # model -> base path, from the config file
        self.tags = tags
        self.models: dict[str, dict[int, Tracked]] = {}
        self.lock = threading.Lock()

    def poll(self) -> None:
        """One pass of TF Serving's file-system poll: aspire the newest, load, unload.
        With a models.config, only the models it lists (their base paths); else every
        directory under the model dir."""
        if self.config_file is not None:
            self.served = _read_model_config(self.config_file, self.served)
            roots = sorted(self.served.items())
        else:
            roots = [
                (p.name, p)
                for p in sorted(self.model_dir.iterdir())
                if p.is_dir() and not p.name.startswith(".")
            ]
        for model, model_root in roots:
            if model_root.is_dir():
                self._poll_model(model, _versions(model_root))

    def _poll_model(self, model: str, on_disk: dict[int, Path]) -> None:
        with self.lock:
            tracked = self.models.setdefault(model, {})
            newest = max(on_disk, default=None)
            was_aspired = {version: entry.aspired for version, entry in tracked.items()}
            for version, entry in tracked.items():
                entry.aspired = version == newest
            loading = None
            if newest is not None:
                current = tracked.get(newest)
                # A version that ended (failed, or unloaded) loads again only once it was
                # un-aspired and is aspired anew, as with TF Serving's stock settings.
                if current is None or (current.state == "END" and not was_aspired[newest]):
                    loading = tracked[newest] = Tracked(on_disk[newest])
                    loading.state = "LOADING"
        if loading is not None:
            self._load(model, loading)
        with self.lock:
            self._unload_unaspired(tracked)

    def _load(self, model: str, entry: Tracked) -> None:
        print(f"Loading servable version {{name: {model} path: {entry.path}}}", flush=True)
        try:
            loaded = _load_version(entry.path, self.tags)
        except Exception as exc:  # what TF Serving reports: the loader's own message
            with self.lock:
                entry.state, entry.error_code = "END", _error_code(exc)
                entry.error_message = str(exc).strip() or type(exc).__name__
            print(f"Loading servable {model} failed: {entry.error_message}", flush=True)
            return
        with self.lock:
            entry.loaded, entry.state = loaded, "AVAILABLE"
        print(f"Successfully loaded servable version {{name: {model}}}", flush=True)

    @staticmethod
    def _unload_unaspired(tracked: dict[int, Tracked]) -> None:
        """AvailabilityPreservingPolicy: keep the last ready version while nothing aspired
        is ready; unload un-aspired versions once something aspired serves."""
        aspired_ready = any(e.aspired and e.state == "AVAILABLE" for e in tracked.values())
        any_aspired = any(e.aspired for e in tracked.values())
        for entry in tracked.values():
            if (
                not entry.aspired
                and entry.state == "AVAILABLE"
                and (aspired_ready or not any_aspired)
            ):
                entry.state, entry.loaded = "END", None

    def status(self, model: str, version: int | None) -> tuple[int, dict[str, object]]:
        with self.lock:
            tracked = self.models.get(model) or {}
            if version is None:
                if not tracked:
                    return 404, {"error": f"Could not find any versions of model {model}"}
                statuses = [tracked[v].as_status(v) for v in sorted(tracked, reverse=True)]
                return 200, {"model_version_status": statuses}
            if version not in tracked:
                return 404, {"error": f"Could not find version {version} of model {model}"}
            return 200, {"model_version_status": [tracked[version].as_status(version)]}

    def unavailable_at_start(self) -> list[str]:
        return [
            f"{model} version {max(versions)}: {versions[max(versions)].error_message}"
            for model, versions in self.models.items()
            if versions and versions[max(versions)].state != "AVAILABLE"
        ]


def _read_model_config(path: Path, previous: dict[str, Path]) -> dict[str, Path]:
    """The models a text-format ModelServerConfig lists; the previous ones while the file
    is missing or does not parse (TF Serving keeps its config then too)."""
    from google.protobuf import text_format

    from receiver.modelconfig import ModelServerConfig

    config = ModelServerConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except (OSError, text_format.ParseError):
        return previous
    return {entry.name: Path(entry.base_path) for entry in config.model_config_list.config}


def _versions(model_root: Path) -> dict[int, Path]:
    found = {}
    for child in model_root.iterdir():
        if _VERSION.fullmatch(child.name):
            found[int(child.name)] = child
    return found


def _load_version(path: Path, tags: list[str]) -> Any:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path), tags=tags)
    warmup = path / "assets.extra" / "tf_serving_warmup_requests"
    if warmup.exists():
        records = sum(1 for _ in tf.data.TFRecordDataset(str(warmup)))
        if records > MAX_WARMUP_RECORDS:
            raise ValueError(
                f"Number of warmup records exceeeds the maximum ({MAX_WARMUP_RECORDS}) at {warmup}"
            )
        function = loaded.signatures["serving_default"]
        inputs = {
            name: tf.zeros([d or 1 for d in spec.shape], spec.dtype)
            for name, spec in function.structured_input_signature[1].items()
        }
        function(**inputs)
    return loaded


def _error_code(exc: Exception) -> str:
    import tensorflow as tf

    codes = {
        tf.errors.NotFoundError: "NOT_FOUND",
        tf.errors.InvalidArgumentError: "INVALID_ARGUMENT",
        tf.errors.DataLossError: "DATA_LOSS",
        tf.errors.FailedPreconditionError: "FAILED_PRECONDITION",
    }
    return next((code for kind, code in codes.items() if isinstance(exc, kind)), "UNKNOWN")


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            match = _STATUS_PATH.fullmatch(self.path.split("?")[0])
            body: dict[str, object]
            if match is None:
                code, body = 404, {"error": f"Malformed request: GET {self.path}"}
            else:
                version = int(match[2]) if match[2] else None
                code, body = standin.status(match[1], version)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a status poll a second would drown the load lines

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8501, help="the REST port")
    parser.add_argument("--tags", default="serve", help="as --saved_model_tags")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    parser.add_argument(
        "--model-config-file",
        type=Path,
        help="as TF Serving's: serve only the models it lists, read again at every poll",
    )
    args = parser.parse_args(argv)
    tags = [t for t in args.tags.split(",") if t]
    standin = StandIn(args.model_dir, tags, args.model_config_file)
    args.model_dir.mkdir(parents=True, exist_ok=True)
    standin.poll()
    failed = standin.unavailable_at_start()
    if failed:
        print(f"{len(failed)} servable(s) did not become available: {failed}", file=sys.stderr)
        print("Failed to start server", file=sys.stderr)
        return 1
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(standin))
    print(f"serving the model-status API on http://127.0.0.1:{args.port}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        while True:
            time.sleep(args.poll)
            standin.poll()
    except KeyboardInterrupt:
        return 0
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
