"""A TCP proxy on 127.0.0.1 that adds a fixed delay each way: a WAN round trip on loopback.

The platform is across the internet; loopback answers in microseconds, which hides every
round trip a client wastes. Each chunk read from one side is written to the other side
`delay` seconds after it arrived, in order, so a request and its answer cost one round
trip of 2 x delay, and a pipelined stream costs it once. Threads, not asyncio: the bench
and the tests start and stop it from plain code. It serves loopback only and stops with
`close()`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from types import TracebackType


class DelayProxy:
    def __init__(self, target_port: int, rtt_ms: float, target_host: str = "127.0.0.1") -> None:
        self.delay = rtt_ms / 2000.0  # each way
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._start(self._accept, "delayproxy-accept")

    def _start(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            self._start(self._pipe, "delayproxy-up", client, server)
            self._start(self._pipe, "delayproxy-down", server, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        """Read from `source` at once; write each chunk to `sink` `delay` after it came."""
        queue: list[tuple[float, int, bytes | None]] = []
        counter = itertools.count()
        ready = threading.Condition()

        def writer() -> None:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    due, _, chunk = queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        ready.wait(wait)
                        continue
                    heapq.heappop(queue)
                if chunk is None:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                try:
                    sink.sendall(chunk)
                except OSError:
                    return

        self._start(writer, "delayproxy-writer")
        while True:
            try:
                chunk = source.recv(256 * 1024)
            except OSError:
                chunk = b""
            with ready:
                heapq.heappush(queue, (time.monotonic() + self.delay, next(counter),
                                       chunk or None))
                ready.notify()
            if not chunk:
                return

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
