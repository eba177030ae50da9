"""A TCP proxy that caps each connection's download bandwidth, as one stream to Cloud
Storage is capped in practice.

    proxy = ThrottlingProxy("127.0.0.1", emulator_port, bytes_per_second=50e6).start()
    ... point clients at proxy.url ...
    proxy.stop()

Bytes from the client go upstream as they come; bytes from upstream are paced so that no
connection gets more than `bytes_per_second`, however many connections there are (the
total is not capped). It relays raw TCP, so HTTP keep-alive, ranges and chunking pass
through untouched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

_BLOCK = 256 * 1024


class ThrottlingProxy:
    def __init__(self, host: str, port: int, bytes_per_second: float) -> None:
        self.upstream = (host, port)
        self.rate = bytes_per_second
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._stopping = False

    def start(self) -> ThrottlingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.upstream)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_relay, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=_relay, args=(upstream, client, self.rate), daemon=True).start()


def _relay(source: socket.socket, target: socket.socket, rate: float | None) -> None:
    started = time.monotonic()
    sent = 0
    try:
        while block := source.recv(_BLOCK):
            target.sendall(block)
            if rate:
                sent += len(block)
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -0.5:  # idle keep-alive time is not saved up as credit
                    started, sent = time.monotonic(), 0
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
