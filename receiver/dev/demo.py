"""`python -m receiver demo`: the whole path on this machine, nothing from the internet.

1. starts the storage emulator and publishes version 123 of the sample model with
   `receiver publish`'s own code (checked, packed as tar.zst, uploaded);
2. starts the receiver (real gunicorn, auth on, a local dev signing key), whose sync at
   start installs 123, as a fresh pod would;
   then TF Serving's stand-in (receiver/dev/tfserving_standin.py, real TensorFlow from
   `.venv-tf`), as a pod starts TF Serving once the receiver is ready; the receiver
   confirms each load with it (RECEIVER_TFSERVING_URL), and the demo prints its status;
3. publishes version 124, as a training pipeline would, and sends its push with curl;
4. publishes version 125 without pushing it, prints the environment the CLI needs, the
   curl line and the CLI command that push it, and keeps running until Ctrl-C. Every
   command it prints names `receiver` by the absolute path of this virtualenv's script,
   so it works pasted into any shell, with no virtualenv to activate.

Each run starts clean: the emulator keeps nothing between runs, so neither do the
demo's model and state directories (the dev keys are kept). Before touching them it
takes the directory's lock and checks its port (`claim_demo`): a second demo in the same
directory, or on the same port, exits saying what to do and leaves the first alone.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from receiver.dev.keys import DEV_SENDER, DevSigner
from receiver.dev.tools import (
    StorageEmulator,
    claim_demo,
    environ_with,
    free_port,
    notification_push,
)
from receiver.publish import publish
from receiver.vocabulary import JobState, LoadState

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_MODEL = Path(__file__).resolve().parent / "sample" / "half_plus_two" / "00000123"
TF_PYTHON = PROJECT_ROOT / ".venv-tf" / "bin" / "python"
# The command the demo prints: this virtualenv's console script (`pip install -e .`, as
# `make install` does), by absolute path; without it, this interpreter running the package.
_SCRIPT = Path(sys.executable).parent / "receiver"
RECEIVER = (
    shlex.quote(str(_SCRIPT)) if _SCRIPT.exists() else f"{shlex.quote(sys.executable)} -m receiver"
)
BUCKET = "demo-models"
PREFIX = "models"
MODEL = "half_plus_two"


def run_demo(port: int, workdir: Path, once: bool) -> int:
    """Run the demo on `port` (0: any free port); `once`: stop after version 124 installs."""
    if not (PROJECT_ROOT / "gunicorn.conf.py").exists():
        raise SystemExit(
            "receiver demo runs from a checkout of the repository (it starts gunicorn with "
            "the checkout's gunicorn.conf.py): clone it and run `make demo` there"
        )
    # Ctrl-C (or a SIGTERM) stops the demo, which then stops gunicorn and the emulator.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    lock = claim_demo(workdir, port)
    try:
        return _run(port, url, workdir, once)
    finally:
        lock.close()


def _run(port: int, url: str, workdir: Path, once: bool) -> int:
    model_dir = workdir / "models"
    for stale in (model_dir, workdir / "pushes"):
        shutil.rmtree(stale, ignore_errors=True)  # the emulator starts empty: so do we
    (workdir / "pushes").mkdir(parents=True)
    signer = DevSigner.create(workdir / "keys")

    say("starting the Cloud Storage emulator (fake-gcs-server)")
    emulator = StorageEmulator(die_with_parent=True).start()
    client = storage.Client(
        project="demo",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.url},
    )
    client.create_bucket(BUCKET)
    log = workdir / "receiver.log"
    receiver_log = log.open("wb")
    gunicorn: subprocess.Popen[bytes] | None = None
    standin: subprocess.Popen[bytes] | None = None
    try:
        _publish(client, 123)
        tfserving_port = free_port()
        tfserving_url = f"http://127.0.0.1:{tfserving_port}"
        env = {
            "STORAGE_EMULATOR_HOST": emulator.url,
            "RECEIVER_SOURCE": f"gs://{BUCKET}/{PREFIX}",
            "RECEIVER_MODEL_DIR": str(model_dir),
            "RECEIVER_AUDIENCE": url,
            "RECEIVER_ALLOWED_SENDERS": DEV_SENDER,
            "RECEIVER_CERTS_URL": signer.certs_url,
        }
        if TF_PYTHON.exists():
            env["RECEIVER_TFSERVING_URL"] = tfserving_url
        else:
            say(f"no {TF_PYTHON} (`make tf` installs it): TF Serving's stand-in is left out")
        say(f"starting the receiver on {url} (log: {log})")
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(PROJECT_ROOT / "gunicorn.conf.py")],
            cwd=PROJECT_ROOT,
            env=environ_with(**env, PORT=str(port), GUNICORN_GRACEFUL_TIMEOUT="6"),
            stdout=receiver_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops gunicorn itself
        )
        _poll(lambda: _ready(url, gunicorn, log), 60, f"receiver not ready in 60 s; see {log}")
        say("its sync at start found version 123 in the bucket and installed it")
        # As in a pod: TF Serving starts once the receiver's first sync is on disk.
        standin = _start_tfserving(model_dir, tfserving_port, workdir)
        if standin is not None:
            say(
                f"started TF Serving's stand-in on {tfserving_url} "
                f"(log: {workdir / 'tfserving.log'})"
            )
            _poll(lambda: _available(url, 123), 180, "TF Serving did not load 123 in 180 s")
            say(f"TF Serving loaded it; its model status: {_model_status(tfserving_url)}")

        curl_124 = _curl_line(url, workdir, _push_body(_publish(client, 124), workdir))
        say(f"sending its push with curl (the line works pasted, too):\n  {curl_124}")
        answer = subprocess.run(["sh", "-c", curl_124], capture_output=True, text=True, check=True)
        say(f"receiver answered: {answer.stdout.strip()}")
        job = json.loads(answer.stdout)["job"]
        _poll(lambda: _installed(url, job), 180, f"job {job} did not finish in 180 s")
        say(f"installed:\n{_tree(model_dir)}")
        if standin is not None:
            _poll(lambda: _available(url, 124), 180, "TF Serving did not load 124 in 180 s")
            say(f"TF Serving: {_model_status(tfserving_url)}")
        if once:
            return 0

        blob_125 = _publish(client, 125)
        push_125 = _push_body(blob_125, workdir)
        exports = "\n".join(f"  export {k}={shlex.quote(v)}" for k, v in env.items())
        tfserving = f"\nand ask TF Serving:\n  curl -s {tfserving_url}/v1/models/{MODEL}"
        say(
            "published version 125 too, but did not push it. Push it yourself, from another "
            f"shell: the CLI (status, sync, install, retry, push) reaches this receiver's "
            f"bucket (the emulator at {emulator.url}) and model dir with:\n{exports}\n"
            f"then push 125 with curl:\n  {_curl_line(url, workdir, push_125)}\n"
            f"or with the CLI:\n  {RECEIVER} push gs://{BUCKET}/{blob_125.name}"
            f" --url {url}push --keys {shlex.quote(str(workdir / 'keys'))}\n"
            "then watch it arrive (version 123 is pruned: RECEIVER_KEEP_VERSIONS=2):\n"
            f"  {RECEIVER} status\n"
            f"  curl -s {url}status   # or open {url} in a browser" + (tfserving if standin else "")
        )
        say("the receiver keeps running; Ctrl-C stops everything")
        return gunicorn.wait()
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        if gunicorn is not None and gunicorn.poll() is None:
            gunicorn.send_signal(signal.SIGTERM)
            try:
                gunicorn.wait(timeout=20)
            except subprocess.TimeoutExpired:
                gunicorn.kill()
                gunicorn.wait()
        if standin is not None:
            standin.kill()
            standin.wait()
        emulator.stop()
        receiver_log.close()


def _start_tfserving(model_dir: Path, port: int, workdir: Path) -> subprocess.Popen[bytes] | None:
    """TF Serving's stand-in (receiver/dev/tfserving_standin.py) under `.venv-tf`."""
    if not TF_PYTHON.exists():
        return None
    with (workdir / "tfserving.log").open("wb") as log:
        process = subprocess.Popen(
            [str(TF_PYTHON), "-m", "receiver.dev.tfserving_standin",
             "--model-dir", str(model_dir), "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=environ_with(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return process


def _model_status(tfserving_url: str) -> str:
    """What TF Serving's REST API says of the sample model, as `curl` would print it."""
    return requests.get(f"{tfserving_url}/v1/models/{MODEL}", timeout=5).text


def _publish(client: storage.Client, version: int) -> storage.Blob:
    """One version of the sample, published as `receiver publish` does (the same code)."""
    (url,) = publish(SAMPLE_MODEL, f"gs://{BUCKET}/{PREFIX}/{MODEL}/{version}", client=client)
    say(f"published {url}")
    blob = client.bucket(BUCKET).get_blob(url.removeprefix(f"gs://{BUCKET}/"))
    assert blob is not None, url
    return blob


def _push_body(blob: storage.Blob, workdir: Path) -> Path:
    """The push Pub/Sub would send for `blob`, in a file for curl."""
    path = workdir / "pushes" / f"{Path(blob.name).name.split('.')[0]}.json"
    path.write_text(json.dumps(notification_push(blob, message_id=str(blob.generation))))
    return path


def _tree(model_dir: Path) -> str:
    return "\n".join(
        f"  {path}"
        for path in sorted((model_dir / MODEL).rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    )


def _curl_line(url: str, workdir: Path, body: Path) -> str:
    keys = shlex.quote(str(workdir / "keys"))
    token_command = f"{RECEIVER} token --audience {url} --keys {keys}"
    return (
        f"curl -sS -X POST {url}push "
        f'-H "Authorization: Bearer $({token_command})" '
        f"-H 'Content-Type: application/json' --data-binary @{shlex.quote(str(body))}"
    )


def _poll(done: Callable[[], bool], timeout: float, failure: str) -> None:
    """Until `done()` (which exits itself on a failure it sees), or exit with `failure`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.2)
    raise SystemExit(failure)


def _ready(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise SystemExit(f"receiver exited with {process.returncode}; see {log}")
    try:
        return requests.get(f"{url}readyz", timeout=5).status_code == 200
    except requests.RequestException:  # not listening yet, or a busy machine
        return False


def _available(url: str, version: int) -> bool:
    """The receiver has TF Serving's word that `version` is AVAILABLE."""
    views = requests.get(f"{url}status", timeout=5).json()["versions"].get(MODEL, [])
    state = next((v["load_state"] for v in views if v["version"] == version), None)
    if state == LoadState.FAILED:
        raise SystemExit(f"TF Serving could not load version {version}; see the logs")
    return state == LoadState.AVAILABLE


def _installed(url: str, job_id: int) -> bool:
    """This run's own job (not any earlier one) has ended, installed."""
    jobs = requests.get(f"{url}status", timeout=5).json()["recent_jobs"]
    job = next((j for j in jobs if j["job"] == job_id), None)
    if job is not None and job["state"] in (JobState.FAILED, JobState.SKIPPED):
        raise SystemExit(f"job {job_id} {job['state']}: {job['reason']}")
    return job is not None and job["state"] == JobState.INSTALLED


def say(message: str) -> None:
    print(f"==> {message}", flush=True)
