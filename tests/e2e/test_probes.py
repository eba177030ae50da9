"""Probes answer whatever the push port is doing: floods, waits, slow and silent clients.

The kubelet and Cloud Run send a probe and give up after `timeoutSeconds` (default 1 s);
a liveness probe missed three times restarts the container, which kills every install.
Here the probe's timeout is a few seconds, for a shared test machine; without the
probe lane (gunicorn.conf.py) these probes were not answered at all while the flood lasted.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.e2e.conftest import Gunicorn, wait_for
from tests.helpers import push_body, upload_model

PROBE_TIMEOUT = 3.0  # the kubelet's default is 1 s; this machine is shared
THREADS = 4


@contextlib.contextmanager
def dawdling_clients(url: str, silent: int, partial: int) -> Iterator[list[socket.socket]]:
    """Connections that send nothing, or half a request, and then wait."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    try:
        for n in range(silent + partial):
            conn = socket.create_connection((host, int(port)))
            if n >= silent:
                conn.sendall(b"POST / HTTP/1.1\r\nHost: receiver\r\nContent-Length: 9000\r\n")
            sockets.append(conn)
        yield sockets
    finally:
        for conn in sockets:
            conn.close()


def probe(url: str, path: str) -> int:
    """One probe as the kubelet sends it: a fresh connection, a GET, a deadline."""
    return requests.get(f"{url}{path}", timeout=PROBE_TIMEOUT).status_code


@pytest.fixture
def installed_mode(gunicorn: Gunicorn, fault_proxy) -> Gunicorn:
    """One worker process whose installs hang until `fault_proxy.release` is set."""
    gunicorn.env.update(
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS=str(THREADS),
        RECEIVER_ACK="installed",
        RECEIVER_ACK_TIMEOUT="120",
        STORAGE_EMULATOR_HOST=fault_proxy.url,
    )
    fault_proxy.faults = ["hold"]
    return gunicorn


def test_probes_answer_through_a_flood_slow_clients_and_installed_mode_waits(
    installed_mode, fault_proxy, bucket, token
):
    gunicorn = installed_mode.start()
    blobs = [upload_model(bucket, 1, model=f"model_{n}") for n in range(12)]
    secret = token()
    answers: list[requests.Response] = []
    stop_flood = threading.Event()

    def wait_for_install(body: bytes) -> None:
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        answers.append(requests.post(f"{gunicorn.url}/", data=body, headers=headers, timeout=150))

    def forged_pushes() -> None:
        while not stop_flood.is_set():
            with contextlib.suppress(requests.RequestException):
                requests.post(f"{gunicorn.url}/", data=b"{}", timeout=30)

    with ThreadPoolExecutor(max_workers=len(blobs) + 4) as pool:
        try:
            waits = [pool.submit(wait_for_install, push_body(blob)) for blob in blobs]
            floods = [pool.submit(forged_pushes) for _ in range(4)]
            assert fault_proxy.holding.wait(60), "the first install never started"
            # Every push beyond the cap is answered at once, the rest wait for their installs.
            over = len(blobs) - (THREADS - 2)
            wait_for(lambda: len(answers) >= over, what="503s beyond the cap")
            with dawdling_clients(gunicorn.url, silent=60, partial=20):
                probes = [probe(gunicorn.url, "/healthz") for _ in range(10)]
                readiness = [probe(gunicorn.url, "/readyz") for _ in range(5)]
        finally:
            stop_flood.set()
            fault_proxy.release.set()
        for future in (*waits, *floods):
            future.result()

    assert probes == [200] * 10
    assert all(status in (200, 503) for status in readiness)
    over_cap = [answer for answer in answers if answer.status_code == 503]
    assert len(over_cap) == len(blobs) - (THREADS - 2)
    assert all("RECEIVER_MAX_WAITING_PUSHES" in a.json()["reason"] for a in over_cap)
    assert {a.json()["outcome"] for a in answers if a.status_code == 200} == {"installed"}


def test_a_silent_connection_is_closed_and_costs_no_request_thread(gunicorn):
    gunicorn.env.update(WEB_CONCURRENCY="1", GUNICORN_THREADS="1")
    gunicorn.start()
    with dawdling_clients(gunicorn.url, silent=30, partial=0) as silent:
        assert probe(gunicorn.url, "/healthz") == 200
        assert requests.get(f"{gunicorn.url}/status", timeout=PROBE_TIMEOUT).status_code == 200
        silent[0].settimeout(30)
        assert silent[0].recv(1) == b""  # closed by the receiver, not left open forever


def test_a_client_silent_mid_request_loses_its_connection_with_one_log_line(gunicorn):
    gunicorn.env.update(WEB_CONCURRENCY="1")
    gunicorn.start()
    with dawdling_clients(gunicorn.url, silent=0, partial=1) as (half_sent,):
        half_sent.settimeout(60)
        assert half_sent.recv(1) == b""  # closed: the request thread is free again
    wait_for(lambda: "the client sent nothing for 10 s" in gunicorn.log(), what="the log line")
    assert "Traceback" not in gunicorn.log()
