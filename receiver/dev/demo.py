"""`python -m receiver demo`: the whole path on this machine, nothing from the internet.

Starts the storage emulator with the sample model, starts the receiver (real gunicorn,
auth on, a local dev signing key), sends a signed push with curl, waits for the model to
be installed, and leaves the receiver running with the curl line to push again.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from receiver.dev.keys import DEV_SENDER, DevSigner
from receiver.dev.tools import (
    StorageEmulator,
    archive_directory,
    environ_with,
    free_port,
    notification_push,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_MODEL = Path(__file__).resolve().parent / "sample" / "half_plus_two" / "00000123"
BUCKET = "demo-models"
PREFIX = "models"


def run_demo(port: int, workdir: Path, once: bool) -> int:
    """Run the demo on `port` (0: any free port); `once`: stop after the first install."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = workdir / "models"
    audience = f"http://localhost:{port}/"
    signer = DevSigner.create(workdir / "keys")

    say("starting the Cloud Storage emulator (fake-gcs-server)")
    emulator = StorageEmulator().start()
    receiver_log = (workdir / "receiver.log").open("wb")
    gunicorn: subprocess.Popen[bytes] | None = None
    try:
        pushes = _upload_sample(emulator.url, workdir)
        say(f"uploaded gs://{BUCKET}/{PREFIX}/half_plus_two/123.tar.gz and 124.tar.gz")

        env = environ_with(
            PORT=str(port),
            STORAGE_EMULATOR_HOST=emulator.url,
            RECEIVER_SOURCE=f"gs://{BUCKET}/{PREFIX}",
            RECEIVER_MODEL_DIR=str(model_dir),
            RECEIVER_AUDIENCE=audience,
            RECEIVER_ALLOWED_SENDERS=DEV_SENDER,
            RECEIVER_CERTS_URL=signer.certs_url,
        )
        say(f"starting the receiver on port {port} (log: {workdir / 'receiver.log'})")
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(PROJECT_ROOT / "gunicorn.conf.py")],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=receiver_log,
            stderr=subprocess.STDOUT,
        )
        _wait_healthy(f"http://127.0.0.1:{port}/healthz", gunicorn)

        token_command = (
            f"{shlex.quote(sys.executable)} -m receiver token --audience {audience} "
            f"--keys {shlex.quote(str(workdir / 'keys'))}"
        )
        curl = _curl_line(port, token_command, pushes[123])
        say("sending a signed push for version 123:\n  " + curl)
        token = signer.mint(audience)
        answer = subprocess.run(
            _curl_argv(port, token, pushes[123]), capture_output=True, text=True, check=True
        )
        say(f"receiver answered: {answer.stdout.strip()}")

        _wait_installed(port, "half_plus_two", 123)
        installed = sorted(
            p.relative_to(model_dir) for p in (model_dir / "half_plus_two").rglob("*")
        )
        say("installed:\n" + "\n".join(f"  {model_dir}/half_plus_two/{p}" for p in installed))
        if once:
            return 0
        say(
            "the receiver keeps running (Ctrl-C stops it). Push version 124 with:\n  "
            + _curl_line(port, token_command, pushes[124])
            + f"\nthen watch: curl -s localhost:{port}/status"
        )
        return gunicorn.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if gunicorn is not None and gunicorn.poll() is None:
            gunicorn.terminate()
            gunicorn.wait(timeout=30)
        emulator.stop()
        receiver_log.close()


def _upload_sample(emulator_url: str, workdir: Path) -> dict[int, Path]:
    """Upload versions 123 and 124 of the sample; write each one's push body to a file."""
    client = storage.Client(
        project="demo",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator_url},
    )
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        client.create_bucket(bucket)
    archive = archive_directory(SAMPLE_MODEL, "tar.gz", top="00000123")
    pushes = {}
    for version in (123, 124):
        blob = bucket.blob(f"{PREFIX}/half_plus_two/{version}.tar.gz")
        blob.upload_from_string(archive, content_type="application/gzip")
        path = workdir / f"push-{version}.json"
        path.write_text(json.dumps(notification_push(blob, message_id=str(version))))
        pushes[version] = path
    return pushes


def _curl_argv(port: int, token: str, body: Path) -> list[str]:
    return [
        "curl", "-sS", "-X", "POST", f"http://127.0.0.1:{port}/",
        "-H", f"Authorization: Bearer {token}",
        "-H", "Content-Type: application/json",
        "--data-binary", f"@{body}",
    ]  # fmt: skip


def _curl_line(port: int, token_command: str, body: Path) -> str:
    return (
        f"curl -sS -X POST http://127.0.0.1:{port}/ "
        f'-H "Authorization: Bearer $({token_command})" '
        f"-H 'Content-Type: application/json' --data-binary @{shlex.quote(str(body))}"
    )


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"receiver exited with {process.returncode}; see its log")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"receiver did not answer {url} within {timeout}s")


def _wait_installed(port: int, model: str, version: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(f"http://127.0.0.1:{port}/status", timeout=5).json()
        if version in status["models"].get(model, []):
            return
        failed = [j for j in status["recent_jobs"] if j["state"] == "failed"]
        if failed:
            raise SystemExit(f"install failed: {failed[0]['reason']}")
        time.sleep(0.2)
    raise SystemExit(f"{model} version {version} was not installed within {timeout}s")


def say(message: str) -> None:
    print(f"==> {message}", flush=True)
