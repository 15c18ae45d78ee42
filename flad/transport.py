"""One SFTP session per channel: connect, put, verify, list, get, remove.

The platform is reached over SSH with public-key authentication. The server's host key
is checked against a known_hosts file only: an unknown key is refused (run
`flad trust-host`) and a changed key is refused loudly. Nothing is ever added to
known_hosts behind the operator's back.

Errors come in two kinds. `TransportError` is transient (refused, reset, timed out, EOF):
the caller reconnects (`ensure_connected`) and retries with backoff.
`PermanentTransportError` and its subclasses need a person (host key, credentials,
permissions): retrying blindly would only repeat them.

Every network operation is bounded in time: TCP connect, banner, key exchange,
authentication and SFTP start by `connect_timeout` (and the whole of `connect()` by a
watchdog), each SFTP request by `request_timeout`; the transport sends keepalives. An
operation that times out drops the connection, since a late answer would confuse the
SFTP session: the next operation raises until `ensure_connected()` reconnects.
Operations never reconnect silently.

Secrets (key passphrases, private keys) never appear in an exception text or a log line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import io
import os
import re
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import structlog
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from paramiko.pkey import UnknownKeyType
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_OPEN,
    CMD_STAT,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTPError,
)
from paramiko.sftp_attr import SFTPAttributes
from paramiko.ssh_exception import IncompatiblePeer

from flad import sftpwire

__all__ = [
    "AuthenticationFailed",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "PermanentTransportError",
    "PrivateKeyError",
    "RemoteNotFound",
    "RemotePermissionDenied",
    "SftpChannel",
    "SftpSettings",
    "TransportError",
    "add_known_host",
    "fetch_host_key",
    "fingerprint",
    "known_hosts_name",
    "load_private_key",
]

log = structlog.get_logger("flad.transport")

# Flow control: a large window keeps the pipe full on a long round trip; 32 KiB SFTP
# answers (the size every server accepts) then fit in one SSH packet each.
WINDOW_SIZE = 2**27
MAX_PACKET_SIZE = 2**15 + 2**11
PREFETCH_REQUESTS = 64  # outstanding read requests while downloading
CONNECT_PHASES = 4  # TCP+banner+kex, auth, channel, SFTP start: the watchdog's budget


class TransportError(Exception):
    """Transient: the connection failed or was lost; reconnect and retry with backoff."""


class PermanentTransportError(TransportError):
    """Needs a person (configuration, keys, permissions): do not retry blindly."""


class HostKeyUnknown(PermanentTransportError):
    """The server's host key is not in known_hosts."""


class HostKeyMismatch(PermanentTransportError):
    """The server presented a host key other than the one in known_hosts."""


class AuthenticationFailed(PermanentTransportError):
    """The server refused our user name and key."""


class RemotePermissionDenied(PermanentTransportError):
    """The server refused an SFTP operation on a path (permission denied)."""


class RemoteNotFound(PermanentTransportError):
    """A remote file or folder the operation needs does not exist."""


class PrivateKeyError(PermanentTransportError):
    """The private key file cannot be read, decrypted or used."""


@dataclass(frozen=True)
class SftpSettings:
    host: str
    port: int
    username: str
    private_key: Path
    passphrase: bytes | None = field(repr=False)
    known_hosts: Path
    # Sign with SHA-1 "ssh-rsa" for an RSA user key (the platform accepts only that),
    # unless the server's server-sig-algs leaves it out. Ignored for other key types.
    legacy_ssh_rsa: bool = False
    connect_timeout: float = 15.0
    request_timeout: float = 60.0
    keepalive_seconds: int = 15
    passphrase_source: str | None = None  # where the passphrase came from, for messages


# -- keys and known_hosts ---------------------------------------------------------------


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as `ssh-keygen -l` prints it: `SHA256:<base64, no padding>`."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH uses for a host in known_hosts: `host`, or `[host]:port`."""
    return host if port == 22 else f"[{host}]:{port}"


