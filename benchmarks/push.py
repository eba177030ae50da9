"""Push path under load: the receiver against the per-request `verify_token` baseline.

    PYTHONPATH=. .venv/bin/python benchmarks/push.py --seconds 10 --burst 10000

wrk (Debian's package) sends signed pushes for an object outside the prefix (answered
`ignored`, so only the request path is measured) to each server, all under gunicorn
with the receiver's default settings (workers, threads, gthread), certificates served
with Cache-Control from a local HTTPS endpoint (a self-signed certificate made for the
run, trusted through REQUESTS_CA_BUNDLE), as Google serves them: the receiver; the
baseline (push_baseline.py: Google's push sample, a new transport per push); the
baseline of earlier rounds (one shared transport, certificates over plain HTTP); and an
empty Flask route (push_ceiling.py, what Flask and gunicorn cost on their own),
--rounds times each in turns, with the servers' CPU per request.
Then a burst of --burst pushes as fast as wrk sends them to the receiver, after which
its journal must hold no job. Last, a fixed-rate run (--rate pushes/s for --seconds,
benchmarks/load.py) for the latency at a steady, realistic load.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import http.server
import ipaddress
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks.common import wait_until_up, worker_pids
from benchmarks.load import fixed_rate, wrk, wrk_script
from receiver.config import ServerSettings
from receiver.dev.keys import DEV_SENDER, DevSigner, self_signed
from receiver.dev.tools import free_port

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def tls_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, for the local certs endpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    private_pem, certificate_pem = self_signed(
        ec.generate_private_key(ec.SECP256R1()),
        "127.0.0.1",
        datetime.timedelta(days=1),
        [
            (x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), False),
            (x509.BasicConstraints(ca=True, path_length=None), True),  # its own trust anchor
        ],
    )
    certificate_path, key_path = directory / "certs-endpoint.pem", directory / "certs-endpoint.key"
    certificate_path.write_bytes(certificate_pem)
    key_path.write_bytes(private_pem)
    return certificate_path, key_path


class _CertsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5: a baseline's 16 threads fetching at once
    # overflowed it, and each dropped connection waited a second to be tried again.
    request_queue_size = 128


def serve_certs(path: Path, tls: tuple[Path, Path] | None = None) -> tuple[_CertsServer, str]:
    """Serve `path` as Google serves its certificates (over HTTPS with `tls`); and its URL."""

    class Certs(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=3600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = _CertsServer(("127.0.0.1", free_port()), Certs)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        # Each connection's handshake runs in its own thread, on its first read, not in
        # the accepting one.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls is not None else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_port}/certs"


def start(command: list[str], env: dict[str, str], log: Path, url: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_until_up(url)
    return process


def push_env(workdir: Path, certs_url: str) -> dict[str, str]:
    """A receiver's environment for pushes it only answers (PORT and audience to add)."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",  # never reached: nothing installs
        "RECEIVER_SOURCE": "gs://bench/models",
        "RECEIVER_MODEL_DIR": str(workdir / "models"),
        "RECEIVER_ALLOWED_SENDERS": DEV_SENDER,
        "RECEIVER_CERTS_URL": certs_url,
        "RECEIVER_SYNC_ON_START": "false",
        "RECEIVER_LOG_FORMAT": "json",
    }


def server_cpu_seconds(master: int) -> float:
    """CPU time (user + system) used so far by a gunicorn master and its workers."""
    total = 0
    for pid in [str(master), *worker_pids(master)]:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def measured(url: str, script: Path, seconds: int, master: int) -> dict[str, float]:
    """One wrk run, with the server's CPU time per request it answered."""
    before = server_cpu_seconds(master)
    result = wrk(url, script, seconds)
    result["cpu_us"] = 1e6 * (server_cpu_seconds(master) - before) / max(result["requests"], 1)
    return result


