"""gunicorn's gthread worker, changed so that probes never queue behind pushes.

In gthread the main thread accepts connections and a pool of `threads` request threads
serves them, first come first served. Stock gthread hands a new connection to the pool
at once, where it may hold a thread for 5 s waiting for its first byte; a request that
then dawdles mid-header or mid-body holds one for as long as it likes, and a push that
waits for its install (RECEIVER_ACK=installed) holds one for up to RECEIVER_ACK_TIMEOUT.
Once every thread is held, /healthz waits in the queue and the container is restarted.

Three changes (docs/operating.md says why and what must sit in front):

* A new connection waits in the main thread's poller for its first byte, not in a
  request thread, and is closed if nothing comes within `keepalive` seconds.
* A request that is a complete GET (or HEAD) of /healthz or /readyz, every byte of it
  already received, is served by a small pool of its own. Its thread never waits on
  the client: the request is in the socket buffer and the answer fits the send buffer.
* A client silent for `CLIENT_SILENCE_SECONDS` while its request is read (or its answer
  written) loses the connection, so a slow client holds a request thread for that long
  at most per byte it trickles.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import struct
import time
from concurrent import futures
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

PROBE_PATHS = frozenset({b"/healthz", b"/startupz", b"/readyz"})
PROBE_THREADS = 2
CLIENT_SILENCE_SECONDS = 10
_PEEK_BYTES = 8192  # a probe's request is a few hundred bytes; anything longer is not one


def is_whole_probe(head: bytes) -> bool:
    """Is `head` (the bytes received so far) one complete, bodiless probe request?"""
    line, newline, rest = head.partition(b"\r\n")
    if not newline or b"\r\n\r\n" not in b"\r\n" + rest:
        return False
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
        return False
    if parts[1].split(b"?", 1)[0] not in PROBE_PATHS:
        return False
    headers = rest.split(b"\r\n\r\n", 1)[0].lower()
    # A body would have to be read (or drained) by the probe thread: not a probe then.
    return b"content-length:" not in headers and b"transfer-encoding:" not in headers


class ProbeLaneWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn has no type hints
    """gthread with a lane of its own for probes; `worker_class` in gunicorn.conf.py."""

    def init_process(self) -> None:
        # Before super(): it runs the worker's loop and returns only when the worker stops.
        self.probe_pool = futures.ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="probe")
        self.log.error_log.addFilter(_silent_client_is_one_line)
        super().init_process()

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.probe_pool.shutdown(wait=False)

    def accept(self, listener: socket.socket) -> None:
        """Take a connection; it gets a request thread only once it has sent something."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        silence = struct.pack("ll", CLIENT_SILENCE_SECONDS, 0)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, silence)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, silence)
        conn = TConn(self.cfg, client, address, listener.getsockname())  # non-blocking now
        # The same deadline as a kept-alive connection gets; at least a second with keepalive 0.
        conn.timeout = time.monotonic() + max(self.cfg.keepalive, 1)
        self.pending_conns.append(conn)
        self.poller.register(
            client, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn)
        )

    def enqueue_req(self, conn: TConn) -> None:
        pool = self.probe_pool if self._is_whole_probe(conn) else self.tpool
        done = pool.submit(self.handle, conn)
        done.add_done_callback(
            lambda future: self.method_queue.defer(self.finish_request, conn, future)
        )

    def _is_whole_probe(self, conn: TConn) -> bool:
        if self.cfg.is_ssl:
            return False
        unreader: Any = getattr(conn.parser, "unreader", None)
        if unreader is not None and unreader.buf.getvalue():
            return False  # bytes read ahead already: served where they were read
        try:
            head = conn.sock.recv(_PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            return False
        return is_whole_probe(head)


def _silent_client_is_one_line(record: logging.LogRecord) -> bool:
    """gthread logs a read that timed out as a socket error with its traceback; a client
    that went silent is expected, and worth one line."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, BlockingIOError | TimeoutError):
        record.msg = (
            f"closed a connection: the client sent nothing for {CLIENT_SILENCE_SECONDS} s "
            "in the middle of its request"
        )
        record.args = ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True
