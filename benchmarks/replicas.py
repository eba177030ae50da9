"""Many replicas: one push, time until every replica has the version (RECEIVER_PEERS relays).

    PYTHONPATH=. .venv/bin/python benchmarks/replicas.py --size 1024 --replicas 1 2 4 8

N real gunicorn receivers on 127.0.0.1 (each its own model dir and journal, one worker
process, all given the same RECEIVER_PEERS list and the same token audience and signing
key), the storage emulator behind them. One push (RECEIVER_ACK=queued) goes to the
first; timed from the push until `<model dir>/m/<version>` is in place on every replica
(the rename is the last step of an install), polled every 10 ms. N = 1 is the single
replica alone. Then, with --down, the same with the last of N replicas not running
during the push: it is started afterwards with RECEIVER_SYNC_ON_START=true and timed
from its start to its install. Medians of --runs runs; prints a Markdown table for each.

On a machine with fewer cores than replicas the replicas' downloads and unpacks share
the cores, so the last replica's time grows with N for that reason alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from benchmarks.common import ROOT
from benchmarks.models import archive_path
from receiver.dev.keys import DEV_SENDER, DevSigner
from receiver.dev.tools import StorageEmulator, free_port, notification_push

AUDIENCE = "https://replicas.bench/push"
POLL_SECONDS = 0.01


@dataclass
class Replica:
    port: int
    home: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model_dir(self) -> Path:
        return self.home / "models"

    def start(self, env: dict[str, str]) -> bool:
        """Start and wait until it serves; False if its port was taken meanwhile (this
        machine is shared: another process may bind a port free_port just handed out)."""
        self.home.mkdir(parents=True, exist_ok=True)
        log_path = self.home / "receiver.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
                cwd=ROOT,
                env={
                    **env,
                    "PORT": str(self.port),
                    "RECEIVER_MODEL_DIR": str(self.model_dir),
                    "RECEIVER_STATE_DIR": str(self.home / "state"),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        listening = f"Listening at: http://0.0.0.0:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # a loaded machine answers late, not never
            text = log_path.read_text(errors="replace")
            if "Address already in use" in text or self.process.poll() is not None:
                self.stop()
                return False
            if listening in text and self._healthy():
                return True
            time.sleep(0.1)
        raise SystemExit(f"{self.url} did not start; see {log_path}")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def has(self, version: int) -> bool:
        return (self.model_dir / "m" / str(version)).is_dir()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)


def push(replica: Replica, blob: storage.Blob, token: str) -> None:
    answer = subprocess.run(
        [
            "curl", "-sS", "-X", "POST", f"{replica.url}/push",
            "-H", f"Authorization: Bearer {token}",
            "-H", "Content-Type: application/json", "--data-binary", "@-",
        ],
        input=json.dumps(notification_push(blob)).encode(), capture_output=True, check=True,
    )  # fmt: skip
    outcome = json.loads(answer.stdout)["outcome"]
    if outcome != "queued":
        raise SystemExit(f"{replica.url} did not queue {blob.name}: {outcome}")


def wait_for_all(replicas: list[Replica], version: int, started: float, timeout: float) -> float:
    """Seconds from `started` until every replica has `version`."""
    while not all(replica.has(version) for replica in replicas):
        if time.perf_counter() - started > timeout:
            missing = [r.url for r in replicas if not r.has(version)]
            raise SystemExit(f"version {version} never reached {missing}")
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - started


class Bench:
    def __init__(self, size_mib: int, workdir: Path) -> None:
        self.workdir = workdir
        self.emulator = StorageEmulator().start()
        client = storage.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.emulator.url},
        )
        self.bucket = client.create_bucket("replicas")
        self.archive = archive_path("weights", size_mib, "tar.gz").read_bytes()
        self.signer = DevSigner.create(workdir / "keys")
        self.version = 0
        self.timeout = 60 + size_mib  # generous: a second per MiB on a slow machine

    def upload(self) -> storage.Blob:
        self.version += 1
        blob = self.bucket.blob(f"models/m/{self.version}.tar.gz")
        blob.upload_from_string(self.archive, timeout=600)
        return blob

    def env(self, peers: list[Replica], sync_on_start: bool = False) -> dict[str, str]:
        return {
            **os.environ,
            "STORAGE_EMULATOR_HOST": self.emulator.url,
            "RECEIVER_SOURCE": f"gs://{self.bucket.name}/models",
            "RECEIVER_AUDIENCE": AUDIENCE,
            "RECEIVER_ALLOWED_SENDERS": DEV_SENDER,
            "RECEIVER_CERTS_URL": self.signer.certs_url,
            "RECEIVER_KEEP_VERSIONS": "1",
            "RECEIVER_SYNC_ON_START": "true" if sync_on_start else "false",
            "RECEIVER_LOG_FORMAT": "json",
            "RECEIVER_PEERS": ",".join(peer.url for peer in peers),
            "WEB_CONCURRENCY": "1",
        }

    def fleet(self, n: int, run: int, running: int | None = None) -> list[Replica]:
        """n replicas that list each other, the first `running` (all) of them started."""
        for attempt in range(5):
            replicas = [
                Replica(free_port(), self.workdir / f"n{n}-run{run}-try{attempt}-r{i}")
                for i in range(n)
            ]
            if all(r.start(self.env(replicas)) for r in replicas[:running]):
                return replicas
            self.stop(replicas)  # a port was taken: a new fleet on new ports
        raise SystemExit("could not start a fleet: ports kept being taken")

    def all_up(self, n: int, run: int) -> float:
        replicas = self.fleet(n, run)
        try:
            blob = self.upload()
            started = time.perf_counter()
            push(replicas[0], blob, self.signer.mint(AUDIENCE))
            return wait_for_all(replicas, self.version, started, self.timeout)
        finally:
            self.stop(replicas)

    def one_down(self, n: int, run: int) -> tuple[float, float]:
        """(seconds until the running replicas have it, seconds from the down one's start)."""
        replicas = self.fleet(n, run, running=n - 1)
        *running, down = replicas
        try:
            blob = self.upload()
            started = time.perf_counter()
            push(running[0], blob, self.signer.mint(AUDIENCE))
            others = wait_for_all(running, self.version, started, self.timeout)
            restarted = time.perf_counter()
            if not down.start(self.env(replicas, sync_on_start=True)):
                raise SystemExit(f"{down.url}: its port was taken while it was down")
            return others, wait_for_all([down], self.version, restarted, self.timeout)
        finally:
            self.stop(replicas)

    def stop(self, replicas: list[Replica]) -> None:
        for replica in replicas:
            replica.stop()
        for replica in replicas:
            shutil.rmtree(replica.home, ignore_errors=True)
        for blob in self.bucket.list_blobs():  # the emulator keeps objects in memory
            blob.delete()

    def close(self) -> None:
        self.emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB of model weights")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--down", type=int, default=4, help="N for the one-peer-down run; 0: none")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    counts = sorted(set([1, *args.replicas]))
    workdir = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    bench = Bench(args.size, workdir)
    try:
        medians = {}
        for n in counts:
            medians[n] = statistics.median(bench.all_up(n, run) for run in range(args.runs))
            print(f"{n} replicas: {medians[n]:.2f} s", flush=True)
        down = [bench.one_down(args.down, run) for run in range(args.runs)] if args.down else []
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    alone = medians[1]
    print(f"\nOne push of a {args.size} MiB model (tar.gz), median of {args.runs} runs.\n")
    print("| replicas | last replica has it | vs one alone |")
    print("|---|---|---|")
    for n, seconds in medians.items():
        print(f"| {n} | {seconds:.2f} s | {seconds / alone:.2f}x |")
    if down:
        others = statistics.median(pair[0] for pair in down)
        at_start = statistics.median(pair[1] for pair in down)
        print(f"\nOne of {args.down} down during the push, started afterwards (sync at start).\n")
        print("| replicas | the running ones have it | the one down has it, after its start |")
        print("|---|---|---|")
        print(f"| {args.down} | {others:.2f} s | {at_start:.2f} s |")


if __name__ == "__main__":
    main()