def _host_matches(name: str, patterns: str) -> bool:
    """OpenSSH host-pattern matching: hashed names, `*`/`?` wildcards, `!` negation."""
    matched = False
    for pattern in patterns.split(","):
        if pattern.startswith("|1|"):
            try:
                if paramiko.HostKeys.hash_host(name, pattern) == pattern:
                    matched = True
            except (binascii.Error, ValueError, AssertionError):
                continue
        elif pattern.startswith("!"):
            if _wildcard_match(name, pattern[1:]):
                return False
        elif _wildcard_match(name, pattern):
            matched = True
    return matched


def _wildcard_match(name: str, pattern: str) -> bool:
    """OpenSSH wildcards: only `*` and `?` are special (`[` of `[host]:port` is not)."""
    regex = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower()
    )
    return re.fullmatch(regex, name.lower()) is not None


@dataclass(frozen=True)
class _KnownKeys:
    trusted: list[paramiko.PKey]
    revoked: list[paramiko.PKey]


def _parse_key(key_type: str, key_b64: str) -> paramiko.PKey | None:
    try:
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64, validate=True))
    except (UnknownKeyType, paramiko.SSHException, ValueError, binascii.Error):
        return None


def _known_keys(known_hosts: Path, host: str, port: int) -> _KnownKeys:
    """The keys known_hosts trusts (and revokes) for `host:port`."""
    name = known_hosts_name(host, port)
    trusted: list[paramiko.PKey] = []
    revoked: list[paramiko.PKey] = []
    try:
        text = known_hosts.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return _KnownKeys(trusted, revoked)
    except OSError as exc:
        raise PermanentTransportError(
            f"cannot read known_hosts {known_hosts}: {exc.strerror or exc}"
        ) from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        if len(fields) < 3 or marker not in ("", "@revoked"):
            continue  # host certificates (@cert-authority) are not used here
        if not _host_matches(name, fields[0]):
            continue
        key = _parse_key(fields[1], fields[2])
        if key is None:
            log.warning(
                "known_hosts_line_skipped", file=str(known_hosts), line=lineno, key_type=fields[1]
            )
            continue
        (revoked if marker else trusted).append(key)
    return _KnownKeys(trusted, revoked)


def add_known_host(known_hosts: Path, host: str, port: int, key: paramiko.PKey) -> None:
    """Trust `key` for `host:port`: append `[host]:port type base64` to known_hosts.

    Creates the file (0644) and its folder. Does nothing when the same key is already
    trusted. Refuses (HostKeyMismatch) when known_hosts trusts another key of the same
    type for that host: the old line must be removed on purpose first.
    """
    known = _known_keys(known_hosts, host, port)
    name = known_hosts_name(host, port)
    for old in known.trusted:
        if old.asbytes() == key.asbytes():
            return
        if old.get_name() == key.get_name():
            raise HostKeyMismatch(
                f"known_hosts {known_hosts} already trusts another {old.get_name()} key for "
                f"{name} ({fingerprint(old)}); remove it first "
                f"(ssh-keygen -R '{name}' -f {known_hosts}) to trust {fingerprint(key)}"
            )
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with os.fdopen(fd, "ab") as f:
        needs_newline = f.tell() > 0 and not known_hosts.read_bytes().endswith(b"\n")
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        f.write((("\n" if needs_newline else "") + line).encode("ascii"))
        f.flush()
        os.fsync(f.fileno())
    log.info(
        "known_host_added",
        file=str(known_hosts),
        host=host,
        port=port,
        key_type=key.get_name(),
        fingerprint=fingerprint(key),
    )


