"""Stub HTTP servers for the tests: a real ThreadingHTTPServer on 127.0.0.1, on a port the
kernel picks (so two tests never race for one), serving either a table of responders,
one per HTTP method, or a handler class of the test's own.

    with StubServer({"GET": lambda request: Reply.json({"ok": True})}) as server:
        requests.get(f"{server.url}/anything")

A responder gets the whole request read (`Request`) and returns a `Reply`; a method not
in the table is answered 405. The handler form is for stubs that act on the connection
itself (tests/faultproxy.py sends half a body, then resets it); derive it from
`QuietHandler`. A stub with state of its own (counts, set answers) holds a StubServer
and closes it.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # with its query string, as sent
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: object, status: int = 200) -> Reply:
        return cls(status, json.dumps(value).encode(), {"Content-Type": "application/json"})


Responder = Callable[[Request], Reply]


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """No access log: pytest would print a line per request of every failing test."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Routes(QuietHandler):
    routes: Mapping[str, Responder] = {}

    def _answer(self) -> None:
        responder = self.routes.get(self.command)
        if responder is None:
            self.send_error(405)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = responder(Request(self.command, self.path, dict(self.headers.items()), body))
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


def _serving(routes: Mapping[str, Responder]) -> type[QuietHandler]:
    class Routes(_Routes):
        pass

    Routes.routes = dict(routes)
    return Routes


class StubServer:
    """Serving from construction until `close()` (or the end of its `with` block)."""

    def __init__(self, handler: Mapping[str, Responder] | type[QuietHandler]) -> None:
        if not isinstance(handler, type):
            handler = _serving(handler)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # A request a test still holds (a stub told to wait) does not hold up close().
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> StubServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
