"""History does not slow the present: request times with few and with many journal rows.

    PYTHONPATH=. .venv/bin/python benchmarks/history.py --jobs 50 50000 --requests 50

For each journal size, a real gunicorn receiver (default settings, two workers) starts on
a journal holding that many finished jobs; all run at once, and each request is sent
--requests times to each, alternating between them:
GET /status, GET / (the status page), GET /metrics, and a signed push for an object
outside the prefix (answered `ignored`: the request path without an install). Prints
the median milliseconds and the ratio of the largest journal to the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from benchmarks.common import IGNORED_PUSH, wait_until_up
from receiver.dev.keys import DEV_SENDER, DevSigner
from receiver.dev.tools import free_port
from receiver.journal import Journal

ROOT = Path(__file__).resolve().parent.parent


def fill(journal: Journal, count: int) -> None:
    """`count` finished jobs, as months of uploads leave them."""
    db = journal._connection()
    now = time.time()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO jobs (bucket, object_name, generation, model, version, archive_format,"
        " state, reason, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (
                "bench",
                f"models/m{i % 200}/{i}.tar.gz",
                i + 1,
                f"m{i % 200}",
                i,
                "tar.gz",
                "failed" if i % 10 == 0 else "installed",
                "not a SavedModel" if i % 10 == 0 else None,
                now - i,
                now - i,
            )
            for i in range(count)
        ),
    )
    db.execute("COMMIT")


class Server:
    """A real gunicorn receiver (default settings) on a journal of `jobs` finished jobs."""

    def __init__(self, jobs: int) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="history-"))
        journal = Journal(workdir / "models" / ".receiver" / "journal.sqlite3")
        journal.initialize()
        fill(journal, jobs)
        port = free_port()
        self.url = url = f"http://127.0.0.1:{port}/"
        signer = DevSigner.create(workdir / "keys")
        env = {
            **os.environ,
            "PORT": str(port),
            "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",  # never reached: sync is off
            "RECEIVER_SOURCE": "gs://bench/models",
            "RECEIVER_MODEL_DIR": str(workdir / "models"),
            "RECEIVER_AUDIENCE": url,
            "RECEIVER_ALLOWED_SENDERS": DEV_SENDER,
            "RECEIVER_CERTS_URL": signer.certs_url,
            "RECEIVER_SYNC_ON_START": "false",
            "RECEIVER_LOG_FORMAT": "json",
        }
        with (workdir / "receiver.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until_up(f"{url}healthz")
        session = requests.Session()
        token = signer.mint(url)
        push = json.dumps(IGNORED_PUSH)
        self.requests: dict[str, Callable[[], requests.Response]] = {
            "GET /status": lambda: session.get(f"{url}status", timeout=10),
            "GET /": lambda: session.get(url, timeout=10),
            "GET /metrics": lambda: session.get(f"{url}metrics", timeout=10),
            "push (ignored)": lambda: session.post(
                url,
                data=push,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=10,
            ),
        }

    def time(self, name: str) -> float:
        started = time.perf_counter()
        response = self.requests[name]()
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        return elapsed

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)


def main(sizes: list[int], repeats: int) -> str:
    """Every server runs at once and requests alternate between them, so whatever else the
    machine does at a moment (write-back, another process) falls on all sizes alike."""
    servers = {size: Server(size) for size in sizes}
    try:
        names = list(next(iter(servers.values())).requests)
        times: dict[int, dict[str, list[float]]] = {size: {n: [] for n in names} for size in sizes}
        for name in names:
            for _ in range(repeats):
                for size, server in servers.items():
                    times[size][name].append(server.time(name))
    finally:
        for server in servers.values():
            server.stop()
    median = {
        size: {name: statistics.median(t) * 1000 for name, t in by_name.items()}
        for size, by_name in times.items()
    }
    small, large = min(sizes), max(sizes)
    header = " | ".join(f"{size:,} jobs" for size in sizes)
    lines = [
        f"| request | {header} | ratio |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for name in names:
        cells = " | ".join(f"{median[size][name]:.1f} ms" for size in sizes)
        lines.append(f"| {name} | {cells} | {median[large][name] / median[small][name]:.2f}x |")
    return (
        f"Medians of {repeats} requests each, alternating between the servers.\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[50, 50_000])
    parser.add_argument("--requests", type=int, default=50)
    arguments = parser.parse_args()
    print(main(arguments.jobs, arguments.requests))
