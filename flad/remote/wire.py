"""How big each SFTP write is, and how much is kept in flight: sizing, no I/O of its own.

paramiko sizes nothing by what the server accepts, and an upload is CPU-bound in
paramiko. So flad learns the server's limits (OpenSSH's `limits@openssh.com`, announced
in its VERSION) and, where the server allows it, sends writes of up to 255 KiB: one
status to read per 255 KiB instead of per 32 KiB, and the data handed to the SSH
channel as views, not copies. A server that announces no limits gets writes that fit
one SSH packet, the size every server accepts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

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

PutSource = Path | bytes


@dataclass(frozen=True)
class Limits:
    """What a server says it takes (`limits@openssh.com`); zero means it does not say."""

    packet: int
    write: int


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


def send_view(channel: paramiko.Channel, data: bytes | memoryview) -> None:
    """All of `data` into the channel, as views (paramiko's sendall copies what is left)."""
    view = memoryview(data)
    while view:
        sent = channel.send(view)  # type: ignore[arg-type]  # paramiko takes any buffer
        if sent <= 0:
            raise EOFError("the SFTP channel closed during a write")
        view = view[sent:]


class InOrderHash:
    """SHA-256 of a file downloaded by pipelined reads, fed as the answers come.

    Answers to a file's reads come in the order asked, except after a short answer
    (the rest is asked again, behind reads already in flight): a piece that comes
    early waits here until the bytes before it are in. What waits is bounded by the
    reads in flight, never the file.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._at = 0
        self._early: dict[int, bytes] = {}

    def add(self, offset: int, data: bytes) -> None:
        if offset != self._at:
            self._early[offset] = data
            return
        self._hash.update(data)
        self._at += len(data)
        while self._at in self._early:
            piece = self._early.pop(self._at)
            self._hash.update(piece)
            self._at += len(piece)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


#: Data per read request: one SSH packet's worth, the size every server answers whole.
READ_DATA = 2**15
#: Unacknowledged read data across a batch of downloads, and how many files are open
#: at once: enough to keep a long link busy, bounded whatever the number of replies.
#: Each window of open files costs three round trips (open, read, close): a slice of
#: 50 reply sets (150 files) fits one. OpenSSH's sftp-server takes as many handles as
#: it has file descriptors (about 1,000).
READ_BYTES_IN_FLIGHT = 1024 * 1024
#: A window of small replies is two reads per file (the data, then the end): all of
#: them go out at once; larger files are held back by READ_BYTES_IN_FLIGHT.
MAX_READS_IN_FLIGHT = 256
MAX_OPEN_FILES = 160

