"""`/metrics`, `/healthz` and `/readyz` on one small HTTP server of flad's own.

prometheus_client renders the exposition (the OpenMetrics format when the scraper
asks for it, the Prometheus text format otherwise); the server around it is a
`ThreadingHTTPServer` on a thread of its own so that the three paths live together,
answer only GET and HEAD, and never let a slow or hostile client hold the service:
each connection has a timeout and the answers are small.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from flad import logs
from flad.listen_address import ListenAddress

#: A client that sends nothing for this long is dropped.
CLIENT_TIMEOUT_SECONDS = 10.0
#: A whole request and its answer, at most: the timeout above is per read, so a client
#: sending a byte now and then would otherwise hold its slot for ever.
REQUEST_DEADLINE_SECONDS = 15.0
#: Clients served at once: the outbox's other users may reach a loopback port too,
#: and a thread per idle connection must not grow without end.
MAX_CLIENTS = 16

#: `readiness()` returns the reasons the service is not ready; empty when it is.
Readiness = Callable[[], list[str]]


class MetricsUnavailable(Exception):
    """The address cannot be listened on; the message names it and what to do."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    readiness: Readiness

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per client, up to MAX_CLIENTS at once; beyond, closed at once."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        deadline = threading.Timer(REQUEST_DEADLINE_SECONDS, _cut, args=(request,))
        deadline.daemon = True
        deadline.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            self._slots.release()


def _cut(request: socket.socket) -> None:
    """End a connection past its deadline: its handler's next read or write fails."""
    with contextlib.suppress(OSError):  # already closed
        request.shutdown(socket.SHUT_RDWR)



class _Server6(_Server):
    address_family = socket.AF_INET6


def _server(address: ListenAddress) -> _Server:
    kind = _Server6 if ":" in address.host else _Server
    return kind((address.host, address.port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT_SECONDS
    server_version = "flad"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                body = encoder(self.server.registry)
            except Exception as exc:  # a journal that cannot be read: say it, stay up
                logs.get("flad.metrics").exception("metrics_failed")
                self._answer(500, f"metrics unavailable: {type(exc).__name__}: {exc}\n")
                return
            self._answer(200, body, content_type)
        elif path == "/healthz":
            self._answer(200, "ok\n")
        elif path == "/readyz":
            try:
                reasons = self.server.readiness()
            except Exception as exc:
                reasons = [f"readiness unknown: {type(exc).__name__}: {exc}"]
            if reasons:
                self._answer(503, "not ready: " + "; ".join(reasons) + "\n")
            else:
                self._answer(200, "ready\n")
        else:
            self._answer(404, "not found: flad serves /metrics, /healthz and /readyz\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _answer(self, code: int, body: str | bytes,
                content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is no news; failures are logged where they happen


class MetricsServer:
    """The endpoint, started on its own thread; `close` stops it and frees the port."""

    def __init__(self, address: ListenAddress, registry: CollectorRegistry,
                 readiness: Readiness) -> None:
        self.address = address
        try:
            self._server = _server(address)
        except OSError as exc:
            raise MetricsUnavailable(
                f"cannot listen on {address.shown()} for the metrics: "
                f"{exc.strerror or exc}; choose another [daemon] metrics_listen, or stop "
                "what listens there") from None
        self._server.registry = registry
        self._server.readiness = readiness
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.5}, name="metrics",
                                        daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when configured as 0)."""
        return int(self._server.server_address[1])

    def shown(self) -> str:
        return ListenAddress(self.address.host, self.port).shown()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


def bind_problem(address: ListenAddress) -> str | None:
    """Whether the address could be listened on now (for `flad check`): None, or why not."""
    try:
        server = _server(address)
    except OSError as exc:
        return f"{exc.strerror or exc}"
    server.server_close()
    return None
