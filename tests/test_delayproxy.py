"""The bench's delay proxy: a WAN round trip on loopback, bytes in order."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from bench.delayproxy import DelayProxy
from flad.remote import SftpChannel
from tests.sshd import SshServer
from tests.test_remote_sftp import settings_for


def echo_server() -> tuple[socket.socket, int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return listener, int(listener.getsockname()[1])


def test_a_round_trip_costs_the_delay_and_a_stream_costs_it_once() -> None:
    listener, port = echo_server()
    with DelayProxy(port, rtt_ms=100) as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        one = time.monotonic() - started
        assert 0.09 <= one < 0.5
        payload = os.urandom(8 * 1024 * 1024)  # 32 reads of the proxy's 256 KiB
        started = time.monotonic()
        sock.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            got += sock.recv(1 << 20)
        assert bytes(got) == payload  # in order, whole
        # pipelined: about one round trip, where one per read would be over 3 s
        assert time.monotonic() - started < 1.5
    listener.close()


def test_sftp_through_the_proxy(sshd: SshServer, tmp_path: Path) -> None:
    with DelayProxy(sshd.port, rtt_ms=20) as proxy:
        sshd.write_known_hosts(tmp_path / "known_hosts", port=proxy.port)
        settings = settings_for(sshd, tmp_path)
        import dataclasses

        channel = SftpChannel(dataclasses.replace(settings, port=proxy.port))
        with channel:
            assert channel.put_bytes(b"over a round trip", "IN/a") == 17
        assert (sshd.root / "IN" / "a").read_bytes() == b"over a round trip"
