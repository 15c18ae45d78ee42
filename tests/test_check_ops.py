"""`flad check` on what ops teams watch: the metrics listener, the days each
certificate has left, and the proxy leg before the SSH leg (real tinyproxy and a
proxy that stalls, between flad and a real sshd)."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from flad.cli import checkup
from flad.listen_address import ListenAddress
from flad.metrics.server import MetricsServer
from tests.certs import issue_cert, make_ca, pem_certificates, write_signer
from tests.harness import make_install
from tests.proxies import StallingProxy, TinyProxy
from tests.sshd import SshServer


def findings(path: Path, *, offline: bool = True) -> dict[str, list[checkup.Finding]]:
    out: dict[str, list[checkup.Finding]] = {}
    for finding in checkup.check_all(path, offline=offline):
        out.setdefault(finding.subject, []).append(finding)
    return out


def test_the_metrics_listener_free_busy_or_already_flad(tmp_path: Path,
                                                        sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    [off] = findings(inst.config_path)["daemon.metrics_listen"]
    assert off.level == "ok" and off.message.startswith("off")

    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()
    inst = make_install(tmp_path, sshd, metrics_listen=f"127.0.0.1:{port}")
    [free] = findings(inst.config_path)["daemon.metrics_listen"]
    assert (free.level, f"127.0.0.1:{port} (loopback only) is free" in free.message) == (
        "ok", True)

    holder = socket.create_server(("127.0.0.1", port))
    try:
        [busy] = findings(inst.config_path)["daemon.metrics_listen"]
    finally:
        holder.close()
    assert busy.level == "error" and f"cannot listen on 127.0.0.1:{port}" in busy.message

    server = MetricsServer(ListenAddress("127.0.0.1", port), CollectorRegistry(), list)
    try:
        [served] = findings(inst.config_path)["daemon.metrics_listen"]
    finally:
        server.close()
    assert served.level == "ok" and "a running flad answers there" in served.message


def test_days_left_for_the_signing_and_reply_trust_certificates(tmp_path: Path,
                                                                sshd: SshServer) -> None:
    now = dt.datetime.now(dt.UTC)
    ca = make_ca()
    soon = write_signer(tmp_path / "soon", issue_cert(
        ca, "acme signer", not_after=now + dt.timedelta(days=5, hours=1)),
        chain=[ca.certificate])
    trust = tmp_path / "trust.pem"
    trust.write_bytes(pem_certificates([
        issue_cert(ca, "platform a", not_after=now + dt.timedelta(days=20, hours=1))
        .certificate,
        issue_cert(ca, "platform b", not_after=now + dt.timedelta(days=200, hours=1))
        .certificate]))
    inst = make_install(tmp_path, sshd)
    inst.rewrite(signing={"certificate": soon.cert_path, "private_key": soon.key_path},
                 reply_trust=trust)
    found = findings(inst.config_path)
    [signing] = found["channel acme signing lifetime"]
    assert signing.level == "error" and "in 5 day(s): renew it" in signing.message
    trusted = sorted((f.level, f.message) for f in found["channel acme reply_trust lifetime"])
    assert [level for level, _ in trusted] == ["ok", "warning"]
    assert "200 day(s) left" in trusted[0][1] and "platform b" in trusted[0][1]
    assert "in 20 day(s)" in trusted[1][1] and "platform a" in trusted[1][1]


def test_the_proxy_leg_is_reported_before_the_ssh_leg(tmp_path: Path,
                                                      sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    with TinyProxy(tmp_path / "tinyproxy", sshd.port) as proxy:
        inst.channel["sftp"]["proxy"] = proxy.url
        inst.rewrite()
        listed = [f for f in checkup.check_all(inst.config_path, offline=False)
                  if f.subject.startswith("channel acme ")]
        subjects = [f.subject for f in listed]
        assert subjects.index("channel acme proxy") < subjects.index("channel acme sftp")
        found = {f.subject: f for f in listed}
        assert found["channel acme proxy"].level == "ok"
        assert f"proxy {proxy.url} reached" in found["channel acme proxy"].message
        assert any(f.level == "ok" and f.message.startswith("connected to")
                   for f in listed if f.subject == "channel acme sftp")

    with TinyProxy(tmp_path / "refusing", sshd.port + 1) as proxy:  # another port only
        inst.channel["sftp"]["proxy"] = proxy.url
        inst.rewrite()
        found = {f.subject: f for f in checkup.check_all(inst.config_path, offline=False)}
        assert found["channel acme proxy"].level == "error"
        assert "the proxy refused" in found["channel acme proxy"].message
        assert "channel acme sftp" not in found  # the SSH leg is not tried again

    with StallingProxy() as proxy:
        inst.channel["sftp"]["proxy"] = proxy.url
        inst.channel["sftp"]["connect_timeout"] = 1
        inst.rewrite()
        found = {f.subject: f for f in checkup.check_all(inst.config_path, offline=False)}
        assert found["channel acme proxy"].level == "error"
        assert "no answer within 1s (the proxy stalled)" in found["channel acme proxy"].message


def test_idle_clients_cannot_hold_the_metrics_endpoint_without_end() -> None:
    from flad.metrics import server as server_mod

    server = MetricsServer(ListenAddress("127.0.0.1", 0), CollectorRegistry(), list)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
            for _ in range(server_mod.MAX_CLIENTS)]
    try:
        time.sleep(0.5)  # every idle client has its thread
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert extra.recv(100) == b""  # closed at once, not served
        extra.close()
    finally:
        for conn in idle:
            conn.close()
    time.sleep(0.5)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as ok:
        assert ok.read() == b"ok\n"
    server.close()


def test_clients_trickling_bytes_lose_their_slot_at_the_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read has its timeout, but a client sending a byte now and then would keep
    its slot for ever: the whole request has a deadline (review finding)."""
    from flad.metrics import server as server_mod

    monkeypatch.setattr(server_mod, "REQUEST_DEADLINE_SECONDS", 1.0)
    server = MetricsServer(ListenAddress("127.0.0.1", 0), CollectorRegistry(), list)
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
            for _ in range(server_mod.MAX_CLIENTS)]
    try:
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # well past the deadline, never idle
            for conn in slow:
                with contextlib.suppress(OSError):
                    conn.sendall(b"G")
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz",
                                    timeout=5) as ok:
            assert ok.read() == b"ok\n"
    finally:
        for conn in slow:
            conn.close()
        server.close()
