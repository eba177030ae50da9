"""What the benchmark scripts share: a real receiver, a push it ignores, waiting for a server."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import google_crc32c
import requests
from google.cloud import storage

from receiver.dev.keys import DEV_SENDER, DevSigner
from receiver.dev.tools import free_port, notification_push

ROOT = Path(__file__).resolve().parent.parent

# A signed-looking notification for an object outside every benchmark's prefix: the
# receiver checks the token and answers `ignored`, so only the request path is measured.
IGNORED_PUSH = {
    "message": {
        "attributes": {
            "eventType": "OBJECT_FINALIZE",
            "bucketId": "bench",
            "objectId": "elsewhere/notes.txt",
            "objectGeneration": "1",
        },
        "messageId": "1",
    },
    "subscription": "projects/p/subscriptions/s",
}


def run_times(runs: int, action: Callable[[], None]) -> list[float]:
    """Seconds taken by each of `runs` calls of `action`."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def median_of(runs: int, action: Callable[[], None]) -> float:
    return statistics.median(run_times(runs, action))


def interleaved_medians(
    runs: int, actions: dict[str, Callable[[], None]], before: Callable[[], None]
) -> dict[str, float]:
    """Median seconds of each action, run in turns (one of each per round, `before` untimed
    ahead of every run), so a slow spell of the machine falls on every method alike."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            before()
            started = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(taken) for name, taken in times.items()}


def cleaned_up_on_sigterm() -> None:
    """Make SIGTERM (`kill`, `pkill`, a CI timeout) unwind as Ctrl-C does, through every
    `finally`: a run stopped by it otherwise left its emulator's GiBs in /dev/shm and its
    scratch directory in /tmp behind."""

    def leave(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one would cut cleanup short
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def emulator_root() -> Path:
    """A fresh directory for the emulator's filesystem backend, in memory where there is
    /dev/shm (as the in-memory backend was: dropping the page cache leaves it in place)."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="bench-emulator-", dir=shm if shm.is_dir() else None))


def place_object(bucket: storage.Bucket, root: Path, name: str, source: Path) -> storage.Blob:
    """An object holding `source`'s bytes, written straight into the emulator's files.

    fake-gcs-server assembles an upload in memory at 4-5x its size (a 1 GiB upload peaked
    at 5-6 GiB and took 30 s), so 5 GiB could not be uploaded on this 24 GiB machine. An
    empty object is made through the API, then its file under `root` (the filesystem
    backend's layout: bucket/name) is filled and the checksums in its metadata (an
    extended attribute, where that backend keeps them) set to the bytes'. Where extended
    attributes cannot be written, it is uploaded after all."""
    blob = bucket.blob(name)
    blob.upload_from_string(b"")
    path = root / bucket.name / name
    crc32c, md5 = google_crc32c.Checksum(), hashlib.md5()
    with source.open("rb") as data, path.open("r+b") as out:
        while block := data.read(8 * 2**20):
            crc32c.update(block)
            md5.update(block)
            out.write(block)
    try:
        metadata = json.loads(os.getxattr(path, "user.metadata"))
        metadata["Crc32c"] = base64.b64encode(crc32c.digest()).decode()
        metadata["Md5Hash"] = metadata["Etag"] = base64.b64encode(md5.digest()).decode()
        os.setxattr(path, "user.metadata", json.dumps(metadata).encode())
    except OSError:
        blob.upload_from_filename(str(source), timeout=1800)
    blob.reload()
    return blob


def link_object(
    bucket: storage.Bucket, root: Path, placed: storage.Blob, name: str
) -> storage.Blob:
    """Another object with `placed`'s bytes and metadata: a hard link, so no copy is made
    (the generation is the same too, which the receiver does not mind: names differ)."""
    path = root / bucket.name / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.link(root / bucket.name / placed.name, path)
    blob = bucket.blob(name)
    blob.reload()
    return blob


def wait_until_up(url: str, timeout: float = 60) -> None:
    """Return once `url` answers at all; SystemExit if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:  # not listening yet, or a loaded machine
            time.sleep(0.1)
    raise SystemExit(f"nothing answered {url} within {timeout:g}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has spent so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def worker_pids(master: int) -> list[str]:
    """The processes a gunicorn master has forked (its workers)."""
    return Path(f"/proc/{master}/task/{master}/children").read_text().split()


class Receiver:
    """A real gunicorn receiver (RECEIVER_ACK=installed) on `storage_url`, with a dev key."""

    def __init__(
        self, storage_url: str, bucket: str, workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.signer = DevSigner.create(workdir / "keys")
        self.model_dir = workdir / "models"
        env = {
            **os.environ,
            "PORT": str(self.port),
            "STORAGE_EMULATOR_HOST": storage_url,
            "RECEIVER_SOURCE": f"gs://{bucket}/models",
            "RECEIVER_MODEL_DIR": str(self.model_dir),
            "RECEIVER_AUDIENCE": self.url,
            "RECEIVER_ALLOWED_SENDERS": DEV_SENDER,
            "RECEIVER_CERTS_URL": self.signer.certs_url,
            "RECEIVER_ACK": "installed",
            "RECEIVER_KEEP_VERSIONS": "1",
            "RECEIVER_LOG_FORMAT": "json",
            "RECEIVER_SYNC_ON_START": "false",
            **(env or {}),
        }
        self.log = (workdir / "receiver.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_up(f"{self.url}healthz")
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def install(self, blob: storage.Blob) -> None:
        with self.ready_push(blob) as send:
            send()

    @contextlib.contextmanager
    def ready_push(self, blob: storage.Blob) -> Iterator[Callable[[], None]]:
        """The push for `blob`, ready as Pub/Sub holds one: its token minted and a
        connection open, so sending it times the receiver alone. Sent by curl, as until
        2026-12-03, every install also paid curl's start (10 ms here, warm) and the
        signing of a token, which Pub/Sub caches. Send it within gunicorn's keep-alive
        (5 s, gunicorn.conf.py): an idle connection is closed after that. The connection
        is closed on leaving the block, sent or not."""
        body = json.dumps(notification_push(blob)).encode()
        headers = {
            "Authorization": f"Bearer {self.signer.mint(self.url)}",
            "Content-Type": "application/json",
        }
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1800)
        connection.connect()

        def send() -> None:
            connection.request("POST", "/", body, headers)
            outcome = json.loads(connection.getresponse().read())
            connection.close()  # timed with the push, as before it was made ready
            if outcome["outcome"] != "installed":
                raise SystemExit(f"receiver did not install {blob.name}: {outcome}")

        try:
            yield send
        finally:
            connection.close()

    def peak_rss_mib(self) -> int:
        peaks = []
        for worker in worker_pids(self.process.pid):
            for line in Path(f"/proc/{worker}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) // 1024)
        return max(peaks)

    def cpu_seconds(self) -> float:
        """User + system CPU time the workers have spent so far (all their threads)."""
        return sum(cpu_seconds(int(worker)) for worker in worker_pids(self.process.pid))

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # gone already
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()