def main(seconds: int, burst: int, rate: float, rounds: int) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="push-bench-"))
    signer = DevSigner.create(workdir / "keys")
    tls = tls_certificate(workdir / "tls")
    # Google serves its certificates over HTTPS only; earlier rounds served them over HTTP.
    certs, certs_url = serve_certs(signer.certs_path, tls)
    plain_certs, plain_certs_url = serve_certs(signer.certs_path)
    server = ServerSettings.from_env({})  # the receiver's default workers and threads
    env = {
        **push_env(workdir, certs_url),
        "GUNICORN_LOG_LEVEL": "warning",
        "REQUESTS_CA_BUNDLE": str(tls[0]),  # requests then trusts the local endpoint
    }
    empty_config = workdir / "empty.conf.py"  # or gunicorn reads ./gunicorn.conf.py
    empty_config.write_text("")
    servers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}

    def serve(name: str, command: list[str], **extra_env: str) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        log = workdir / f"{len(servers)}.log"
        environment = {**env, "PORT": str(port), "RECEIVER_AUDIENCE": url, **extra_env}
        servers[name] = (url, start([*command, "-b", f"127.0.0.1:{port}"], environment, log, url))

    def same_settings(app: str) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "-c", str(empty_config),
            "-w", str(server.workers), "--threads", str(server.threads), "-k", "gthread", app,
        ]  # fmt: skip

    try:
        serve(RECEIVER, [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"])
        serve(BASELINE, same_settings("benchmarks.push_baseline:app"))
        serve(
            EARLIER_BASELINE,
            same_settings("benchmarks.push_baseline:app_one_transport"),
            RECEIVER_CERTS_URL=plain_certs_url,
        )
        serve(CEILING, same_settings("benchmarks.push_ceiling:app"))
        scripts = {
            name: wrk_script(workdir, signer.mint(url), f"server{number}")
            for number, (name, (url, _)) in enumerate(servers.items())
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for _ in range(rounds):  # in turns, so a slow spell of the machine falls on all
            for name, (url, process) in servers.items():
                runs[name].append(measured(url, scripts[name], seconds, process.pid))
        receiver_url = servers[RECEIVER][0]
        # wrk runs for a duration: long enough for `burst` pushes at the measured rate.
        rps = statistics.median(r["requests_per_second"] for r in runs[RECEIVER])
        burst_run = wrk(
            receiver_url,
            scripts[RECEIVER],
            seconds=max(2, int(burst / max(rps, 1) * 1.3) + 1),
            connections=64,
        )
        jobs = requests.get(f"{receiver_url}status", timeout=10).json()["jobs"]
        steady = fixed_rate(receiver_url, signer.mint(receiver_url), rate, seconds)
    finally:
        for _, process in servers.values():
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
        certs.shutdown()
        plain_certs.shutdown()
    return report(runs, rounds, seconds, burst_run, jobs, steady, rate)


RECEIVER = "receiver"
BASELINE = "baseline: Google's push sample (a new transport per push, certs over HTTPS)"
EARLIER_BASELINE = "baseline of earlier rounds (one shared transport, certs over plain HTTP)"
CEILING = "empty Flask route (parses the body, answers 204)"


def report(
    runs: dict[str, list[dict[str, float]]],
    rounds: int,
    seconds: int,
    burst_run: dict[str, float],
    jobs: dict[str, int],
    steady: dict[str, float],
    rate: float,
) -> str:
    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    def ratio(name: str, baseline: str = BASELINE) -> float:
        """Throughput over `baseline`'s in the same round; the median over rounds."""
        pairs = zip(runs[name], runs[baseline], strict=True)
        return statistics.median(
            r["requests_per_second"] / max(b["requests_per_second"], 1) for r, b in pairs
        )

    lines = [
        "| server | requests/s | vs baseline | server CPU per request | p50 | p99 | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in runs:
        errors = sum(run["errors"] + run["socket_errors"] for run in runs[name])
        lines.append(
            f"| {name} | {median(name, 'requests_per_second'):.0f} | {ratio(name):.1f}x "
            f"| {median(name, 'cpu_us'):.0f} µs | {median(name, 'p50_ms'):.1f} ms "
            f"| {median(name, 'p99_ms'):.1f} ms | {errors:.0f} |"
        )
    return (
        f"{rounds} rounds of {seconds} s of wrk per server (2 threads, 16 connections), the "
        "servers in turns; medians of the rounds, each ratio taken within its round.\n\n"
        + "\n".join(lines)
        + f"\n\nReceiver throughput: {ratio(RECEIVER):.1f}x the baseline's; server CPU per "
        f"request {median(BASELINE, 'cpu_us') / median(RECEIVER, 'cpu_us'):.1f}x less. Against "
        f"the baseline of earlier rounds: {ratio(RECEIVER, EARLIER_BASELINE):.1f}x.\n\n"
        f"Burst: {burst_run['requests']:.0f} pushes at {burst_run['requests_per_second']:.0f}/s "
        f"over 64 connections, {burst_run['errors']:.0f} not answered 2xx, "
        f"p99 {burst_run['p99_ms']:.1f} ms; jobs in the journal afterwards: "
        f"{sum(jobs.values())}.\n\n"
        f"Fixed rate: {steady['requests']:.0f} pushes due at {rate:g}/s over {seconds} s, "
        f"sent at {steady['requests_per_second']:.0f}/s over 16 connections: "
        f"p50 {steady['p50_ms']:.1f} ms, p99 {steady['p99_ms']:.1f} ms (from when each push "
        f"was due), {steady['errors']:.0f} not answered 2xx.\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=500, help="pushes/s of the fixed-rate run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per server, in turns")
    arguments = parser.parse_args()
    print(main(arguments.seconds, arguments.burst, arguments.rate, arguments.rounds))
