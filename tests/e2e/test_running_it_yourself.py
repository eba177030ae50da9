"""docs/running-it-yourself.md's step-by-step block, run by bash as written (on free
ports, in a temporary directory), so that the page cannot drift from the commands."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from receiver.dev.tools import free_port
from tests.e2e.conftest import wait_for
from tests.helpers import PROJECT_ROOT, same_files

PAGE = PROJECT_ROOT / "docs" / "running-it-yourself.md"
SAMPLE = PROJECT_ROOT / "receiver" / "dev" / "sample" / "half_plus_two" / "00000123"


def step_by_step_block() -> str:
    section = PAGE.read_text().split("## Against the storage emulator, step by step\n")[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "no ```sh block in the step-by-step section"
    return match[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_step_by_step_block_runs_as_written(tmp_path):
    emulator_port, receiver_port = free_port(), free_port()
    script = (
        step_by_step_block()
        .replace("4443", str(emulator_port))
        .replace("8090", str(receiver_port))
        .replace("$PWD/.run", str(tmp_path / "run"))
        .replace(".run", str(tmp_path / "run"))
        # .venv/bin/receiver is the editable install of whichever checkout made .venv;
        # this interpreter from the project root runs the code under test, as it would.
        .replace(".venv/bin/receiver", f"{sys.executable} -m receiver")
        .replace(".venv/bin/gunicorn", f"{sys.executable} -m gunicorn")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    env.pop("STORAGE_EMULATOR_HOST", None)
    transcript = tmp_path / "block.log"
    with transcript.open("w") as out:
        shell = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # whatever the block started, killed with it below
        )
    try:
        try:
            shell.wait(timeout=900)  # a bound for a hung block, not a speed goal
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "the block did not finish:\n" + transcript.read_text() + _log(tmp_path)
            ) from None
        _check(shell.returncode, transcript.read_text(), tmp_path, (emulator_port, receiver_port))
    finally:
        # A block that failed half-way leaves its background jobs: stop them.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()


def _check(returncode: int, output: str, tmp_path: Path, ports: tuple[int, int]) -> None:
    assert returncode == 0, output + _log(tmp_path)
    assert "published gs://my-models/prod/half_plus_two/1.tar.zst" in output
    assert re.search(r'^202 \{"job":2,.*"outcome":"queued"', output, re.MULTILINE), output
    assert re.search(r"^2 +installed +half_plus_two +2 ", output, re.MULTILINE), output
    assert same_files(tmp_path / "run" / "models" / "half_plus_two" / "1", SAMPLE)
    assert same_files(tmp_path / "run" / "models" / "half_plus_two" / "2", SAMPLE)
    # `kill %1 %2` stopped both: nothing of the block is left listening.
    for port in ports:
        wait_for(_closed(port), timeout=60, what=f"port {port} to close")


def _closed(port: int) -> Callable[[], bool]:
    return lambda: not _listening(port)


def _log(tmp_path: Path) -> str:
    log = tmp_path / "run" / "receiver.log"
    return f"\n--- receiver.log:\n{log.read_text()}" if log.exists() else ""
