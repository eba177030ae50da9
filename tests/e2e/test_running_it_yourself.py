"""docs/running-it-yourself.md's step-by-step block, run by bash as written (on free
ports, in a temporary directory), with its curl block pasted before the `kill` line as
the page says, so that the page cannot drift from the commands."""

from __future__ import annotations

import contextlib
import json
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


def block(heading: str) -> str:
    section = PAGE.read_text().split(f"## {heading}\n")[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, f"no ```sh block in the section {heading!r}"
    return match[1]


def step_by_step_block() -> str:
    """The step-by-step block, the curl section's block pasted before its `kill` line."""
    steps = block("Against the storage emulator, step by step")
    assert steps.endswith("\nkill %1 %2\n"), steps
    return (
        steps.removesuffix("kill %1 %2\n")
        + block("Testing with curl: a dev token")
        + "kill %1 %2\n"
    )


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
    assert re.search(r"^half_plus_two +1 +unconfirmed", output, re.MULTILINE), output
    # The curl section: its body, its token, curl's answer, the install (1 pruned then).
    assert re.search(r'^\{"job":3,.*"outcome":"queued"', output, re.MULTILINE), output
    body = json.loads((tmp_path / "run" / "push.json").read_text())
    assert body["message"]["attributes"]["objectId"] == "prod/half_plus_two/3.tar.zst"
    assert sorted(p.name for p in (tmp_path / "run" / "models" / "half_plus_two").iterdir()) == [
        "2",
        "3",
    ]
    assert same_files(tmp_path / "run" / "models" / "half_plus_two" / "3", SAMPLE)
    # `kill %1 %2` stopped both: nothing of the block is left listening.
    for port in ports:
        wait_for(_closed(port), timeout=60, what=f"port {port} to close")


def _closed(port: int) -> Callable[[], bool]:
    return lambda: not _listening(port)


def _log(tmp_path: Path) -> str:
    log = tmp_path / "run" / "receiver.log"
    return f"\n--- receiver.log:\n{log.read_text()}" if log.exists() else ""
