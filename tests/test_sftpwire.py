"""How flad sizes and sends its SFTP writes: by what the server announces.

Against a real OpenSSH sftp-server (which announces `limits@openssh.com`), writes take
the server's largest size, seen in the server's own log; against flad's sandbox (a
paramiko server announcing nothing), they fit one SSH packet. Either way the bytes
arrive whole.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from flad import sftpwire
from flad.sandbox import start_sandbox
from flad.sftpwire import MAX_WRITE_DATA, Limits, write_size
from flad.transport import SftpChannel, SftpSettings
from tests.sshd import SshServer, generate_key
from tests.test_transport import settings_for

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
    ],
)
def test_write_size_follows_the_limits(limits: Limits | None, expected: int) -> None:
    assert write_size(limits, SSH_PACKET) == expected


def test_without_limits_a_write_never_exceeds_32_kib() -> None:
    assert write_size(None, 2**20) == sftpwire.BASIC_WRITE_DATA
    assert write_size(None, 1024) == 4096  # a tiny packet size still moves data


def test_aes_gcm_is_chosen_when_the_server_offers_it(tmp_path: Path) -> None:
    """Its tag replaces the HMAC paramiko computes and compares in Python per packet."""
    with SshServer() as server, SftpChannel(settings_for(server, tmp_path)) as ch:
        transport: Any = ch._transport
        assert transport.local_cipher == "aes128-gcm@openssh.com"
        assert transport.remote_cipher == "aes128-gcm@openssh.com"


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
