"""`SftpChannel`: the `Remote` flad uses, one SFTP session per channel.

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

import contextlib
import errno
import os
import shlex
import stat
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import paramiko
import structlog
from cryptography.hazmat.primitives.asymmetric import rsa
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_REMOVE,
    CMD_STAT,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTPError,
)
from paramiko.sftp_attr import SFTPAttributes

from flad.remote import wire
from flad.remote.connect import (
    CONNECTION_FAULTS,
    MAX_PACKET_SIZE,
    WINDOW_SIZE,
    Deadlines,
    start_transport,
)
from flad.remote.errors import (
    AuthenticationFailed,
    HostKeyMismatch,
    HostKeyUnknown,
    PermanentTransportError,
    RemoteNotFound,
    RemotePermissionDenied,
    TransportError,
    describe,
)
from flad.remote.keys import LegacyRSAKey, load_private_key
from flad.remote.knownhosts import KnownKeys, fingerprint, known_hosts_name, known_keys
from flad.remote.paramiko_compat import (
    Client,
    LegacyAwareTransport,
    Replies,
    incompatible,
    server_limits,
)
from flad.remote.protocol import Downloaded
from flad.sftp_settings import SftpSettings

log = structlog.get_logger("flad.remote")

PREFETCH_REQUESTS = 64  # outstanding read requests while downloading
CONNECT_PHASES = 4  # TCP+banner+kex, auth, channel, SFTP start: the watchdog's budget


#: READDIRs in flight per folder: OpenSSH answers each with up to 100 names, so a
#: folder of 800 replies is read in one round trip.
READDIRS_AHEAD = 8


class SftpChannel:
    """One SSH connection and one SFTP session to the platform, reused for many files.

    Not connected at first: call `connect()` (or use it as a context manager). After a
    TransportError, `ensure_connected()` opens a new connection. Thread-safe: operations
    are serialized.
    """

    def __init__(self, settings: SftpSettings, *, channel_name: str = "",
                 config_path: Path | None = None) -> None:
        self.settings = settings
        self.channel_name = channel_name
        #: the configuration the settings came from, named in hints (`flad trust-host -c`)
        self.config_path = config_path
        self.connections_opened = 0
        self._where = f"{settings.host}:{settings.port}"
        self._transport: LegacyAwareTransport | None = None
        self._sftp: Client | None = None
        self._write_size = wire.BASIC_WRITE_DATA  # data per SFTP write, set at connect
        self._key: paramiko.PKey | None = None
        self._connected_at = 0.0
        self._lock = threading.RLock()
        self._deadlines = Deadlines(f"sftp-deadline-{channel_name}")
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
                key = LegacyRSAKey(key=key.key)
            self._key = key
        return self._key

    def _open(self) -> None:
        s = self.settings
        key = self._private_key()
        known = known_keys(s.known_hosts, s.host, s.port)
        started = time.monotonic()
        transport = start_transport(
            s.host,
            s.port,
            s.connect_timeout,
            host_key_types=sorted({k.get_name() for k in known.trusted}),
            legacy_ssh_rsa=s.legacy_ssh_rsa,
            proxy=s.proxy,
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
            sftp = Client(channel)
            limits = server_limits(sftp)
            write_size = wire.write_size(limits, int(channel.out_max_packet_size))
            channel.settimeout(s.request_timeout)
            transport.set_keepalive(s.keepalive_seconds)
        except TransportError:  # permanent ones too: they say what a person must do
            transport.close()
            raise
        except Exception as exc:
            transport.close()
            if expired.is_set():
                reason = f"no answer within {s.connect_timeout * CONNECT_PHASES:g}s"
            elif isinstance(exc, (*CONNECTION_FAULTS, SFTPError)):
                reason = describe(exc)
            elif isinstance(exc, AttributeError | TypeError):
                raise incompatible(f"failed opening the SFTP session ({type(exc).__name__}: "
                                   f"{exc})") from exc
            else:
                raise  # a bug, not the network: never retried as a transient error
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

    def _check_host_key(self, transport: paramiko.Transport, known: KnownKeys) -> None:
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
            config = shlex.quote(str(self.config_path)) if self.config_path else "CONFIG"
            self._log.error("ssh_host_key_unknown", presented=shown, known_hosts=str(s.known_hosts))
            raise HostKeyUnknown(
                f"host key of {name} is not in known_hosts {s.known_hosts} (the server "
                f"presents {shown}): check this fingerprint with the platform, then run "
                f"`flad trust-host -c {config} {self.channel_name or 'CHANNEL'}`"
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
                    f"connection to {self._where} lost during authentication: {describe(exc)}"
                ) from exc
            if s.legacy_ssh_rsa is False and isinstance(key, paramiko.RSAKey):
                refused += " (if the server accepts only ssh-rsa signatures, set legacy_ssh_rsa)"
            self._log.error("ssh_auth_failed", user=s.username, key=fingerprint(key))
            raise AuthenticationFailed(f"{refused}: {describe(exc)}") from None
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

    def _client(self) -> Client:
        if self._sftp is None:
            raise TransportError(f"not connected to {self._where}: call connect() first")
        if not self.is_connected:
            error = self._transport.get_exception() if self._transport else None
            reason = describe(error) if error is not None else "closed by the server"
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
            self._drop(f"{op} failed: {describe(exc)}")
            return TransportError(f"connection to {self._where} lost: {describe(exc)}")
        if not isinstance(exc, OSError):
            return exc  # a bug, not a transport condition: let it through unchanged
        if exc.errno in (errno.EACCES, errno.EPERM):
            return RemotePermissionDenied(f"{op} {path} on {self._where}: permission denied")
        if exc.errno == errno.ENOENT:
            return RemoteNotFound(f"{op} {path} on {self._where}: no such file or folder")
        # Another SFTP status ("Failure": disk full, ...): the connection stays up.
        return TransportError(f"{op} {path} on {self._where} failed: {describe(exc)}")

    # -- operations ---------------------------------------------------------------------

    def put_file(self, local: Path, remote: str) -> int:
        """Upload a local file to `remote`, check the remote size; return the size."""
        return self.put_files([(local, remote)])[0]

    def put_bytes(self, data: bytes, remote: str) -> int:
        """Upload bytes (an FS signature, an empty GO) to `remote`; return the size."""
        return self.put_files([(data, remote)])[0]

    def put_files(self, items: Sequence[tuple[wire.PutSource, str]]) -> list[int]:
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
            with Replies(sftp) as replies:
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
                        _close_quietly(replies, handles)
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

    def _remote_sizes(self, replies: Replies, stats: dict[int, int],
                      items: Sequence[tuple[wire.PutSource, str]]) -> dict[int, int]:
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
                        f"would not give its size ({describe(exc)}), so flad cannot check "
                        "that it arrived whole")
                failure = failure or mapped
        if failure is not None:
            raise failure
        return sizes

    def _checked(self, replies: Replies, num: int, remote: str) -> None:
        """Wait for the status of request `num`; an error status raises our error."""
        try:
            replies.wait(num)
        except OSError as exc:
            if isinstance(exc, TimeoutError) or not self.is_connected:
                raise  # `_remote` drops the connection and says so
            raise self._map_error("put", remote, exc) from None

    def _write(self, replies: Replies, handle: bytes, source: wire.PutSource,
               remote: str, in_flight: deque[int]) -> int:
        """Send the content as pipelined writes; return its size.

        The numbers of the writes not yet acknowledged are left in `in_flight`, for the
        caller to check after it has sent the close.
        """
        step = self._write_size
        most = wire.writes_in_flight(step)
        written = 0
        for view in wire.chunks(source):
            with self._remote("put", remote):
                for offset in range(0, len(view), step):
                    piece = view[offset:offset + step]
                    in_flight.append(replies.send_write(handle, written, piece))
                    written += len(piece)
                    while len(in_flight) > most:
                        self._checked(replies, in_flight.popleft(), remote)
        return written

    def get_files(self, items: Sequence[tuple[str, int, Path]], *, sync: bool = True
                  ) -> list[Downloaded | PermanentTransportError | TransportError]:
        """Download many files together: (remote, expected size, local path) each.

        Opens, reads and closes of many files are in flight at once (bounded in open
        files, bytes and requests), so a batch of small replies costs a few round trips
        instead of several per file. Each local file is written whole and synced
        (without `sync`, the caller makes them durable: one syncfs for them all). Per
        item the result is its size and SHA-256 (hashed as it streams to disk: a reply
        is never held whole in memory), or the error that concerns it alone (not found,
        permission, a size other than the one listed), so one bad file never fails the
        others; a lost connection raises.
        """
        results: list[Downloaded | PermanentTransportError | TransportError] = []
        for start in range(0, len(items), wire.MAX_OPEN_FILES):
            results += self._get_window(items[start:start + wire.MAX_OPEN_FILES], sync)
        return results

    def _get_window(self, items: Sequence[tuple[str, int, Path]], sync: bool
                    ) -> list[Downloaded | PermanentTransportError | TransportError]:
        results: list[Downloaded | PermanentTransportError | TransportError] = [
            Downloaded(0, "") for _ in items]
        hashes = {i: wire.InOrderHash() for i in range(len(items))}
        with self._lock:
            sftp = self._client()
            started = time.monotonic()
            names = ", ".join(remote for remote, _, _ in items)
            handles: dict[int, bytes] = {}
            fds: dict[int, int] = {}
            with Replies(sftp) as replies:
                try:
                    with self._remote("get", names):
                        opens = [replies.send(CMD_OPEN, replies.path(remote), SFTP_FLAG_READ,
                                              SFTPAttributes())
                                 for remote, _, _ in items]
                        for i, num in enumerate(opens):
                            try:
                                handles[i] = replies.wait_handle(num)
                            except OSError as exc:  # this file only; the others go on
                                if isinstance(exc, TimeoutError) or not self.is_connected:
                                    raise
                                mapped = self._map_error("get", items[i][0], exc)
                                if not isinstance(mapped, TransportError):
                                    raise mapped from exc
                                results[i] = mapped
                    for i in handles:
                        fds[i] = os.open(items[i][2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                         | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                    received = self._read_all(replies, items, handles, fds, hashes)
                    with self._remote("get", names):
                        closes = [replies.send(CMD_CLOSE, handle) for handle in handles.values()]
                        for num, i in zip(closes, handles, strict=True):
                            self._checked(replies, num, items[i][0])
                        handles.clear()
                finally:
                    if handles:
                        _close_quietly(replies, handles.values())
                    for fd in fds.values():
                        with contextlib.suppress(OSError):
                            os.close(fd)
            for i, (remote, expected, local) in enumerate(items):
                if isinstance(results[i], TransportError):
                    continue
                if received[i] != expected:
                    results[i] = TransportError(
                        f"get {remote} from {self._where}: received {received[i]} bytes, "
                        f"the listing said {expected} (the file changed meanwhile)")
                    continue
                if sync:
                    with open(local, "rb") as f:
                        os.fsync(f.fileno())
                results[i] = Downloaded(received[i], hashes[i].hexdigest())
            self._log.info("sftp_get", files=len(items), first=items[0][0],
                           bytes=sum(r.size for r in results if isinstance(r, Downloaded)),
                           duration_ms=round((time.monotonic() - started) * 1000))
            return results

    def _read_all(self, replies: Replies, items: Sequence[tuple[str, int, Path]],
                  handles: dict[int, bytes], fds: dict[int, int],
                  hashes: dict[int, wire.InOrderHash]) -> dict[int, int]:
        """Every open file read up to its listed size, reads pipelined across files.

        A server may answer a read with less than asked: the rest is asked again. One read
        past the listed size must find the end: a file that grew since the listing is
        read on, one that shrank stops early, and the caller compares the sizes.
        """
        received = dict.fromkeys(range(len(items)), 0)
        wanted: deque[tuple[int, int, int]] = deque()  # (item, offset, length) to ask
        for i in handles:
            size = items[i][1]
            for offset in range(0, size, wire.READ_DATA):
                wanted.append((i, offset, min(wire.READ_DATA, size - offset)))
            wanted.append((i, size, 1))  # the end must be there: EOF (a byte: it grew)
        ended: set[int] = set()
        in_flight: deque[tuple[int, int, int, int]] = deque()  # (num, item, offset, length)
        flying = 0
        local: OSError | None = None  # a local write error: the answers are still read
        names = ", ".join(items[i][0] for i in handles)
        with self._remote("get", names):
            while wanted or in_flight:
                while wanted and (len(in_flight) < wire.MAX_READS_IN_FLIGHT
                                  and flying < wire.READ_BYTES_IN_FLIGHT):
                    i, offset, length = wanted.popleft()
                    if i in ended:
                        continue
                    num = replies.send_read(handles[i], offset, length)
                    in_flight.append((num, i, offset, length))
                    flying += length
                num, i, offset, length = in_flight.popleft()
                flying -= length
                try:
                    data = replies.wait_data(num)
                except OSError as exc:
                    if isinstance(exc, TimeoutError) or not self.is_connected:
                        raise
                    raise self._map_error("get", items[i][0], exc) from None
                if not data or local is not None:
                    ended.add(i)
                    continue
                try:
                    os.pwrite(fds[i], data, offset)
                except OSError as exc:
                    local = exc
                    continue
                received[i] += len(data)
                hashes[i].add(offset, data)
                if len(data) < length:  # a short answer: ask for the rest
                    wanted.appendleft((i, offset + len(data), length - len(data)))
        if local is not None:
            raise local  # a local error (a full disk) is not the server's: raised as it is
        return received

    def remove_files(self, remotes: Sequence[str]) -> list[TransportError | None]:
        """Remove many files together; per file None, or the error that concerns it.

        A file already absent is not an error. A lost connection raises.
        """
        if not remotes:
            return []
        with self._lock:
            sftp = self._client()
            results: list[TransportError | None] = [None] * len(remotes)
            with Replies(sftp) as replies, self._remote("remove", ", ".join(remotes)):
                nums = [replies.send(CMD_REMOVE, replies.path(remote)) for remote in remotes]
                for i, num in enumerate(nums):
                    try:
                        replies.wait(num)
                    except OSError as exc:
                        if isinstance(exc, TimeoutError) or not self.is_connected:
                            raise
                        mapped = self._map_error("remove", remotes[i], exc)
                        if isinstance(mapped, RemoteNotFound):
                            continue
                        if not isinstance(mapped, TransportError):
                            raise mapped from exc
                        results[i] = mapped
            self._log.info("sftp_removed", files=len(remotes), first=remotes[0])
            return results

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
        [listing] = self.listdirs([remote_dir])
        if isinstance(listing, TransportError):
            raise listing
        return listing

    def listdirs(self, remote_dirs: Sequence[str]
                 ) -> list[list[tuple[str, int]] | TransportError]:
        """Several folders listed together: per folder its (name, size) of files, sorted
        by name, or the error that concerns it alone (not found, permission).

        One listing gives names and sizes (no stat per file), and the requests are
        pipelined: every folder opened at once, READDIRs sent READDIRS_AHEAD at a time
        on each handle (the server answers them in order, those past the end with EOF),
        then every close. Three round trips for OUT, OUTTEST and OUTTEST-S, however many
        replies wait. A lost connection raises.
        """
        with self._lock:
            sftp = self._client()
            started = time.monotonic()
            results: list[list[tuple[str, int]] | TransportError] = [[] for _ in remote_dirs]
            handles: dict[int, bytes] = {}
            names = ", ".join(remote_dirs)
            with Replies(sftp) as replies:
                try:
                    with self._remote("list", names):
                        opens = [replies.send(CMD_OPENDIR, replies.path(d)) for d in remote_dirs]
                        for i, num in enumerate(opens):
                            try:
                                handles[i] = replies.wait_handle(num)
                            except OSError as exc:
                                if isinstance(exc, TimeoutError) or not self.is_connected:
                                    raise
                                mapped = self._map_error("list", remote_dirs[i], exc)
                                if not isinstance(mapped, TransportError):
                                    raise mapped from exc
                                results[i] = mapped
                        reading = set(handles)
                        while reading:
                            asked = {i: [replies.send(CMD_READDIR, handles[i])
                                         for _ in range(READDIRS_AHEAD)] for i in reading}
                            for i, nums in asked.items():
                                listing = results[i]
                                assert isinstance(listing, list)
                                for num in nums:  # every answer is read, past the end too
                                    entries = replies.wait_names(num)
                                    if entries is None:
                                        reading.discard(i)
                                        continue
                                    listing += [(name, int(e.st_size or 0))
                                                for name, e in entries
                                                if e.st_mode is None
                                                or not stat.S_ISDIR(e.st_mode)]
                        closes = [(replies.send(CMD_CLOSE, handles[i]), i) for i in handles]
                        handles.clear()
                        for num, i in closes:
                            self._checked(replies, num, remote_dirs[i])
                finally:
                    if handles:
                        _close_quietly(replies, handles.values())
            for listing in results:
                if isinstance(listing, list):
                    listing.sort()
            self._log.debug("sftp_listed", folders=len(remote_dirs),
                            files=sum(len(r) for r in results if isinstance(r, list)),
                            duration_ms=round((time.monotonic() - started) * 1000))
            return results

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
                            chunk = handle.read(wire.LOCAL_CHUNK)
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


def _close_quietly(replies: Replies, handles: Iterable[bytes]) -> None:
    """Close what a failed batch left open, without hiding the error that failed it."""
    with contextlib.suppress(Exception):  # the first error is the one to raise
        for handle in handles:
            replies.send(CMD_CLOSE, handle)
        replies.flush()
