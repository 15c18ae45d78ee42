"""flad.remote.sftp against a real OpenSSH server (tests/sshd.py): nothing mocked."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from flad.remote import (
    AuthenticationFailed,
    HostKeyMismatch,
    HostKeyUnknown,
    PermanentTransportError,
    PrivateKeyError,
    RemoteNotFound,
    RemotePermissionDenied,
    SftpChannel,
    SftpSettings,
    TransportError,
    add_known_host,
    fetch_host_key,
    fingerprint,
    load_private_key,
)
from tests.sshd import SshServer, generate_key


def settings_for(server: SshServer, tmp_path: Path, **changes: object) -> SftpSettings:
    """Settings that trust `server` and log in with its authorized client key."""
    known_hosts = tmp_path / "known_hosts"
    if not known_hosts.exists():
        server.write_known_hosts(known_hosts)
    base = SftpSettings(
        host=server.host,
        port=server.port,
        username=server.username,
        private_key=server.client_key_path,
        passphrase=None,
        known_hosts=known_hosts,
        connect_timeout=5.0,
        request_timeout=5.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def channel(sshd: SshServer, tmp_path: Path) -> Iterator[SftpChannel]:
    ch = SftpChannel(settings_for(sshd, tmp_path), channel_name="employer")
    ch.connect()
    yield ch
    ch.close()


def ssh_keygen_fingerprint(path: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return out.split()[1]


# -- connecting ---------------------------------------------------------------------------


def test_connects_with_known_host_and_key(sshd: SshServer, tmp_path: Path) -> None:
    ch = SftpChannel(settings_for(sshd, tmp_path), channel_name="employer")
    with capture_logs() as logs:
        ch.connect()
        ch.connect()  # already open: nothing to do
        assert ch.is_connected
        assert {"IN", "OUT", "INTEST", "OUTTEST"} <= set(ch.list_remote_folders())
        ch.close()
    assert not ch.is_connected
    assert ch.connections_opened == 1
    assert sshd.connection_count() == 1
    connected = [e for e in logs if e["event"] == "ssh_connected"]
    assert len(connected) == 1
    assert connected[0]["channel"] == "employer"
    assert connected[0]["port"] == sshd.port
    assert isinstance(connected[0]["duration_ms"], int)
    assert [e["event"] for e in logs].count("ssh_disconnected") == 1


def test_unknown_host_key_is_refused_before_logging_in(sshd: SshServer, tmp_path: Path) -> None:
    settings = settings_for(sshd, tmp_path, known_hosts=tmp_path / "absent_known_hosts")
    ch = SftpChannel(settings, channel_name="employer")
    with pytest.raises(HostKeyUnknown) as caught:
        ch.connect()
    text = str(caught.value)
    assert "flad trust-host -c CONFIG employer" in text
    assert ssh_keygen_fingerprint(sshd.host_key_path) in text
    assert not ch.is_connected
    with pytest.raises(TransportError):
        ch.put_bytes(b"data", "INTEST/x")
    # Never authenticated, nothing reached the SFTP server.
    assert sshd.connection_count() == 0
    assert sshd.sftp_operations() == []
    assert list((sshd.root / "INTEST").iterdir()) == []


def test_a_key_known_for_another_port_does_not_count(sshd: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{sshd.host} {sshd.host_public_key_line}\n")  # port 22 entry
    with pytest.raises(HostKeyUnknown):
        SftpChannel(settings_for(sshd, tmp_path)).connect()


def test_hashed_known_hosts_entry_is_accepted(sshd: SshServer, tmp_path: Path) -> None:
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
    assert known_hosts.read_text().startswith("|1|")
    with SftpChannel(settings_for(sshd, tmp_path)) as ch:
        assert ch.is_connected


def test_changed_host_key_is_refused_loudly(sshd: SshServer, tmp_path: Path) -> None:
    settings = settings_for(sshd, tmp_path)
    old = ssh_keygen_fingerprint(sshd.host_key_path)
    sshd.replace_host_key()
    new = ssh_keygen_fingerprint(sshd.host_key_path)
    ch = SftpChannel(settings, channel_name="employer")
    with capture_logs() as logs, pytest.raises(HostKeyMismatch) as caught:
        ch.connect()
    assert old in str(caught.value) and new in str(caught.value)
    assert isinstance(caught.value, PermanentTransportError)
    assert any(e["event"] == "ssh_host_key_mismatch" and e["log_level"] == "error" for e in logs)
    assert sshd.connection_count() == 0


def test_wrong_client_key_fails_authentication(sshd: SshServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    generate_key(stranger)
    ch = SftpChannel(settings_for(sshd, tmp_path, private_key=stranger))
    with pytest.raises(AuthenticationFailed) as caught:
        ch.connect()
    assert sshd.username in str(caught.value)
    assert str(stranger) in str(caught.value)
    assert not ch.is_connected


def test_nothing_listening_is_a_transient_error(tmp_path: Path, sshd: SshServer) -> None:
    settings = settings_for(sshd, tmp_path)
    sshd.stop()
    with pytest.raises(TransportError) as caught:
        SftpChannel(settings).connect()
    assert not isinstance(caught.value, PermanentTransportError)
    assert "connection refused" in str(caught.value)
    assert f"{sshd.host}:{sshd.port}" in str(caught.value)


def test_operations_need_a_connection(sshd: SshServer, tmp_path: Path) -> None:
    ch = SftpChannel(settings_for(sshd, tmp_path))
    with pytest.raises(TransportError, match="not connected"):
        ch.size("INTEST/x")


# -- files --------------------------------------------------------------------------------


def test_put_size_list_get_remove_round_trip(
    channel: SftpChannel, sshd: SshServer, tmp_path: Path
) -> None:
    local = tmp_path / "FI.bin"
    content = os.urandom(300_000)  # several 32 KiB requests, not a multiple of them
    local.write_bytes(content)

    assert channel.put_file(local, "INTEST/FI.x") == len(content)
    assert channel.put_bytes(b"signature", "INTEST/FS.x") == 9
    assert channel.put_bytes(b"", "INTEST/GO.x") == 0
    (sshd.root / "INTEST" / "subfolder").mkdir()

    assert (sshd.root / "INTEST" / "FI.x").read_bytes() == content
    assert channel.size("INTEST/FI.x") == len(content)
    assert channel.size("INTEST/GO.x") == 0
    assert channel.size("INTEST/absent") is None
    assert channel.listdir("INTEST") == [
        ("FI.x", len(content)),
        ("FS.x", 9),
        ("GO.x", 0),
    ]

    back = tmp_path / "back.bin"
    back.write_bytes(b"old content, longer than the new one" * 10_000)
    assert channel.get_file("INTEST/FI.x", back) == len(content)
    assert back.read_bytes() == content
    empty = tmp_path / "go"
    assert channel.get_file("INTEST/GO.x", empty) == 0
    assert empty.read_bytes() == b""

    channel.remove("INTEST/FI.x")
    channel.remove("INTEST/FI.x")  # already gone: fine
    assert channel.size("INTEST/FI.x") is None
    with pytest.raises(RemoteNotFound):
        channel.get_file("INTEST/FI.x", tmp_path / "nothing")
    assert channel.connections_opened == 1


def test_put_replaces_an_existing_remote_file(channel: SftpChannel, sshd: SshServer) -> None:
    (sshd.root / "INTEST" / "x").write_bytes(b"a much longer previous content")
    channel.put_bytes(b"short", "INTEST/x")
    assert (sshd.root / "INTEST" / "x").read_bytes() == b"short"


def test_many_puts_use_one_connection(
    channel: SftpChannel, sshd: SshServer, tmp_path: Path
) -> None:
    names = [f"INTEST/FI.TEST.000001.20260101.{i:05d}.T.1.1" for i in range(40)]
    for i, name in enumerate(names):
        channel.put_bytes(f"<x>{i}</x>".encode(), name)
    channel.put_bytes(b"", "INTEST/GO.TEST.000001.20260101.00001.T.1")

    assert channel.connections_opened == 1
    assert sshd.connection_count() == 1
    opened = [path for op, path in sshd.sftp_operations() if op == "open"]
    assert opened == [*names, "INTEST/GO.TEST.000001.20260101.00001.T.1"]  # GO last


def test_one_stat_per_put_and_nothing_more(tmp_path: Path) -> None:
    with (
        SshServer(sftp_log_level="VERBOSE") as server,
        SftpChannel(settings_for(server, tmp_path)) as ch,
    ):
        before = len(server.sftp_operations())
        ch.put_bytes(b"<x/>", "INTEST/FI.x")
        ops = server.sftp_operations()[before:]
    assert ops == [("open", "INTEST/FI.x"), ("close", "INTEST/FI.x"), ("stat", "INTEST/FI.x")]


def test_refused_write_is_permission_denied(tmp_path: Path) -> None:
    with (
        SshServer(sftp_server_options=["-R"]) as server,  # a read-only SFTP server
        SftpChannel(settings_for(server, tmp_path)) as ch,
    ):
        with pytest.raises(RemotePermissionDenied, match="INTEST/x"):
            ch.put_bytes(b"data", "INTEST/x")
        assert ch.is_connected  # the session survives a refused request
        assert ch.size("INTEST/x") is None


def test_missing_remote_folder_is_permanent(channel: SftpChannel) -> None:
    with pytest.raises(RemoteNotFound, match="NOFOLDER/x"):
        channel.put_bytes(b"data", "NOFOLDER/x")
    assert channel.is_connected


# -- losing the server --------------------------------------------------------------------


def test_server_stopped_then_restarted(channel: SftpChannel, sshd: SshServer) -> None:
    channel.put_bytes(b"1", "INTEST/one")
    sshd.stop()
    with pytest.raises(TransportError) as lost:
        channel.put_bytes(b"2", "INTEST/two")
    assert not isinstance(lost.value, PermanentTransportError)
    with pytest.raises(TransportError, match="connection refused"):
        channel.ensure_connected()

    sshd.restart()
    channel.ensure_connected()
    assert channel.put_bytes(b"2", "INTEST/two") == 1
    assert channel.connections_opened == 2


def test_session_killed_mid_session(channel: SftpChannel, sshd: SshServer) -> None:
    channel.put_bytes(b"1", "INTEST/one")
    assert sshd.kill_sessions() > 0
    with pytest.raises(TransportError, match=f"connection to 127.0.0.1:{sshd.port} lost"):
        channel.put_bytes(b"2", "INTEST/two")
    channel.ensure_connected()
    channel.put_bytes(b"2", "INTEST/two")
    assert channel.connections_opened == 2
    assert sshd.connection_count() == 2


def test_server_that_stops_answering_times_out(sshd: SshServer, tmp_path: Path) -> None:
    ch = SftpChannel(settings_for(sshd, tmp_path, request_timeout=1.0))
    ch.connect()
    assert sshd.signal_sessions(signal.SIGSTOP) > 0  # connection open, nobody answers
    started = time.monotonic()
    with pytest.raises(TransportError, match="no answer within 1s"):
        ch.size("INTEST/x")
    assert time.monotonic() - started < 5
    assert not ch.is_connected
    ch.ensure_connected()  # the listener is fine: a new session works
    assert ch.size("INTEST/x") is None
    ch.close()


def test_stalled_banner_times_out(tmp_path: Path, sshd: SshServer) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)  # the kernel accepts; nobody ever says a word
        port = listener.getsockname()[1]
        settings = settings_for(sshd, tmp_path, port=port, connect_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            SftpChannel(settings).connect()
        elapsed = time.monotonic() - started
    assert not isinstance(caught.value, PermanentTransportError)
    assert 0.9 < elapsed < 5, elapsed


def test_stalled_banner_on_fetch_host_key_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        started = time.monotonic()
        with pytest.raises(TransportError):
            fetch_host_key("127.0.0.1", listener.getsockname()[1], timeout=1.0)
    assert time.monotonic() - started < 5


def test_channel_is_usable_from_two_threads(channel: SftpChannel) -> None:
    errors: list[BaseException] = []

    def work(prefix: str) -> None:
        try:
            for i in range(15):
                channel.put_bytes(prefix.encode() * i, f"INTEST/{prefix}{i}")
                assert channel.size(f"INTEST/{prefix}{i}") == i
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(channel.listdir("INTEST")) == 30


# -- RSA and the legacy ssh-rsa signature -------------------------------------------------


def test_rsa_key_on_a_server_accepting_only_ssh_rsa(tmp_path: Path) -> None:
    # Like the platform: RSA user keys only with SHA-1 "ssh-rsa" signatures. OpenSSH
    # still lists rsa-sha2-* in server-sig-algs, which paramiko would pick by default.
    with SshServer(pubkey_accepted_algorithms="ssh-rsa,ssh-ed25519") as server:
        key = tmp_path / "id_rsa"
        server.authorize(generate_key(key, "rsa"))
        modern = settings_for(server, tmp_path, private_key=key)
        with pytest.raises(AuthenticationFailed, match="legacy_ssh_rsa"):
            SftpChannel(modern).connect()
        with SftpChannel(dataclasses.replace(modern, legacy_ssh_rsa=True)) as ch:
            ch.put_bytes(b"x", "INTEST/x")
        assert server.connection_count() == 1


def test_rsa_key_with_legacy_flag_on_a_modern_server(sshd: SshServer, tmp_path: Path) -> None:
    key = tmp_path / "id_rsa"
    sshd.authorize(generate_key(key, "rsa", fmt="pem"))
    for legacy in (False, True):
        with SftpChannel(settings_for(sshd, tmp_path, private_key=key, legacy_ssh_rsa=legacy)):
            pass
    assert sshd.connection_count() == 2


# -- host keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("host_key_type", ["ed25519", "rsa"])
def test_fetch_host_key_fingerprint_matches_ssh_keygen(host_key_type: str, tmp_path: Path) -> None:
    with SshServer(host_key_type=host_key_type) as server:  # type: ignore[arg-type]
        key = fetch_host_key(server.host, server.port, timeout=5)
        assert fingerprint(key) == ssh_keygen_fingerprint(server.host_key_path)
        assert key.get_base64() == server.host_public_key_line.split()[1]
        assert server.connection_count() == 0  # nothing authenticated


def test_add_known_host_then_connect(sshd: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"
    key = fetch_host_key(sshd.host, sshd.port)
    add_known_host(known_hosts, sshd.host, sshd.port, key)
    add_known_host(known_hosts, sshd.host, sshd.port, key)  # no duplicate
    assert known_hosts.read_text() == f"[{sshd.host}]:{sshd.port} {sshd.host_public_key_line}\n"
    assert known_hosts.stat().st_mode & 0o777 == 0o644
    with SftpChannel(settings_for(sshd, tmp_path, known_hosts=known_hosts)) as ch:
        assert ch.is_connected

    # A different key of the same type for the same host is a change, not an addition.
    sshd.replace_host_key()
    with pytest.raises(HostKeyMismatch, match="remove it first"):
        add_known_host(known_hosts, sshd.host, sshd.port, fetch_host_key(sshd.host, sshd.port))
    assert len(known_hosts.read_text().splitlines()) == 1


def test_add_known_host_port_22_uses_the_bare_name(sshd: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("# comment without newline")
    key = fetch_host_key(sshd.host, sshd.port)
    add_known_host(known_hosts, "sftp.example.test", 22, key)
    assert known_hosts.read_text().splitlines() == [
        "# comment without newline",
        f"sftp.example.test {sshd.host_public_key_line}",
    ]


def test_revoked_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts")
    with known_hosts.open("a") as f:
        f.write(f"@revoked * {sshd.host_public_key_line}\n")
    with pytest.raises(HostKeyMismatch, match="REVOKED"):
        SftpChannel(settings_for(sshd, tmp_path)).connect()


# -- private keys -------------------------------------------------------------------------

SECRET = b"correct horse battery staple"


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
@pytest.mark.parametrize("fmt", ["openssh", "pem"])
@pytest.mark.parametrize("passphrase", [None, SECRET])
def test_load_private_key_formats(
    kind: str, fmt: str, passphrase: bytes | None, tmp_path: Path
) -> None:
    path = tmp_path / "key"
    public_line = generate_key(path, kind, passphrase=passphrase, fmt=fmt)  # type: ignore[arg-type]
    key = load_private_key(path, passphrase)
    assert key.can_sign()
    assert f"{key.get_name()} {key.get_base64()}" == " ".join(public_line.split()[:2])


def test_private_key_errors_name_the_file_never_the_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "key"
    generate_key(path, "ed25519", passphrase=SECRET)
    with capture_logs() as logs:
        with pytest.raises(PrivateKeyError) as wrong:
            load_private_key(path, b"not the passphrase")
        with pytest.raises(PrivateKeyError) as missing:
            load_private_key(path, None)
        with pytest.raises(PrivateKeyError) as absent:
            load_private_key(tmp_path / "absent", SECRET)
        garbage = tmp_path / "garbage"
        garbage.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
        with pytest.raises(PrivateKeyError) as damaged:
            load_private_key(garbage, SECRET)
    for caught, file in ((wrong, path), (missing, path), (absent, tmp_path / "absent")):
        assert str(file) in str(caught.value)
    assert "passphrase" in str(wrong.value) and "no passphrase" in str(missing.value)
    for caught in (wrong, missing, absent, damaged):
        assert isinstance(caught.value, PermanentTransportError)
        chain: BaseException | None = caught.value
        while chain is not None:  # nor in any exception it chains to
            assert SECRET.decode() not in str(chain)
            assert "not the passphrase" not in str(chain)
            chain = chain.__cause__ or chain.__context__
    assert SECRET.decode() not in repr(logs)


def test_connect_with_an_encrypted_key_keeps_the_passphrase_secret(
    sshd: SshServer, tmp_path: Path
) -> None:
    key = tmp_path / "id_ecdsa"
    sshd.authorize(generate_key(key, "ecdsa", passphrase=SECRET))
    settings = settings_for(sshd, tmp_path, private_key=key, passphrase=SECRET)
    assert SECRET.decode() not in repr(settings)
    with capture_logs() as logs:
        with SftpChannel(settings, channel_name="employer") as ch:
            ch.put_bytes(b"<x/>", "INTEST/x")
        with pytest.raises(AuthenticationFailed) as refused:
            other = tmp_path / "other"
            generate_key(other, "ed25519", passphrase=SECRET)
            SftpChannel(dataclasses.replace(settings, private_key=other)).connect()
    assert SECRET.decode() not in repr(logs)
    assert SECRET.decode() not in str(refused.value)


def test_server_without_the_known_key_type_is_a_mismatch(tmp_path: Path) -> None:
    with SshServer(host_key_type="rsa") as server:
        known_hosts = tmp_path / "known_hosts"
        other = generate_key(tmp_path / "other_host_key", "ed25519").split()
        known_hosts.write_text(f"[{server.host}]:{server.port} {other[0]} {other[1]}\n")
        with pytest.raises(HostKeyMismatch, match="ssh-ed25519"):
            SftpChannel(settings_for(server, tmp_path)).connect()
        assert server.connection_count() == 0
