"""Every use of paramiko's private API, in one place, checked at start-up.

flad needs three things paramiko does not offer publicly: the extensions a server
announces in its SFTP VERSION (`limits@openssh.com`, for large writes), requests sent
whole under one lock and pipelined with every answer checked (`Replies`), and the
legacy "ssh-rsa" user-key signature the platform asks for. Each leans on names paramiko
may rename in any release. `self_check()` looks for every one of them before the first
connection and fails loudly, naming the installed version, instead of letting a rename
show up as every file failing or a transient error retried for ever. `pyproject.toml`
bounds paramiko to the versions CI runs the transport tests on.
"""

from __future__ import annotations

import struct
import threading
from importlib import metadata
from typing import Any

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_HANDLE,
    CMD_INIT,
    CMD_NAME,
    CMD_READ,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTPError,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from flad.remote.errors import RemoteIncompatible
from flad.remote.wire import (
    COALESCE_BYTES,
    LIMITS_EXTENSION,
    SSH_PACKET_OVERHEAD,
    Limits,
    send_view,
)

#: The paramiko releases CI runs the transport tests on (pyproject bounds the same).
SUPPORTED = ">=3.4,<5.2"
_SFTP_VERSION = 3

#: Private (or overridden) names flad uses, per paramiko class.
PRIVATE_CLASS_NAMES: dict[type, tuple[str, ...]] = {
    paramiko.SFTPClient: ("_write_all", "_send_version", "_send_packet", "_read_packet",
                          "_request", "_async_request", "_read_response",
                          "_convert_status", "_adjust_cwd"),
    SFTPAttributes: ("_from_msg",),
    paramiko.Transport: ("preferred_pubkeys",),
}
#: Attributes paramiko's SFTPClient sets on each instance that flad uses.
PRIVATE_INSTANCE_NAMES = ("_lock", "request_number", "_expecting", "sock")


def paramiko_version() -> str:
    try:
        return metadata.version("paramiko")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return str(getattr(paramiko, "__version__", "unknown"))


def incompatible(what: str) -> RemoteIncompatible:
    return RemoteIncompatible(
        f"the installed paramiko {paramiko_version()} {what}; flad is tested with paramiko "
        f"{SUPPORTED}: install one of those (pip install 'paramiko{SUPPORTED}')")


def self_check() -> None:
    """Raise `RemoteIncompatible` when a private name flad relies on is missing."""
    missing = [f"{cls.__name__}.{name}" for cls, names in PRIVATE_CLASS_NAMES.items()
               for name in names if not hasattr(cls, name)]
    if missing:
        raise incompatible(f"lacks {', '.join(missing)}, which flad uses")


class LegacyAwareTransport(paramiko.Transport):
    """paramiko's Transport, able to sign with the legacy "ssh-rsa" user-key algorithm.

    With `legacy_ssh_rsa`, "ssh-rsa" comes first for RSA user keys: it is used whenever
    the server lists it in server-sig-algs, or lists nothing; a server that lists only
    SHA-2 algorithms still gets SHA-2. (OpenSSH lists every algorithm it knows there,
    including ones its PubkeyAcceptedAlgorithms refuses, so "prefer SHA-2 when listed"
    would fail against a server that accepts only ssh-rsa.)
    """

    legacy_ssh_rsa = False

    @property
    def preferred_pubkeys(self) -> tuple[str, ...]:
        algorithms = tuple(super().preferred_pubkeys)
        if not self.legacy_ssh_rsa:
            return algorithms
        return ("ssh-rsa", *algorithms)


