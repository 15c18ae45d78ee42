"""The running service's control socket: `flad replies` and `flad resend` beside it.

Only one process may write a state folder (see `flad.statelock`), yet an admin beside
the service still wants to fetch replies now or put a file back in line. Such a
command asks the service instead of working itself: it connects to
`<state_dir>/control.sock`, sends one JSON line and prints the one JSON line that
comes back. The service runs the request on the channel's own worker, between its
batches, so there is still only one writer.

The socket is created under umask 0077 and chmod 0600 in the owner-only state folder;
on top of that both ends check the other's credentials (SO_PEERCRED): only the
service's own user (or root) is served, and a client only trusts an answer from its
own user, root, or the owner of the state folder (root asking a service that runs as
`flad`). A socket file left by a service that died is removed by the next
service (which holds the state lock, so no live service can own it); a client that
finds the lock free never uses the socket at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOCKET_NAME = "control.sock"
#: A request is one short JSON line; anything longer is refused unread.
MAX_REQUEST = 4096
#: An answer is a few lines per channel; a larger one is not from flad.
MAX_ANSWER = 1024 * 1024
#: How long a client may take to send its request line.
REQUEST_SECONDS = 10.0
#: Requests served at once; more are answered "busy" at once.
MAX_CLIENTS = 8
#: How long a command waits for the service's answer by default (a reply poll over a
#: large backlog takes a while).
ANSWER_SECONDS = 900.0


@dataclass
class Answer:
    """What the command prints (`out` to stdout, `err` to stderr) and its exit code."""

    code: int
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps({"code": self.code, "out": self.out, "err": self.err}).encode()


class ControlUnavailable(Exception):
    """No service answers on the socket (none runs, or the lock holder takes no requests)."""


Handler = Callable[[dict[str, Any]], Answer]


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def _peer_uid(sock: socket.socket) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def _trusted(uid: int) -> bool:
    return uid in (os.getuid(), 0)


def _owner(folder: Path) -> int | None:
    """The owner of the state folder: the service's user, whom root may ask too."""
    try:
        return os.stat(folder).st_uid
    except OSError:
        return None


def _read_line(sock: socket.socket, limit: int) -> bytes | None:
    """One line of at most `limit` bytes, without its newline; None if longer or cut."""
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > limit + 1:
            return None
    line = data.split(b"\n", 1)[0]
    return line if len(line) <= limit else None


def ask(state_dir: Path, request: dict[str, Any], *,
        timeout: float = ANSWER_SECONDS) -> Answer:
    """Send `request` to the running service and return its answer.

    `ControlUnavailable` when nothing (trustworthy) listens; `TimeoutError` when the
    service took longer than `timeout`.
    """
    path = socket_path(state_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(min(timeout, REQUEST_SECONDS))
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlUnavailable(f"no service answers on {path}") from exc
        uid = _peer_uid(sock)
        if not (_trusted(uid) or uid == _owner(state_dir)):
            raise ControlUnavailable(f"{path} is served by user id {uid}, not by flad's "
                                     "own user: not asking it")
        sock.sendall(json.dumps(request).encode() + b"\n")
        sock.settimeout(timeout)
        line = _read_line(sock, MAX_ANSWER)
    except TimeoutError:
        raise
    except OSError as exc:
        raise ControlUnavailable(f"the service on {path} did not answer: {exc}") from exc
    finally:
        sock.close()
    if line is None:
        raise ControlUnavailable(f"the service on {path} closed the connection without "
                                 "an answer (it may be stopping)")
    try:
        data = json.loads(line)
        return Answer(int(data["code"]), [str(x) for x in data["out"]],
                      [str(x) for x in data["err"]])
    except (ValueError, KeyError, TypeError) as exc:
        raise ControlUnavailable(f"the answer on {path} is not flad's") from exc


class ControlServer:
    """The service's end: a thread that accepts, and one short thread per request."""

    def __init__(self, state_dir: Path, handle: Handler, log: Any) -> None:
        self.path = socket_path(state_dir)
        self._handle = handle
        self._log = log
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the socket (removing one a dead service left) and start accepting.

        Called only by the holder of the state lock: a socket file found here belongs
        to no live service.
        """
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            sock.bind(str(self.path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        st = os.lstat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        sock.listen(MAX_CLIENTS)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="control",
                                        daemon=True)
        self._thread.start()
        self._log.info("control_socket_ready", path=str(self.path))

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise OSError(f"{self.path} is a folder; remove it so that flad can make its "
                          "control socket there")
        os.unlink(self.path)
        self._log.info("control_socket_stale_removed", path=str(self.path))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with contextlib.suppress(OSError):  # only our own socket, not a successor's
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                self._log.exception("control_accept_failed")
                self._stop.wait(0.5)
                continue
            if not self._slots.acquire(blocking=False):
                with contextlib.suppress(OSError):
                    conn.sendall(Answer(1, err=["the service is busy with other requests; "
                                                "try again in a moment"]).to_json() + b"\n")
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="control-request",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                answer = self._answer(conn)
                if answer is not None:
                    conn.settimeout(REQUEST_SECONDS)
                    conn.sendall(answer.to_json() + b"\n")
        except OSError as exc:  # the client went away: its loss, not the service's
            self._log.warning("control_client_gone", error=str(exc))
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket) -> Answer | None:
        uid = _peer_uid(conn)
        if not _trusted(uid):
            self._log.warning("control_refused", uid=uid,
                              reason="only flad's own user or root may ask the service")
            return None
        conn.settimeout(REQUEST_SECONDS)
        line = _read_line(conn, MAX_REQUEST)
        try:
            request = json.loads(line) if line is not None else None
        except ValueError:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return Answer(2, err=["not a request flad understands (one JSON object with a "
                                  "`command`, on one line)"])
        self._log.info("control_request", command=request["command"], uid=uid)
        try:
            return self._handle(request)
        except Exception as exc:  # one request must never stop the service
            self._log.exception("control_request_failed", command=request["command"])
            return Answer(1, err=[f"the service could not do it: {type(exc).__name__}: "
                                  f"{exc}"])
