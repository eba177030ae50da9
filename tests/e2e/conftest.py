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
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                # Timeout: connected to the listen backlog before a worker was up to answer.
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