class Client(paramiko.SFTPClient):
    """paramiko's SFTP client, keeping the extensions the server announces, and
    sending each request whole.

    paramiko reads the server's VERSION packet and drops its extension pairs; flad
    needs one of them to know how large a write the server takes. And paramiko sends
    a request of more than one SSH packet (a write, a long path) packet by packet,
    with no lock: another thread's request (its prefetch of an abandoned download)
    could land between two of them, and the server would read it as data. Every
    request goes out under `write_lock` here, and `Replies` takes the same lock.
    """

    extensions: dict[str, bytes]

    def __init__(self, sock: paramiko.Channel) -> None:
        self.write_lock = threading.RLock()  # before paramiko sends INIT through it
        try:
            super().__init__(sock)
        except (AttributeError, TypeError) as exc:  # a renamed or re-shaped internal
            raise incompatible(f"failed inside SFTPClient ({type(exc).__name__}: {exc})"
                               ) from exc
        missing = [name for name in PRIVATE_INSTANCE_NAMES if not hasattr(self, name)]
        if missing:
            raise incompatible(f"has no SFTPClient attribute {', '.join(missing)}, "
                               "which flad uses")

    def _write_all(self, out: bytes) -> None:
        self.send_whole(out)  # every request paramiko sends goes through here

    def send_whole(self, *pieces: bytes | memoryview) -> None:
        """Whole requests into the channel, or the channel closed.

        A request cut in the middle (a timeout, a closed window, any error) would make
        the server read the next requests as its data: the session is over, and
        closing the channel makes every later call fail fast and reconnect.
        """
        with self.write_lock:
            try:
                for piece in pieces:
                    send_view(self.sock, piece)
            except BaseException:
                self.sock.close()
                raise

    def _send_version(self) -> int:
        self.extensions = {}
        msg = paramiko.Message()
        msg.add_int(_SFTP_VERSION)
        self._send_packet(CMD_INIT, msg)  # type: ignore[attr-defined]
        kind, data = self._read_packet()  # type: ignore[attr-defined]
        if kind != CMD_VERSION:
            raise SFTPError("Incompatible sftp protocol")
        reply = paramiko.Message(data)
        version = reply.get_int()
        try:
            while reply.get_remainder():
                name = reply.get_string().decode("utf-8", "replace")
                self.extensions[name] = reply.get_string()
        except Exception:  # a malformed pair: keep what was read, the session is fine
            pass
        return version


def server_limits(client: Client) -> Limits | None:
    """The server's limits, when it announces them and answers the request."""
    if LIMITS_EXTENSION not in client.extensions:
        return None
    try:
        kind, msg = client._request(CMD_EXTENDED, LIMITS_EXTENSION)  # type: ignore[attr-defined]
    except TimeoutError:
        raise  # the server does not answer at all: the connection fails, and says so
    except (OSError, EOFError, SFTPError):  # refused after all
        return None
    if kind != CMD_EXTENDED_REPLY:
        return None
    packet, _read, write = (int(msg.get_int64()) for _ in range(3))
    return Limits(packet=packet, write=write)


