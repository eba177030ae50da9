"""`receiver dev emulator --bucket B` as a user runs it: a real process without a
terminal, its printed exports used by google-cloud-storage, then stopped or killed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from receiver.dev.tools import free_port
from tests.e2e.conftest import wait_for
from tests.helpers import PROJECT_ROOT


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def started() -> Iterator[tuple[subprocess.Popen[str], int, dict[str, str]]]:
    """The command on a free port, stdin closed, and the exports it printed."""
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "receiver", "dev", "emulator", "--bucket", "my-models",
         "--port", str(port)],
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:  # fmt: skip
        assert process.stdout is not None
        exports: dict[str, str] = {}
        for line in process.stdout:
            assert line.startswith(("# ", "export ")), line  # all of it pastes into a shell
            if match := re.fullmatch(r"export (\w+)=(\S+)\n", line):
                exports[match[1]] = match[2]
            if "stops it" in line:
                break
        try:
            yield process, port, exports
        finally:
            if process.poll() is None:
                process.kill()
    wait_for(lambda: not _listening(port), timeout=20, what="the emulator's port to close")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_the_printed_export_reaches_the_bucket_and_a_signal_stops_the_emulator(started, stop):
    process, port, exports = started
    assert exports == {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}
    client = storage.Client(
        project="anything",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": exports["STORAGE_EMULATOR_HOST"]},
    )
    client.bucket("my-models").blob("models/m/1.tar.gz").upload_from_string(b"a model")
    assert client.bucket("my-models").blob("models/m/1.tar.gz").download_as_bytes() == b"a model"
    assert process.poll() is None  # no terminal, stdin closed: it keeps running

    process.send_signal(stop)
    assert process.wait(timeout=30) == 0
    assert not _listening(port)
    assert "Traceback" not in (process.stderr.read() if process.stderr else "")


def test_a_killed_command_leaves_no_emulator_behind(started):
    process, port, _ = started
    assert _listening(port)
    os.kill(process.pid, signal.SIGKILL)  # no finally runs: the kernel's PR_SET_PDEATHSIG
    process.wait()
    wait_for(lambda: not _listening(port), timeout=20, what="the orphaned emulator to stop")


def test_a_taken_port_is_refused_before_anything_is_printed():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "receiver", "dev", "emulator", "--bucket", "my-models",
             "--port", str(port)],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"port {port} is taken" in result.stderr
    assert "export" not in result.stdout, "exports printed for an emulator that is not ours"


def test_a_bucket_name_the_receiver_would_refuse_is_refused_before_anything_starts():
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "dev", "emulator", "--bucket", "ab", "--port",
         str(port)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "argument --bucket: 'ab' is not a bucket name (3 to 222 characters" in result.stderr
    assert result.stdout == "" and not _listening(port)
