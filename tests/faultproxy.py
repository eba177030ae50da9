"""A real HTTP proxy between the receiver and the storage emulator that breaks downloads.

Point STORAGE_EMULATOR_HOST at `FaultProxy.url`. Every request is forwarded to the
emulator; media downloads (`alt=media`) take the next fault from `faults`:

    "503"       answer 503 without asking the emulator
    "reset"     send half the body, then reset the connection (RST)
    "truncate"  promise the full length, send half, close cleanly
    "stall"     send half the body, then go silent for `stall_seconds`
    "corrupt"   send every byte, one of them flipped
    "hold"      send half the body, set `holding`, wait for `release` to be set, send the rest

`throttle` (bytes/s) slows every download, for tests that act in the middle of one;
`ignore_ranges` drops Range headers, as a server without range support would.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import struct
import threading
import time

import requests

from tests.stubserver import QuietHandler, StubServer

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-encoding",
    "content-length",
}


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[str] = []
        self.throttle: float | None = None
        self.ignore_ranges = False
        self.stall_seconds = 5.0
        self.downloads = 0
        self.holding = threading.Event()  # a "hold" download is paused halfway
        self.release = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def handle(self) -> None:
                # A client may drop a download halfway (a stream that went on in slices).
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    super().handle()

            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

        self.server = StubServer(Handler)
        self.url = self.server.url

    def close(self) -> None:
        self.server.close()

    def _next_fault(self) -> str:
        with self._lock:
            self.downloads += 1
            return self.faults.pop(0) if self.faults else "ok"

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", 0))
        body = handler.rfile.read(length) if length else None
        is_download = "alt=media" in handler.path
        fault = self._next_fault() if is_download else "ok"
        if fault == "503":
            self._send(handler, 503, {}, b"injected 503")
            return
        dropped = {"host", "range"} if self.ignore_ranges else {"host"}
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in dropped}
        upstream = requests.request(
            handler.command, self.upstream + handler.path, headers=headers, data=body, timeout=60
        )
        content = upstream.content
        reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        if fault == "corrupt" and content:
            content = bytes([content[0] ^ 0xFF]) + content[1:]
        if fault in ("hold", "reset", "truncate", "stall"):
            self._send_half(handler, upstream.status_code, reply_headers, content, fault)
        else:
            self._send(handler, upstream.status_code, reply_headers, content)

    def _start(
        self,
        handler: http.server.BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        length: int,
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(length))
        handler.end_headers()

    def _send(
        self,
        handler: http.server.BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        content: bytes,
    ) -> None:
        self._start(handler, status, headers, len(content))
        self._write(handler, content)

    def _send_half(
        self,
        handler: http.server.BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        content: bytes,
        fault: str,
    ) -> None:
        """Promise every byte, send half; then stall, reset, hold, or just close."""
        self._start(handler, status, headers, len(content))
        half = len(content) // 2
        self._write(handler, content[:half])
        handler.wfile.flush()
        if fault == "hold":
            self.holding.set()
            self.release.wait(120)
            self._write(handler, content[half:])
            return
        if fault == "stall":
            time.sleep(self.stall_seconds)
        elif fault == "reset":
            # SO_LINGER with a zero timeout turns close() into a TCP reset.
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        handler.close_connection = True

    def _write(self, handler: http.server.BaseHTTPRequestHandler, content: bytes) -> None:
        if not self.throttle:
            # The receiver may have gone away meanwhile (killed, or gave up).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                handler.wfile.write(content)
            return
        step = max(int(self.throttle / 20), 1)
        for start in range(0, len(content), step):
            try:
                handler.wfile.write(content[start : start + step])
                handler.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the receiver went away (killed, or gave up)
            time.sleep(0.05)