class Replies:
    """Answers to our own pipelined SFTP requests, in whatever order they come.

    paramiko hands an answer to the object registered with its request when another
    answer is awaited; reading one answer at a time until ours is there keeps every
    status, so each write is checked (paramiko's own pipelined writes drop theirs).

    Small requests are also held back and sent together, just before an answer is
    awaited: paramiko sends each request as its own SSH packet (encrypted, MACed and
    written to the socket one by one), and the opens, closes and stats of a batch fit
    in a few. Use as a context manager: it takes over the client's writes meanwhile.
    """

    def __init__(self, sftp: Client) -> None:
        self._client = sftp
        self._sftp: Any = sftp  # the private request API is not in the stubs
        self._got: dict[int, tuple[int, paramiko.Message]] = {}
        self._held: list[bytes] = []
        self._held_size = 0
        # paramiko's prefetch thread of an abandoned download may still send through
        # the client while we hold its writes: never lose, repeat or split a request
        self._held_lock = sftp.write_lock

    def __enter__(self) -> Replies:
        self._sftp._write_all = self._hold  # paramiko's _send_packet writes through it
        return self

    def __exit__(self, *exc: object) -> None:
        del self._sftp._write_all  # paramiko's own method again
        self._held.clear()  # requests never sent are dropped with the error that stopped them

    def _hold(self, out: bytes) -> None:
        with self._held_lock:
            if len(out) >= COALESCE_BYTES:
                self._flush_held()
                self._client.send_whole(out)
                return
            self._held.append(out)
            self._held_size += len(out)
            if self._held_size >= COALESCE_BYTES:
                self._flush_held()

    def flush(self) -> None:
        with self._held_lock:
            self._flush_held()

    def _flush_held(self) -> None:
        if self._held:
            out = b"".join(self._held)
            self._held.clear()
            self._held_size = 0
            self._client.send_whole(out)

    def _number(self) -> int:
        """A request number, with this object registered for its answer."""
        sftp = self._sftp
        with sftp._lock:
            num = int(sftp.request_number)
            sftp._expecting[num] = self
            sftp.request_number += 1
        return num

    def send(self, kind: int, *args: Any) -> int:
        return int(self._sftp._async_request(self, kind, *args))

    def send_write(self, handle: bytes, offset: int, data: memoryview) -> int:
        """A write request, its data handed to the channel without paramiko's copies.

        The header and the first piece go out as one SSH packet, the rest as views of
        `data`; the whole request goes out under the lock, so no other request lands
        in the middle of it.
        """
        num = self._number()
        size = 1 + 4 + 4 + len(handle) + 8 + 4 + len(data)
        head = (struct.pack(">IBII", size, CMD_WRITE, num, len(handle)) + handle
                + struct.pack(">QI", offset, len(data)))
        room = max(0, int(self._sftp.sock.out_max_packet_size) - SSH_PACKET_OVERHEAD
                   - len(head))
        with self._held_lock:
            self._flush_held()
            self._client.send_whole(head + data[:room], data[room:])
        return num

    def _async_response(self, kind: int, msg: paramiko.Message, num: int) -> None:
        self._got[num] = (kind, msg)  # called by paramiko

    def wait(self, num: int) -> tuple[int, paramiko.Message]:
        """The answer to request `num`; OSError (as paramiko raises) for an error status."""
        self.flush()
        while num not in self._got:
            self._sftp._read_response()
        kind, msg = self._got.pop(num)
        if kind == CMD_STATUS:
            self._sftp._convert_status(msg)  # raises for anything but OK
        return kind, msg

    def wait_handle(self, num: int) -> bytes:
        kind, msg = self.wait(num)
        if kind != CMD_HANDLE:
            raise SFTPError("expected a handle")
        return bytes(msg.get_binary())

    def send_read(self, handle: bytes, offset: int, length: int) -> int:
        """A read request (its offset is the protocol's 64-bit integer)."""
        return self.send(CMD_READ, handle, int64(offset), int(length))

    def wait_data(self, num: int) -> bytes:
        """The data a read returned; b"" at the end of the file (the server's EOF status)."""
        try:
            kind, msg = self.wait(num)
        except EOFError:  # paramiko's _convert_status: SSH_FX_EOF
            return b""
        if kind != CMD_DATA:
            raise SFTPError("expected data")
        return bytes(msg.get_string())

    def wait_names(self, num: int) -> list[tuple[str, SFTPAttributes]] | None:
        """The entries a READDIR returned (without . and ..); None at the folder's end."""
        try:
            kind, msg = self.wait(num)
        except EOFError:  # paramiko's _convert_status: SSH_FX_EOF
            return None
        if kind != CMD_NAME:
            raise SFTPError("expected names")
        attrs: Any = SFTPAttributes
        entries = []
        for _ in range(msg.get_int()):
            name = msg.get_text()
            longname = msg.get_text()
            entry = attrs._from_msg(msg, name, longname)
            if name not in (".", ".."):
                entries.append((name, entry))
        return entries

    def wait_size(self, num: int) -> int:
        kind, msg = self.wait(num)
        if kind != CMD_ATTRS:
            raise SFTPError("expected attributes")
        attrs: Any = SFTPAttributes
        return int(attrs._from_msg(msg).st_size or 0)

    def path(self, remote: str) -> Any:
        return self._sftp._adjust_cwd(remote)