def load_private_key(path: Path, passphrase: bytes | None,
                     passphrase_source: str | None = None) -> paramiko.PKey:
    """Load an Ed25519, ECDSA or RSA private key, OpenSSH or PEM (PKCS#1, SEC1, PKCS#8).

    Errors (PrivateKeyError) name the file and where a wrong passphrase came from
    (`passphrase_source`), never the passphrase nor key material.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PrivateKeyError(
            f"cannot read private key {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    loaded = None
    reason = "not a private key in OpenSSH or PEM format"
    for loader in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
        for password in (passphrase, None) if passphrase else (None,):
            try:
                loaded = loader(data, password)
                break
            except TypeError:
                # "not encrypted but a password was given" (then retry without) or
                # "encrypted but no password given".
                if passphrase is None:
                    reason = "the key is encrypted and no passphrase is configured"
            except ValueError:
                if password is not None:
                    source = f" (read from {passphrase_source})" if passphrase_source else ""
                    reason = f"wrong passphrase{source}, or a damaged key file"
            except Exception:  # the loaders raise many types; hide their text
                reason = "unreadable key file"
        if loaded is not None:
            break
    if loaded is None:
        raise PrivateKeyError(f"cannot load private key {path}: {reason}")

    if isinstance(loaded, rsa.RSAPrivateKey):
        return paramiko.RSAKey(key=loaded)
    if isinstance(loaded, ec.EllipticCurvePrivateKey):
        if loaded.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise PrivateKeyError(
                f"cannot use private key {path}: ECDSA curve {loaded.curve.name} is not "
                "supported by SSH (use nistp256, nistp384 or nistp521)"
            )
        return paramiko.ECDSAKey(vals=(loaded, loaded.public_key()))
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        # paramiko reads Ed25519 keys only from OpenSSH text: re-encode it in memory.
        text = loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode("ascii")
        return paramiko.Ed25519Key.from_private_key(io.StringIO(text))
    raise PrivateKeyError(
        f"cannot use private key {path}: {type(loaded).__name__.lstrip('_')} keys are not "
        "supported (use Ed25519, ECDSA or RSA)"
    )


class _LegacyRSAKey(paramiko.RSAKey):
    """An RSA key that can also sign with SHA-1 "ssh-rsa" (paramiko 4+ dropped it)."""

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        if algorithm != "ssh-rsa":
            return super().sign_ssh_data(data, algorithm)
        if not isinstance(self.key, rsa.RSAPrivateKey):
            raise paramiko.SSHException("an RSA private key is needed to sign")
        signature = self.key.sign(data, padding.PKCS1v15(), hashes.SHA1())
        msg = paramiko.Message()
        msg.add_string("ssh-rsa")
        msg.add_string(signature)
        return msg


_PARAMIKO_CIPHERS: tuple[str, ...] = paramiko.Transport._preferred_ciphers  # type: ignore[attr-defined]
_KNOWN_CIPHERS: dict[str, object] = paramiko.Transport._cipher_info  # type: ignore[attr-defined]


class _Transport(paramiko.Transport):
    """paramiko's Transport, able to sign with the legacy "ssh-rsa" user-key algorithm.

    With `legacy_ssh_rsa`, "ssh-rsa" comes first for RSA user keys: it is used whenever
    the server lists it in server-sig-algs, or lists nothing; a server that lists only
    SHA-2 algorithms still gets SHA-2. (OpenSSH lists every algorithm it knows there,
    including ones its PubkeyAcceptedAlgorithms refuses, so "prefer SHA-2 when listed"
    would fail against a server that accepts only ssh-rsa.)
    """

    legacy_ssh_rsa = False
    # AES-GCM first when the server offers it: its tag replaces a separate HMAC pass
    # over every packet, which paramiko computes (and compares) in Python. Uploads
    # took 20 % less CPU. A server without it gets paramiko's order (AES-CTR first).
    # (Only ciphers this paramiko knows: AES-GCM came with paramiko 3.5.)
    _preferred_ciphers = tuple(
        c for c in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if c in _KNOWN_CIPHERS
    ) + tuple(c for c in _PARAMIKO_CIPHERS if "gcm" not in c)

    @property
    def preferred_pubkeys(self) -> tuple[str, ...]:
        algorithms = tuple(super().preferred_pubkeys)
        if not self.legacy_ssh_rsa:
            return algorithms
        return ("ssh-rsa", *algorithms)


# Host-key algorithms paramiko may negotiate for each key type found in known_hosts.
_HOST_KEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
}


def _describe(exc: BaseException) -> str:
    """One line naming an exception: its text, else its type."""
    if isinstance(exc, socket.gaierror):
        text = f"cannot resolve host name ({exc.strerror})"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror.lower() if exc.errno else exc.strerror
    else:
        text = str(exc)
    if isinstance(exc, TimeoutError) and text in ("", "timed out"):
        text = "timed out"
    elif isinstance(exc, EOFError) and not text:
        text = "closed by the server (EOF)"
    text = " ".join(text.split()).rstrip(" :")  # paramiko: "Server connection dropped: "
    return text or type(exc).__name__


def _open_socket(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _start_transport(
    host: str,
    port: int,
    timeout: float,
    *,
    host_key_types: list[str] | None = None,
    legacy_ssh_rsa: bool = False,
) -> _Transport:
    """TCP connect, banner and key exchange, each within `timeout`. Raises TransportError."""
    where = f"{host}:{port}"
    try:
        sock = _open_socket(host, port, timeout)
    except OSError as exc:
        raise TransportError(f"cannot connect to {where}: {_describe(exc)}") from exc
    try:
        transport = _Transport(
            sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
        )
    except Exception as exc:
        sock.close()
        raise TransportError(f"cannot connect to {where}: {_describe(exc)}") from exc
    if host_key_types:
        # Ask only for the key types known_hosts holds for this server, as OpenSSH does:
        # otherwise a server with several host keys may present one we do not know.
        allowed = {a for t in host_key_types for a in _HOST_KEY_ALGORITHMS.get(t, (t,))}
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
    except Exception as exc:
        transport.close()
        raise TransportError(f"SSH handshake with {where} failed: {_describe(exc)}") from exc
    if not finished or not transport.is_active():
        error = transport.get_exception()
        transport.close()
        if isinstance(error, IncompatiblePeer) and host_key_types and ("host key" in str(error)):
            raise HostKeyMismatch(
                f"{where} offers none of the host key types known_hosts trusts for it "
                f"({', '.join(host_key_types)}): the server's key has changed"
            )
        reason = _describe(error) if error is not None else f"no answer within {timeout:g}s"
        raise TransportError(f"SSH handshake with {where} failed: {reason}")
    return transport


def fetch_host_key(host: str, port: int, timeout: float = 15.0) -> paramiko.PKey:
    """Connect, read the server's host key, close. Authenticates nothing (`trust-host`)."""
    transport = _start_transport(host, port, timeout)
    try:
        return transport.get_remote_server_key()
    finally:
        transport.close()


