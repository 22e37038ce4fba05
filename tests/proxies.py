"""A TCP proxy on loopback, put between the service and a local dependency (Azurite, the
identity) to make it slow or hang and to count what the service sends it."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

__all__ = ["LoopbackProxy"]

_METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ", b"MERGE ")


class LoopbackProxy:
    """Forwards to `127.0.0.1:target_port`, holding each chunk a client sends for `delay` seconds,
    or for ever (`hang`). Notes when each request starts (a chunk that begins with an HTTP
    method), its request line (`lines`), and the most chunks it held at once (`peak`); with
    `servers`, it serves that many at a time, like storage that is the bottleneck. While
    `reset(line)` says so, a request is answered by a connection reset instead."""

    def __init__(self, target_port: int, delay: float = 0.0, hang: bool = False, servers: int = 0) -> None:
        self.target_port, self.delay, self.hang = target_port, delay, hang
        self._servers = threading.BoundedSemaphore(servers) if servers else None
        """Storage as a bottleneck: at most this many requests held (served) at once, each for
        `delay`; the others wait their turn (0: no bound)."""
        self.reset: Callable[[str], bool] | None = None
        self.lines: list[str] = []
        self.started: list[float] = []
        self.holding = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url_of(self, url: str, port: int) -> str:
        """`url` (or a connection string) with the proxied `port` replaced by the proxy's."""
        return url.replace(f":{port}/", f":{self.port}/")

    def started_after(self, moment: float) -> int:
        with self._lock:
            return sum(t > moment for t in self.started)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    if data.startswith(_METHODS):
                        line = data.split(b"\r\n", 1)[0].decode("latin-1")
                        self.started.append(time.monotonic())
                        self.lines.append(line)
                        if self.reset is not None and self.reset(line):
                            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            return
                    self.holding += 1
                    self.peak = max(self.peak, self.holding)
                if self.hang:
                    self._closed.wait()
                    return
                if self._servers is not None:
                    with self._servers:
                        time.sleep(self.delay)
                else:
                    time.sleep(self.delay)
                with self._lock:
                    self.holding -= 1
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            self._close_both(client, upstream)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close_both(source, sink)

    @staticmethod
    def _close_both(*sockets: socket.socket) -> None:
        for s in sockets:
            try:
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        self._close_both(*self._sockets)
