"""Real proxies on 127.0.0.1 for the tests: tinyproxy (HTTP CONNECT), microsocks (SOCKS5),
and a proxy that accepts and never answers.

Each is started on a free port with its own configuration and stopped after the test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} does not listen on {port}")


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed (.ci/run installs it: apt-get install "
                    f"{program})", pytrace=False)
    return path


class Proxy:
    url: str
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class TinyProxy(Proxy):
    """HTTP CONNECT through Debian's tinyproxy, allowed to reach `connect_port` only."""

    def __init__(self, folder: Path, connect_port: int,
                 basic_auth: tuple[str, str] | None = None) -> None:
        port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "tinyproxy.conf"
        auth = f"BasicAuth {basic_auth[0]} {basic_auth[1]}\n" if basic_auth else ""
        conf.write_text(
            f"Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\n"
            f"ConnectPort {connect_port}\nLogLevel Info\n{auth}"
            f"LogFile \"{folder / 'tinyproxy.log'}\"\nMaxClients 20\n")
        self.process = subprocess.Popen([need("tinyproxy"), "-d", "-c", str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        _wait_listening(port, self.process, "tinyproxy")


class MicroSocks(Proxy):
    """SOCKS5 through microsocks, with a user and password when given."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        port = free_port()
        argv = [need("microsocks"), "-i", "127.0.0.1", "-p", str(port)]
        if user is not None and password is not None:
            argv += ["-u", user, "-P", password]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.port = port
        self.url = f"socks5://127.0.0.1:{port}"
        _wait_listening(port, self.process, "microsocks")


class StallingProxy(Proxy):
    """Accepts connections, reads what comes, never answers: a proxy that hangs."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self._held.append(conn)  # read nothing back, answer nothing

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(2)
        self._listener.close()
        for conn in self._held:
            conn.close()
