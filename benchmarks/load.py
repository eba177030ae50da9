"""Load for the push benchmarks: wrk at full speed, and a fixed-rate sender for latency.

wrk (Debian's package) only sends as fast as it can, and wrk2 is not packaged, so the
fixed-rate run (`fixed_rate`) is this module's own: push i is due at start + i/rate.
"""

from __future__ import annotations

import http.client
import json
import re
import statistics
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.common import IGNORED_PUSH


def wrk_script(workdir: Path, token: str, name: str = "push") -> Path:
    script = workdir / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(IGNORED_PUSH))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    return script


def wrk(url: str, script: Path, seconds: int, connections: int = 16) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        "requests": float(re.search(r"(\d+) requests in", out)[1]),  # type: ignore[index]
        "p50_ms": _ms(re.search(r"\n\s+50%\s+(\S+)", out)[1]),  # type: ignore[index]
        "p99_ms": _ms(re.search(r"\n\s+99%\s+(\S+)", out)[1]),  # type: ignore[index]
        "errors": float(errors[1]) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
    }


def fixed_rate(
    url: str, token: str, rate: float, seconds: float, connections: int = 16
) -> dict[str, float]:
    """Pushes on a fixed schedule (push i is due at start + i/rate) over `connections`
    keep-alive connections. Latency counts from when a push was due, not from when a free
    connection sent it, so a stalled server is not hidden (no coordinated omission)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    body = json.dumps(IGNORED_PUSH).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    total = int(rate * seconds)
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    next_push = 0
    start = time.perf_counter() + 0.2

    def send() -> None:
        nonlocal next_push, failures
        connection = http.client.HTTPConnection(host, port, timeout=10)
        while True:
            with lock:
                index, next_push = next_push, next_push + 1
            if index >= total:
                break
            due = start + index / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            try:
                connection.request("POST", parts.path or "/", body, headers)
                response = connection.getresponse()
                response.read()
                ok = 200 <= response.status < 300
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=10)
                ok = False
            finished = time.perf_counter()
            with lock:
                latencies.append((finished - due) * 1000)
                failures += 0 if ok else 1
        connection.close()

    threads = [threading.Thread(target=send) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": float(len(latencies)),
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "errors": float(failures),
    }


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise SystemExit(f"cannot read wrk's latency {text!r}")
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match[2]]
