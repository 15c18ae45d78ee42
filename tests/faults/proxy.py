"""A TCP proxy between flad and sshd that misbehaves on command.

Modes: pass (forward), slow (bytes per second cap), stall (stop forwarding, keep the
sockets open: a server that says nothing), refuse (close new connections at once).
`cut_after(n)` closes a connection once n bytes went from client to server;
`cut_all()` closes every open connection now.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class FaultyProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.port: int = self.listener.getsockname()[1]
        self.mode = "pass"
        self.bytes_per_second = 0
        self._cut_after: int | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.connections = 0
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    # -- control ---------------------------------------------------------------------

    def set_mode(self, mode: str, bytes_per_second: int = 0) -> None:
        assert mode in ("pass", "slow", "stall", "refuse")
        self.mode = mode
        self.bytes_per_second = bytes_per_second

    def cut_after(self, client_bytes: int) -> None:
        """Close the next connection(s) once this many bytes went upstream."""
        self._cut_after = client_bytes

    def cut_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            self._close(a, b)
            self.cuts += 1

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        self.cut_all()

    # -- plumbing --------------------------------------------------------------------

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                self._close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._close(client)
                continue
            self.connections += 1
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        sent_up = 0
        try:
            while not self._closed.is_set():
                if self.mode == "stall":
                    time.sleep(0.05)
                    continue
                if client.fileno() < 0 or upstream.fileno() < 0:
                    return  # cut by cut_all() from another thread
                readable, _, _ = select.select([client, upstream], [], [], 0.1)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    dst = upstream if src is client else client
                    if src is client:
                        sent_up += len(data)
                        if self._cut_after is not None and sent_up >= self._cut_after:
                            self._cut_after = None
                            self.cuts += 1
                            return
                    if self.mode == "slow" and self.bytes_per_second:
                        time.sleep(len(data) / self.bytes_per_second)
                    dst.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                if (client, upstream) in self._pairs:
                    self._pairs.remove((client, upstream))
            self._close(client, upstream)
