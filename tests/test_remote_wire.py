"""How flad sizes and sends its SFTP writes: by what the server announces.

Against a real OpenSSH sftp-server (which announces `limits@openssh.com`), writes take
the server's largest size, seen in the server's own log; against flad's sandbox (a
paramiko server announcing nothing), they fit one SSH packet. Either way the bytes
arrive whole.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko.sftp import CMD_STAT
from structlog.testing import capture_logs

from flad.remote import SftpChannel, SftpSettings, TransportError
from flad.remote import wire as sftpwire
from flad.remote.connect import prefer_ciphers
from flad.remote.wire import MAX_WRITE_DATA, Limits, write_size
from flad.sandbox import start_sandbox
from tests.sshd import SshServer, generate_key
from tests.test_remote_sftp import settings_for

_WRITE = re.compile(r'write "(?P<path>[^"]+)" \(handle \d+\) off (?P<off>\d+) len (?P<len>\d+)')
SSH_PACKET = 32768  # OpenSSH's largest channel packet


def logged_writes(server: SshServer, remote: str) -> list[tuple[int, int]]:
    """(offset, length) of each write the sftp-server logged for `remote`."""
    return [(int(m["off"]), int(m["len"])) for m in _WRITE.finditer(server.log_text())
            if m["path"] == remote]


def test_writes_take_the_largest_size_openssh_announces(tmp_path: Path) -> None:
    content = os.urandom(3 * 261120 + 1234)  # not a multiple of the write size
    with (
        SshServer(sftp_log_level="DEBUG") as server,
        capture_logs() as logs,
        SftpChannel(settings_for(server, tmp_path)) as ch,
    ):
        ch.put_bytes(content, "IN/big")
        writes = logged_writes(server, "IN/big")
        held = (server.root / "IN" / "big").read_bytes()
    assert held == content
    # OpenSSH's sftp-server takes writes of up to 255 KiB (its limit, announced)
    assert writes == [(0, 261120), (261120, 261120), (522240, 261120), (783360, 1234)]
    connected = [e for e in logs if e["event"] == "ssh_connected"]
    assert connected[0]["write_size"] == 261120


def test_a_file_larger_than_the_window_arrives_whole(tmp_path: Path) -> None:
    """More than OpenSSH's 2 MiB window: writes wait for it, in pieces of any size."""
    local = tmp_path / "big.bin"
    content = os.urandom(9 * 1024 * 1024 + 77)
    local.write_bytes(content)
    with SshServer() as server, SftpChannel(settings_for(server, tmp_path)) as ch:
        assert ch.put_files([(local, "IN/a"), (content, "IN/b")]) == [len(content)] * 2
        assert (server.root / "IN" / "a").read_bytes() == content
        assert (server.root / "IN" / "b").read_bytes() == content


def test_a_server_announcing_no_limits_gets_writes_of_one_ssh_packet(tmp_path: Path) -> None:
    key = tmp_path / "client_key"
    public_line = generate_key(key, "ed25519")
    content = os.urandom(200_000)
    with start_sandbox(tmp_path / "root", authorized_keys=[public_line],
                       settle_seconds=60) as sandbox:
        settings = SftpSettings(
            host=sandbox.host, port=sandbox.port, username="flad", private_key=key,
            passphrase=None, known_hosts=sandbox.known_hosts_path,
            connect_timeout=5.0, request_timeout=5.0,
        )
        with capture_logs() as logs, SftpChannel(settings) as ch:
            ch.put_bytes(content, "INTEST/data.bin")
            assert (sandbox.root / "INTEST" / "data.bin").read_bytes() == content
    size = next(e for e in logs if e["event"] == "ssh_connected")["write_size"]
    assert size <= 32768
    assert size + sftpwire.WRITE_HEADER + sftpwire.SSH_PACKET_OVERHEAD <= 32768 + 2048


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (None, SSH_PACKET - sftpwire.SSH_PACKET_OVERHEAD - sftpwire.WRITE_HEADER
         - sftpwire.MAX_HANDLE),
        (Limits(packet=0, write=0), SSH_PACKET - sftpwire.SSH_PACKET_OVERHEAD
         - sftpwire.WRITE_HEADER - sftpwire.MAX_HANDLE),  # zero: the server does not say
        (Limits(packet=262144, write=261120), 261120),  # OpenSSH
        (Limits(packet=262144, write=20000), 20000),  # less than 32 KiB: the server wins
        (Limits(packet=34000, write=261120),
         34000 - sftpwire.WRITE_HEADER - sftpwire.MAX_HANDLE),  # the packet is the bound
        (Limits(packet=2**40, write=2**40), MAX_WRITE_DATA),  # never more than flad's cap
        (Limits(packet=262144, write=500), SSH_PACKET - sftpwire.SSH_PACKET_OVERHEAD
         - sftpwire.WRITE_HEADER - sftpwire.MAX_HANDLE),  # broken figures: the basic size
        (Limits(packet=300, write=261120), SSH_PACKET - sftpwire.SSH_PACKET_OVERHEAD
         - sftpwire.WRITE_HEADER - sftpwire.MAX_HANDLE),
    ],
)
def test_write_size_follows_the_limits(limits: Limits | None, expected: int) -> None:
    assert write_size(limits, SSH_PACKET) == expected