# -- the channel ------------------------------------------------------------------------


class _Deadlines:
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


# -- the channel ------------------------------------------------------------------------


class SftpChannel:
    """One SSH connection and one SFTP session to the platform, reused for many files.

    Not connected at first: call `connect()` (or use it as a context manager). After a
    TransportError, `ensure_connected()` opens a new connection. Thread-safe: operations
    are serialized.
    """

    def __init__(self, settings: SftpSettings, *, channel_name: str = "") -> None:
        self.settings = settings
        self.channel_name = channel_name
        self.connections_opened = 0
        self._where = f"{settings.host}:{settings.port}"
        self._transport: _Transport | None = None
        self._sftp: sftpwire.Client | None = None
        self._write_size = sftpwire.BASIC_WRITE_DATA  # data per SFTP write, set at connect
        self._key: paramiko.PKey | None = None
        self._connected_at = 0.0
        self._lock = threading.RLock()
        self._deadlines = _Deadlines(f"sftp-deadline-{channel_name}")
        self._log = log.bind(channel=channel_name, host=settings.host, port=settings.port)

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "not connected"
        return f"<SftpChannel {self.channel_name!r} {self.settings.username}@{self._where} {state}>"

    def __enter__(self) -> SftpChannel:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection ---------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        t, s = self._transport, self._sftp
        return t is not None and s is not None and t.is_active() and not s.sock.closed

    def connect(self) -> None:
        """Open the SSH connection and the SFTP session, unless they are open."""
        with self._lock:
            if self.is_connected:
                return
            self._drop("reconnecting")
            self._open()

    def ensure_connected(self) -> None:
        """Reconnect when the connection is dead (or was dropped after an error)."""
        self.connect()

    def close(self) -> None:
        with self._lock:
            self._drop("closed")
            self._deadlines.stop()

    def _private_key(self) -> paramiko.PKey:
        if self._key is None:
            key = load_private_key(self.settings.private_key, self.settings.passphrase,
                                   self.settings.passphrase_source)
            if self.settings.legacy_ssh_rsa and isinstance(key, paramiko.RSAKey):
                assert isinstance(key.key, rsa.RSAPrivateKey)
                key = _LegacyRSAKey(key=key.key)
            self._key = key
        return self._key

    def _open(self) -> None:
        s = self.settings
        key = self._private_key()
        known = _known_keys(s.known_hosts, s.host, s.port)
        started = time.monotonic()
        transport = _start_transport(
            s.host,
            s.port,
            s.connect_timeout,
            host_key_types=sorted({k.get_name() for k in known.trusted}),
            legacy_ssh_rsa=s.legacy_ssh_rsa,
        )
        # Anything below that could wait forever (paramiko's subsystem request has no
        # timeout of its own) is cut by closing the transport.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            transport.close()

        watchdog = threading.Timer(s.connect_timeout * CONNECT_PHASES, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            self._check_host_key(transport, known)
            self._authenticate(transport, key)
            channel = transport.open_session(
                window_size=WINDOW_SIZE,
                max_packet_size=MAX_PACKET_SIZE,
                timeout=s.connect_timeout,
            )
            channel.settimeout(s.connect_timeout)
            channel.invoke_subsystem("sftp")
            sftp = sftpwire.Client(channel)
            limits = sftpwire.server_limits(sftp)
            write_size = sftpwire.write_size(limits, int(channel.out_max_packet_size))
            channel.settimeout(s.request_timeout)
            transport.set_keepalive(s.keepalive_seconds)
        except PermanentTransportError:
            transport.close()
            raise
        except Exception as exc:
            transport.close()
            if expired.is_set():
                reason = f"no answer within {s.connect_timeout * CONNECT_PHASES:g}s"
            elif isinstance(exc, TransportError):
                raise
            else:
                reason = _describe(exc)
            raise TransportError(f"cannot open SFTP session on {self._where}: {reason}") from exc
        finally:
            watchdog.cancel()
        self._transport, self._sftp = transport, sftp
        self._write_size = write_size
        self.connections_opened += 1
        self._connected_at = time.monotonic()
        self._log.info(
            "ssh_connected",
            user=s.username,
            duration_ms=round((self._connected_at - started) * 1000),
            host_key=fingerprint(transport.get_remote_server_key()),
            write_size=write_size,
        )

    def _check_host_key(self, transport: paramiko.Transport, known: _KnownKeys) -> None:
        s = self.settings
        presented = transport.get_remote_server_key()
        shown = f"{presented.get_name()} {fingerprint(presented)}"
        name = known_hosts_name(s.host, s.port)
        if any(k.asbytes() == presented.asbytes() for k in known.revoked):
            self._log.error("ssh_host_key_revoked", presented=shown, known_hosts=str(s.known_hosts))
            raise HostKeyMismatch(
                f"host key of {name} is REVOKED in known_hosts {s.known_hosts}: {shown}"
            )
        if any(k.asbytes() == presented.asbytes() for k in known.trusted):
            return
        if not known.trusted:
            self._log.error("ssh_host_key_unknown", presented=shown, known_hosts=str(s.known_hosts))
            raise HostKeyUnknown(
                f"host key of {name} is not in known_hosts {s.known_hosts} (the server "
                f"presents {shown}): check this fingerprint with the platform, then run "
                f"`flad trust-host -c CONFIG {self.channel_name or 'CHANNEL'}`"
            )
        expected = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in known.trusted)
        self._log.error(
            "ssh_host_key_mismatch",
            expected=expected,
            presented=shown,
            known_hosts=str(s.known_hosts),
        )
        raise HostKeyMismatch(
            f"HOST KEY MISMATCH for {name}: known_hosts {s.known_hosts} expects {expected}, "
            f"the server presents {shown}. The connection may be intercepted, or the "
            "platform changed its key: confirm the new fingerprint with the platform before "
            "replacing the old line"
        )

    def _authenticate(self, transport: paramiko.Transport, key: paramiko.PKey) -> None:
        s = self.settings
        refused = (
            f"{self._where} refused user {s.username!r} with {key.get_name()} key "
            f"{fingerprint(key)} from {s.private_key}"
        )
        try:
            remaining = transport.auth_publickey(s.username, key)
        except paramiko.BadAuthenticationType as exc:
            raise AuthenticationFailed(
                f"{refused}: the server accepts only {', '.join(exc.allowed_types) or 'nothing'}"
            ) from None
        except paramiko.AuthenticationException as exc:
            text = str(exc)
            if not transport.is_active() or "timeout" in text.lower():
                raise TransportError(
                    f"connection to {self._where} lost during authentication: {_describe(exc)}"
                ) from exc
            if s.legacy_ssh_rsa is False and isinstance(key, paramiko.RSAKey):
                refused += " (if the server accepts only ssh-rsa signatures, set legacy_ssh_rsa)"
            self._log.error("ssh_auth_failed", user=s.username, key=fingerprint(key))
            raise AuthenticationFailed(f"{refused}: {_describe(exc)}") from None
        if remaining or not transport.is_authenticated():
            raise AuthenticationFailed(
                f"{refused}: the server asks for more ({', '.join(remaining)})"
            )

    def _drop(self, reason: str) -> None:
        """Close the connection (if any) without raising."""
        sftp, transport = self._sftp, self._transport
        self._sftp = self._transport = None
        if transport is None:
            return
        for closing in (sftp, transport):
            with contextlib.suppress(Exception):  # closing a broken connection
                if closing is not None:
                    closing.close()
        self._log.info(
            "ssh_disconnected",
            reason=reason,
            connected_s=round(time.monotonic() - self._connected_at, 1),
        )

    def _client(self) -> sftpwire.Client:
        if self._sftp is None:
            raise TransportError(f"not connected to {self._where}: call connect() first")
        if not self.is_connected:
            error = self._transport.get_exception() if self._transport else None
            reason = _describe(error) if error is not None else "closed by the server"
            self._drop(f"lost: {reason}")
            raise TransportError(f"connection to {self._where} lost: {reason}")
        return self._sftp

    @contextmanager
    def _remote(self, op: str, path: str) -> Iterator[None]:
        """Map what paramiko raises during one SFTP operation to our errors.

        Each request waits at most `request_timeout` for an answer (the channel's
        timeout). As a backstop, a watchdog closes the connection if the block runs for
        twice that: paramiko can also block in a socket write that no timeout covers.
        """
        transport = self._transport
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            if transport is not None:
                transport.close()

        self._deadlines.arm(self.settings.request_timeout * 2, expire)
        try:
            yield
        except TransportError:
            raise
        except Exception as exc:
            if not (isinstance(exc, TimeoutError) or expired.is_set()):
                mapped = self._map_error(op, path, exc)
                if mapped is exc:
                    raise
                # Our own text says it all; paramiko's chained one may repeat a path.
                raise mapped from (None if isinstance(mapped, PermanentTransportError) else exc)
            self._drop(f"{op} timed out")
            raise TransportError(
                f"connection to {self._where} lost: {op} {path} got no answer within "
                f"{self.settings.request_timeout:g}s"
            ) from exc
        finally:
            self._deadlines.disarm()

    def _map_error(self, op: str, path: str, exc: Exception) -> Exception:
        """The error to raise for what paramiko raised (the connection is dropped if dead)."""
        lost = isinstance(exc, EOFError | paramiko.SSHException | SFTPError | ConnectionError)
        if lost or (isinstance(exc, OSError) and not self.is_connected):
            self._drop(f"{op} failed: {_describe(exc)}")
            return TransportError(f"connection to {self._where} lost: {_describe(exc)}")
        if not isinstance(exc, OSError):
            return exc  # a bug, not a transport condition: let it through unchanged
        if exc.errno in (errno.EACCES, errno.EPERM):
            return RemotePermissionDenied(f"{op} {path} on {self._where}: permission denied")
        if exc.errno == errno.ENOENT:
            return RemoteNotFound(f"{op} {path} on {self._where}: no such file or folder")
        # Another SFTP status ("Failure": disk full, ...): the connection stays up.
        return TransportError(f"{op} {path} on {self._where} failed: {_describe(exc)}")

    # -- operations ---------------------------------------------------------------------

    def put_file(self, local: Path, remote: str) -> int:
        """Upload a local file to `remote`, check the remote size; return the size."""
        return self.put_files([(local, remote)])[0]

    def put_bytes(self, data: bytes, remote: str) -> int:
        """Upload bytes (an FS signature, an empty GO) to `remote`; return the size."""
        return self.put_files([(data, remote)])[0]

    def put_files(self, items: Sequence[tuple[sftpwire.PutSource, str]]) -> list[int]:
        """Upload several files (local paths or bytes) together; return their sizes.

        Each is written whole and (unless empty: a GO may be taken by the platform as
        soon as it is closed) its remote size checked before this returns; together
        they cost two round trips instead of two each: every file is opened at once,
        then written, then closed and checked at once. Nothing is
        promised about the order in which the server sees them complete: upload the
        files that must come last (a GO) in a later call.
        """
        if not items:
            return []
        with self._lock:
            sftp = self._client()
            started = time.monotonic()
            names = ", ".join(remote for _, remote in items)
            handles: list[bytes] = []
            closed = False
            with sftpwire.Replies(sftp) as replies:
                try:
                    with self._remote("put", names):
                        opens = [
                            replies.send(CMD_OPEN, replies.path(remote),
                                         SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC,
                                         SFTPAttributes())
                            for _, remote in items
                        ]
                        failure: BaseException | None = None
                        for num, (_, remote) in zip(opens, items, strict=True):
                            try:
                                handles.append(replies.wait_handle(num))
                            except OSError as exc:  # keep reading: the other opens answer too
                                if isinstance(exc, TimeoutError) or not self.is_connected:
                                    raise
                                failure = failure or self._map_error("put", remote, exc)
                        if failure is not None:
                            raise failure
                    writes: list[tuple[str, deque[int]]] = []
                    sizes = []
                    for handle, (source, remote) in zip(handles, items, strict=True):
                        in_flight: deque[int] = deque()
                        writes.append((remote, in_flight))
                        sizes.append(self._write(replies, handle, source, remote, in_flight))
                    with self._remote("put", names):
                        # close and stat go out behind the last writes: the server answers in
                        # order, so this costs one round trip for all of them
                        closes = [replies.send(CMD_CLOSE, handle) for handle in handles]
                        # An empty file (a GO) is whole once closed, and the platform may
                        # take a GO at once: a stat could find it gone. Others are checked.
                        stats = {i: replies.send(CMD_STAT, replies.path(items[i][1]))
                                 for i, written in enumerate(sizes) if written}
                        for remote, in_flight in writes:
                            while in_flight:
                                self._checked(replies, in_flight.popleft(), remote)
                        for num, (_, remote) in zip(closes, items, strict=True):
                            self._checked(replies, num, remote)
                        closed = True
                        remote_sizes = self._remote_sizes(replies, stats, items)
                finally:
                    if handles and not closed:
                        with contextlib.suppress(Exception):  # the first error is the one to raise
                            for handle in handles:
                                replies.send(CMD_CLOSE, handle)
                            replies.flush()
            for i, held in remote_sizes.items():
                if held != sizes[i]:
                    raise TransportError(
                        f"put {items[i][1]} on {self._where}: the server holds {held} bytes, "
                        f"{sizes[i]} were sent"
                    )
            duration_ms = round((time.monotonic() - started) * 1000)
            if len(items) == 1:
                self._log.info("sftp_put", remote=items[0][1], bytes=sizes[0],
                               duration_ms=duration_ms)
            else:  # one line for the batch: the files are named in the pipeline's lines
                self._log.info("sftp_put", files=len(items), first=items[0][1],
                               last=items[-1][1], bytes=sum(sizes), duration_ms=duration_ms)
            return sizes

    def _remote_sizes(self, replies: sftpwire.Replies, stats: dict[int, int],
                      items: Sequence[tuple[sftpwire.PutSource, str]]) -> dict[int, int]:
        """The sizes the server gives for the files just written (every answer read).

        A server that refuses the stat (but took the write) gets a reason that says so:
        "permission denied" alone sent operators looking at the folder's rights.
        """
        sizes: dict[int, int] = {}
        failure: Exception | None = None
        for i, num in stats.items():
            remote = items[i][1]
            try:
                sizes[i] = replies.wait_size(num)
            except OSError as exc:
                if isinstance(exc, TimeoutError) or not self.is_connected:
                    raise
                mapped = self._map_error("put", remote, exc)
                if isinstance(mapped, RemotePermissionDenied | RemoteNotFound):
                    mapped = type(mapped)(
                        f"put {remote} on {self._where}: written and closed, but the server "
                        f"would not give its size ({_describe(exc)}), so flad cannot check "
                        "that it arrived whole")
                failure = failure or mapped
        if failure is not None:
            raise failure
        return sizes

    def _checked(self, replies: sftpwire.Replies, num: int, remote: str) -> None:
        """Wait for the status of request `num`; an error status raises our error."""
        try:
            replies.wait(num)
        except OSError as exc:
            if isinstance(exc, TimeoutError) or not self.is_connected:
                raise  # `_remote` drops the connection and says so
            raise self._map_error("put", remote, exc) from None

    def _write(self, replies: sftpwire.Replies, handle: bytes, source: sftpwire.PutSource,
               remote: str, in_flight: deque[int]) -> int:
        """Send the content as pipelined writes; return its size.

        The numbers of the writes not yet acknowledged are left in `in_flight`, for the
        caller to check after it has sent the close.
        """
        step = self._write_size
        most = sftpwire.writes_in_flight(step)
        written = 0
        for view in sftpwire.chunks(source):
            with self._remote("put", remote):
                for offset in range(0, len(view), step):
                    piece = view[offset:offset + step]
                    in_flight.append(replies.send_write(handle, written, piece))
                    written += len(piece)
                    while len(in_flight) > most:
                        self._checked(replies, in_flight.popleft(), remote)
        return written

    def size(self, remote: str) -> int | None:
        """The size of a remote file, or None when it does not exist."""
        with self._lock:
            sftp = self._client()
            try:
                with self._remote("stat", remote):
                    attrs = sftp.stat(remote)
            except RemoteNotFound:
                return None
            return int(attrs.st_size or 0)

    def listdir(self, remote_dir: str) -> list[tuple[str, int]]:
        """(name, size) of the files (not folders) in a remote folder, sorted by name."""
        with self._lock:
            sftp = self._client()
            with self._remote("list", remote_dir):
                entries = sftp.listdir_attr(remote_dir)
            return sorted(
                (e.filename, int(e.st_size or 0))
                for e in entries
                if e.st_mode is None or not stat.S_ISDIR(e.st_mode)
            )

    def list_remote_folders(self) -> list[str]:
        """Names of the folders at the remote root (IN, OUT, INTEST, OUTTEST, ...)."""
        with self._lock:
            sftp = self._client()
            with self._remote("list", "."):
                entries = sftp.listdir_attr(".")
            return sorted(
                e.filename for e in entries if e.st_mode is None or stat.S_ISDIR(e.st_mode)
            )

    def get_file(self, remote: str, local: Path) -> int:
        """Download `remote` into `local` (replaced), fsync it, check the size."""
        with self._lock:
            sftp = self._client()
            started = time.monotonic()
            with self._remote("get", remote):
                handle = sftp.open(remote, "rb", bufsize=0)
            received = 0
            try:
                with self._remote("get", remote):
                    expected = int(handle.stat().st_size or 0)
                    handle.prefetch(expected, max_concurrent_requests=PREFETCH_REQUESTS)
                with local.open("wb") as dst:
                    while True:
                        with self._remote("get", remote):
                            chunk = handle.read(sftpwire.LOCAL_CHUNK)
                        if not chunk:
                            break
                        dst.write(chunk)  # a local write error is not remote
                        received += len(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
            finally:
                with contextlib.suppress(Exception):  # the first error is the one to raise
                    handle.close()
            if received != expected:
                raise TransportError(
                    f"get {remote} from {self._where}: received {received} bytes, "
                    f"the server announced {expected}"
                )
            self._log.info(
                "sftp_get",
                remote=remote,
                bytes=received,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
            return received

    def remove(self, remote: str) -> None:
        """Remove a remote file; a file already absent is not an error."""
        with self._lock:
            sftp = self._client()
            try:
                with self._remote("remove", remote):
                    sftp.remove(remote)
            except RemoteNotFound:
                return
            self._log.info("sftp_removed", remote=remote)
