"""Opening an SSH connection with deadlines: TCP, banner, key exchange, each bounded.

Only public paramiko options are set here (security options, timeouts, window sizes);
what needs paramiko's internals lives in `paramiko_compat`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import paramiko
import structlog
from paramiko.ssh_exception import IncompatiblePeer

from flad.remote.errors import HostKeyMismatch, TransportError, describe
from flad.remote.paramiko_compat import LegacyAwareTransport, incompatible
from flad.remote.proxy import open_through
from flad.sftp_settings import ProxySettings

log = structlog.get_logger("flad.remote")

# Flow control: a large window keeps the pipe full on a long round trip; 32 KiB SFTP
# answers (the size every server accepts) then fit in one SSH packet each.
WINDOW_SIZE = 2**27
MAX_PACKET_SIZE = 2**15 + 2**11
#: AES-GCM first when the server offers it: its tag replaces a separate HMAC pass over
#: every packet, which paramiko computes in Python (uploads took 20 % less CPU). Only
#: the ciphers this paramiko offers are named (AES-GCM came with paramiko 3.5).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

# Host-key algorithms paramiko may negotiate for each key type found in known_hosts.
HOST_KEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
}


#: What a connection or a session raises when the network or the server fails; anything
#: else is a bug or an incompatible paramiko, never retried as if the network were down.
CONNECTION_FAULTS = (OSError, EOFError, paramiko.SSHException)


def prefer_ciphers(options: paramiko.SecurityOptions) -> None:
    """AES-GCM first among the ciphers this paramiko offers (public options only)."""
    offered = tuple(options.ciphers)
    first = tuple(c for c in PREFERRED_CIPHERS if c in offered)
    options.ciphers = first + tuple(c for c in offered if c not in first)


def open_socket(host: str, port: int, timeout: float,
                proxy: ProxySettings | None = None) -> socket.socket:
    """A TCP connection to the server, straight or through the proxy; kept alive.

    Raises TransportError (PermanentTransportError when a proxy refuses its credentials).
    """
    if proxy is not None:
        sock = open_through(proxy, host, port, timeout)
    else:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise TransportError(f"cannot connect to {host}:{port}: {describe(exc)}") from exc
    sock.settimeout(timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def start_transport(
    host: str,
    port: int,
    timeout: float,
    *,
    host_key_types: list[str] | None = None,
    legacy_ssh_rsa: bool = False,
    proxy: ProxySettings | None = None,
) -> LegacyAwareTransport:
    """TCP connect (and the proxy leg), banner and key exchange, each within `timeout`.

    Raises TransportError.
    """
    where = f"{host}:{port}" + (f" (through {proxy.shown})" if proxy else "")
    sock = open_socket(host, port, timeout, proxy)
    try:
        transport = LegacyAwareTransport(
            sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
        )
    except CONNECTION_FAULTS as exc:
        sock.close()
        raise TransportError(f"cannot connect to {where}: {describe(exc)}") from exc
    except (AttributeError, TypeError) as exc:
        sock.close()
        raise incompatible(f"cannot start a transport ({type(exc).__name__}: {exc})") from exc
    prefer_ciphers(transport.get_security_options())
    if host_key_types:
        # Ask only for the key types known_hosts holds for this server, as OpenSSH does:
        # otherwise a server with several host keys may present one we do not know.
        allowed = {a for t in host_key_types for a in HOST_KEY_ALGORITHMS.get(t, (t,))}
        options = transport.get_security_options()
        options.key_types = [a for a in options.key_types if a in allowed]
    transport.legacy_ssh_rsa = legacy_ssh_rsa
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    transport.auth_timeout = timeout
    transport.channel_timeout = timeout
    done = threading.Event()
    try:
        transport.start_client(event=done)
        finished = done.wait(timeout)
    except CONNECTION_FAULTS as exc:
        transport.close()
        raise TransportError(f"SSH handshake with {where} failed: {describe(exc)}") from exc
    if not finished or not transport.is_active():
        error = transport.get_exception()
        transport.close()
        if isinstance(error, IncompatiblePeer) and host_key_types and ("host key" in str(error)):
            raise HostKeyMismatch(
                f"{where} offers none of the host key types known_hosts trusts for it "
                f"({', '.join(host_key_types)}): the server's key has changed"
            )
        reason = describe(error) if error is not None else f"no answer within {timeout:g}s"
        raise TransportError(f"SSH handshake with {where} failed: {reason}")
    return transport


def fetch_host_key(host: str, port: int, timeout: float = 15.0,
                   proxy: ProxySettings | None = None,
                   known_types: list[str] | None = None) -> paramiko.PKey:
    """Connect, read the server's host key, close. Authenticates nothing (`trust-host`).

    With `known_types` (the key types known_hosts already trusts for the server), only
    those are asked for, as a connection does: the key shown is the one flad would get.
    """
    transport = start_transport(host, port, timeout, proxy=proxy, host_key_types=known_types)
    try:
        return transport.get_remote_server_key()
    finally:
        transport.close()


class Deadlines:
    """One thread per channel that runs an action when an operation outlives its deadline.

    It replaces a `threading.Timer` per SFTP request: starting a thread for every
    request cost about a fifth of the worker's time on small files. Arming and
    disarming only move a number under a lock; the thread wakes when a deadline passes.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._deadline: float | None = None
        self._action: Callable[[], None] | None = None
        self._wake_at: float | None = None  # when the thread will look again; None: idle
        self._thread: threading.Thread | None = None
        self._stopping = False

    def arm(self, seconds: float, action: Callable[[], None]) -> None:
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._action = action
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._wake_at is None or self._deadline < self._wake_at:
                self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = self._action = None

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._deadline = self._action = None
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(1)

    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                if self._deadline is None:
                    self._wake_at = None
                    self._cond.wait()
                    continue
                now = time.monotonic()
                if now < self._deadline:
                    self._wake_at = self._deadline
                    self._cond.wait(self._deadline - now)
                    continue
                action, self._deadline, self._action = self._action, None, None
                if action is not None:
                    self._cond.release()
                    try:
                        action()
                    except Exception:  # closing a transport; never kill the thread
                        log.exception("deadline_action_failed")
                    finally:
                        self._cond.acquire()