def test_without_limits_a_write_never_exceeds_32_kib() -> None:
    assert write_size(None, 2**20) == sftpwire.BASIC_WRITE_DATA
    assert write_size(None, 1024) == 4096  # a tiny packet size still moves data


def test_aes_gcm_is_chosen_when_the_server_offers_it(tmp_path: Path) -> None:
    """Its tag replaces the HMAC paramiko computes and compares in Python per packet.

    A paramiko before 3.5 knows no AES-GCM: it gets AES-CTR, and still connects."""
    known = paramiko.Transport._cipher_info  # type: ignore[attr-defined]
    expected = ("aes128-gcm@openssh.com" if "aes128-gcm@openssh.com" in known
                else "aes128-ctr")
    with SshServer() as server, SftpChannel(settings_for(server, tmp_path)) as ch:
        transport: Any = ch._transport
        assert transport.local_cipher == expected
        assert transport.remote_cipher == expected


def test_a_server_without_aes_gcm_gets_aes_ctr(tmp_path: Path) -> None:
    content = os.urandom(700_000)
    with (
        SshServer(ciphers="aes256-ctr,aes128-ctr") as server,
        SftpChannel(settings_for(server, tmp_path)) as ch,
    ):
        transport: Any = ch._transport
        assert transport.local_cipher == "aes128-ctr"
        ch.put_bytes(content, "IN/x")
        assert (server.root / "IN" / "x").read_bytes() == content


def test_writes_in_flight_stay_near_one_mib_and_bounded_in_count() -> None:
    assert sftpwire.writes_in_flight(261120) == 4
    assert sftpwire.writes_in_flight(32423) == 32
    assert sftpwire.writes_in_flight(1024) == sftpwire.MAX_WRITES_IN_FLIGHT
    assert sftpwire.writes_in_flight(4 * 1024 * 1024) == 2


def test_only_ciphers_paramiko_knows_are_asked_for() -> None:
    """AES-GCM came with paramiko 3.5: an older one must not be asked for it."""
    known = paramiko.Transport._cipher_info  # type: ignore[attr-defined]
    transport = paramiko.Transport(socket.socketpair()[0])
    try:
        options = transport.get_security_options()
        prefer_ciphers(options)
        assert all(c in known for c in options.ciphers)
        offered = set(paramiko.Transport(socket.socketpair()[0]).get_security_options().ciphers)
        assert set(options.ciphers) == offered  # reordered, nothing added or dropped
    finally:
        transport.close()


@pytest.mark.parametrize("fault", [OSError("injected"), MemoryError(), TimeoutError()])
def test_a_write_cut_in_the_middle_ends_the_session(
    fault: BaseException, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server would take the next requests as the rest of the write: the channel
    is closed, the put fails, and the next connection works."""
    content = os.urandom(2 * 1024 * 1024)
    real_send = paramiko.Channel.send
    calls = 0

    def send(self: paramiko.Channel, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:  # inside the first 255 KiB write, after its first packet
            raise fault
        return real_send(self, data)

    with SshServer() as server, SftpChannel(settings_for(server, tmp_path)) as ch:
        monkeypatch.setattr(paramiko.Channel, "send", send)
        with pytest.raises((TransportError, MemoryError)):
            ch.put_bytes(content, "IN/cut")
        assert not ch.is_connected
        monkeypatch.setattr(paramiko.Channel, "send", real_send)
        ch.ensure_connected()
        assert ch.put_bytes(content, "IN/whole") == len(content)
        assert (server.root / "IN" / "whole").read_bytes() == content


@pytest.mark.parametrize("path_len", [40, 40_000])
def test_another_threads_requests_never_land_inside_a_write(
    tmp_path: Path, path_len: int
) -> None:
    """A thread sending requests through the client during uploads, as paramiko's
    prefetch of an abandoned download does: a request of two SSH packets (a 40 KB
    path) landing between two packets of a write would corrupt the session."""
    content = os.urandom(3 * 1024 * 1024 + 17)
    with SshServer() as server, SftpChannel(settings_for(server, tmp_path)) as ch:
        sftp: Any = ch._sftp
        stop = threading.Event()
        sent = 0

        def prefetch_like() -> None:
            nonlocal sent
            while not stop.is_set():
                sftp._async_request(type(None), CMD_STAT, "IN/" + "x" * path_len)
                sent += 1
                time.sleep(0.0005)

        other = threading.Thread(target=prefetch_like, daemon=True)
        other.start()
        try:
            for i in range(8):
                assert ch.put_bytes(content, f"IN/f{i}") == len(content)
                for _ in range(20):  # paramiko's own requests, outside any upload
                    assert ch.size(f"IN/f{i}") == len(content)
                assert (server.root / "IN" / f"f{i}").read_bytes() == content
        finally:
            stop.set()
            other.join(5)
        assert sent > 50  # the other thread did send meanwhile
        assert ch.connections_opened == 1
