"""Real processes: gunicorn serving the receiver, driven with curl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from receiver.dev.tools import free_port
from tests import tfcheck
from tests.helpers import PROJECT_ROOT


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py` as a child process in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "PORT": str(self.port)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Gunicorn:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or a busy machine
                time.sleep(0.05)
        pytest.fail(f"gunicorn did not become healthy:\n{self.log()}")

    def status(self) -> dict:
        response = requests.get(f"{self.url}/status", timeout=10)
        response.raise_for_status()
        body: dict = response.json()
        return body

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def gunicorn(environ: dict[str, str], emulator, tmp_path: Path) -> Iterator[Gunicorn]:
    """A receiver with 2 worker processes, not started yet (tests may prepare the disk first).

    Sync at start is off unless a test turns it on, so a test's own push is what installs.
    """
    server = Gunicorn(
        {
            **environ,
            "WEB_CONCURRENCY": "2",
            "STORAGE_EMULATOR_HOST": emulator.url,
            "RECEIVER_SYNC_ON_START": "false",
        },
        tmp_path / "gunicorn.log",
    )
    yield server
    server.stop(signal.SIGKILL)


class TFServingStandIn:
    """receiver/dev/tfserving_standin.py under `.venv-tf`: TF Serving's model-status API,
    each load decided by real TensorFlow."""

    def __init__(
        self, model_dir: Path, log_path: Path, poll: float = 0.2, config: Path | None = None
    ) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_dir = model_dir
        self.log_path = log_path
        self.poll = poll
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> TFServingStandIn:
        python = tfcheck.require_tensorflow()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(python), "-m", "receiver.dev.tfserving_standin", "--model-dir",
                 str(self.model_dir), "--port", str(self.port), "--poll", str(self.poll),
                 *(["--model-config-file", str(self.config)] if self.config else [])],
                cwd=PROJECT_ROOT,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for(self._answers, timeout=120, what=f"the TF Serving stand-in:\n{self.log()}")
        return self

    def exited(self) -> int | None:
        """Its exit status, if it has exited (as TF Serving does when a start fails)."""
        assert self.process is not None
        return self.process.poll()

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the stand-in exited with {self.process.returncode}:\n{self.log()}")
        try:
            return requests.get(f"{self.url}/v1/models/x", timeout=1).status_code == 404
        except requests.ConnectionError:
            return False

    def state(self, model: str, version: int) -> str:
        response = requests.get(f"{self.url}/v1/models/{model}/versions/{version}", timeout=5)
        if response.status_code == 404:
            return "NOT_FOUND"
        return str(response.json()["model_version_status"][0]["state"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def tfserving(tmp_path: Path) -> Iterator[TFServingStandIn]:
    """A TF Serving stand-in watching the receiver's model dir (`environ`), not started."""
    standin = TFServingStandIn(tmp_path / "models", tmp_path / "tfserving.log")
    yield standin
    standin.stop()


def curl_push(
    url: str, token: str, body: bytes, tmp_path: Path, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    """POST a push with real curl; returns (status, JSON body)."""
    body_file = tmp_path / f"push-{time.monotonic_ns()}.json"
    body_file.write_bytes(body)
    headers = {"Content-Type": "application/json", **(headers or {})}
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    result = subprocess.run(
        [
            "curl", "-sS", "-X", "POST", f"{url}/",
            "-H", f"Authorization: Bearer {token}",
            *header_args,
            "--data-binary", f"@{body_file}",
            "-w", "\n%{http_code}",
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    answer, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(answer)


def wait_for(condition: Callable[[], object], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")
