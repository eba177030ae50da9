"""Where a push's time goes: py-spy on one receiver worker while wrk sends pushes.

    PYTHONPATH=. .venv/bin/python benchmarks/profile_push.py [SECONDS]

Starts the receiver as benchmarks/push.py does (default gunicorn settings; certificates
over plain HTTP, which it fetches once an hour either way), runs wrk
for SECONDS (default 10) with pushes it answers `ignored`, and meanwhile records one
worker with `py-spy record --gil` (only the thread holding the GIL is sampled: with
several request threads, the others are mostly waiting for it). Prints the share of
samples spent inside each stage of a request.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import worker_pids
from benchmarks.load import wrk, wrk_script
from benchmarks.push import push_env, serve_certs, start
from receiver.dev.keys import DevSigner
from receiver.dev.tools import free_port

ROOT = Path(__file__).resolve().parent.parent
PY_SPY = Path(sys.executable).parent / "py-spy"

# stage -> frames that mark it, all on the stack (its samples include what it calls)
STAGES = {
    "gunicorn: read and parse the request": ("Parser.__next__ (gunicorn/http/parser.py",),
    "gunicorn: its access log line": ("Logger.access (gunicorn/glogging.py",),
    "Flask: the whole app (what follows is part of it)": ("Flask.__call__ (flask/app.py",),
    "receiver: the push route": ("push (receiver/web.py",),
    "receiver: its log line for the push": ("push (receiver/web.py", "Logger.info ("),
    "receiver: token check": ("PushVerifier.verify (receiver/auth.py",),
    "receiver: parse the delivery": ("parse_delivery (receiver/events.py",),
    "receiver: decide (intake)": ("accept (receiver/intake.py",),
    "Flask: JSON response": ("jsonify (flask/json/__init__.py",),
}


def main(seconds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="profile-push-"))
    signer = DevSigner.create(workdir / "keys")
    certs, certs_url = serve_certs(signer.certs_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**push_env(workdir, certs_url), "PORT": str(port), "RECEIVER_AUDIENCE": url}
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
    receiver = start(command, env, workdir / "receiver.log", f"{url}healthz")
    raw = workdir / "push.raw"
    try:
        worker = worker_pids(receiver.pid)[0]
        spy = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", worker, "--gil", "--nonblocking", "--rate", "250",
             "--format", "raw", "-o", str(raw), "-d", str(seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = wrk(url, wrk_script(workdir, signer.mint(url)), seconds)
        spy.wait(timeout=seconds + 30)
    finally:
        os.killpg(receiver.pid, signal.SIGTERM)
        receiver.wait(timeout=60)
        certs.shutdown()
    print(f"{result['requests_per_second']:.0f} pushes/s while profiled\n")
    print("| stage | share of GIL-holding samples |\n|---|---:|")
    for stage, share in summarize(raw).items():
        print(f"| {stage} | {share:.0f}% |")


def summarize(raw: Path) -> dict[str, float]:
    inside: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        total += int(weight)
        for stage, markers in STAGES.items():
            if all(marker in stack for marker in markers):
                inside[stage] += int(weight)
    return {stage: 100 * inside[stage] / max(total, 1) for stage in STAGES}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
