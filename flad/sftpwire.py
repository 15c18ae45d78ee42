"""SFTP requests as flad sends them over paramiko's session: pipelined, held, large.

paramiko sends each SFTP request through several layers of messages, each copying the
data, and sizes nothing by what the server accepts. An upload is where that costs: it
is CPU-bound in paramiko. So flad learns the server's limits (OpenSSH's
`limits@openssh.com`, announced in its VERSION) and, where the server allows it, sends
writes of up to 255 KiB: one status to read per 255 KiB instead of per 32 KiB, and the
data handed to the SSH channel as views, not copies. A server that announces no limits
gets writes that fit one SSH packet, the size every server accepts.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_HANDLE,
    CMD_INIT,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTPError,
)
from paramiko.sftp_attr import SFTPAttributes

#: Read from and write to local files in pieces of this size.
LOCAL_CHUNK = 1024 * 1024
#: At most 32 KiB of data per write to a server that announces no limits (the size
#: every server accepts), less when that makes the whole request fit one SSH packet.
BASIC_WRITE_DATA = 2**15
#: The most data flad puts in one write, whatever the server allows (OpenSSH: 255 KiB).
MAX_WRITE_DATA = 255 * 1024
#: Announced limits that would make writes smaller than this are taken as broken.
MIN_WRITE_DATA = 1024
#: The most writes flad keeps unacknowledged, however small they are.
MAX_WRITES_IN_FLIGHT = 64
#: Header of a write request: length, type, id, handle length, offset, data length.
WRITE_HEADER = 4 + 1 + 4 + 4 + 8 + 4
MAX_HANDLE = 256  # the protocol's longest handle
#: Room kept in an SSH packet for the channel's own header, padding and MAC.
SSH_PACKET_OVERHEAD = 64
#: Requests smaller than this are held and sent together, up to this many bytes at once.
COALESCE_BYTES = 16 * 1024
#: Unacknowledged write data per upload. Enough to keep a link full up to 1 MiB per
#: round trip (100 Mbit/s at 80 ms); against OpenSSH, whose window is 2 MiB, more
#: made sshd's buffers grow on each new connection (tens of thousands of page faults)
#: and a 50 MiB upload took 0.45-0.6 s instead of 0.3.
WRITE_BYTES_IN_FLIGHT = 1024 * 1024
LIMITS_EXTENSION = "limits@openssh.com"
_SFTP_VERSION = 3

PutSource = Path | bytes


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
        super().__init__(sock)

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
                    _send_view(self.sock, piece)
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


@dataclass(frozen=True)
class Limits:
    """What a server says it takes (`limits@openssh.com`); zero means it does not say."""

    packet: int
    write: int


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


def write_size(limits: Limits | None, max_packet: int) -> int:
    """How much data to put in one write request.

    `max_packet` is the largest SSH packet the server takes on the channel. Without
    limits, a write fits one SSH packet (at most 32 KiB of data, whatever the handle's
    length, up to the protocol's 256 bytes); with them, the most the server says it
    takes, up to MAX_WRITE_DATA.
    """
    fits = max_packet - SSH_PACKET_OVERHEAD - WRITE_HEADER - MAX_HANDLE
    basic = max(4096, min(BASIC_WRITE_DATA, fits))
    if limits is None or not limits.packet or not limits.write:
        return basic
    largest = min(limits.write, limits.packet - WRITE_HEADER - MAX_HANDLE, MAX_WRITE_DATA)
    # below 1 KiB the figures are broken (the protocol asks servers for 32 KiB or more)
    return largest if largest >= MIN_WRITE_DATA else basic


def writes_in_flight(size: int) -> int:
    """How many writes of `size` bytes to keep unacknowledged."""
    return max(2, min(MAX_WRITES_IN_FLIGHT, WRITE_BYTES_IN_FLIGHT // size))


def chunks(source: PutSource) -> Iterator[memoryview]:
    """The content in pieces of LOCAL_CHUNK, without a new buffer for each piece.

    Bytes are cut into views (no copy of a 50 MiB file into 1 MiB pieces); a file is
    read into one reused buffer. A local read error raises OSError, not a transport
    error.
    """
    if isinstance(source, bytes):
        whole = memoryview(source)
        for offset in range(0, len(whole), LOCAL_CHUNK):
            yield whole[offset:offset + LOCAL_CHUNK]
        return
    buffer = bytearray(LOCAL_CHUNK)
    with source.open("rb", buffering=0) as f:
        while count := f.readinto(buffer):
            yield memoryview(buffer)[:count]


def _send_view(channel: paramiko.Channel, data: bytes | memoryview) -> None:
    """All of `data` into the channel, as views (paramiko's sendall copies what is left)."""
    view = memoryview(data)
    while view:
        sent = channel.send(view)  # type: ignore[arg-type]  # paramiko takes any buffer
        if sent <= 0:
            raise EOFError("the SFTP channel closed during a write")
        view = view[sent:]


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

    def wait_size(self, num: int) -> int:
        kind, msg = self.wait(num)
        if kind != CMD_ATTRS:
            raise SFTPError("expected attributes")
        attrs: Any = SFTPAttributes
        return int(attrs._from_msg(msg).st_size or 0)

    def path(self, remote: str) -> Any:
        return self._sftp._adjust_cwd(remote)
