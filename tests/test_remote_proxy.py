"""The way out through a company's proxy: real tinyproxy (HTTP CONNECT) and microsocks
(SOCKS5) on 127.0.0.1 between flad and a real sshd, and proxies that refuse or stall."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from flad import config as config_mod
from flad import journal
from flad.remote import PermanentTransportError, ProxySettings, SftpChannel, TransportError
from flad.remote.proxy import open_through
from tests import configs
from tests.harness import sample
from tests.proxies import MicroSocks, StallingProxy, TinyProxy, free_port
from tests.sandboxed import sandboxed_install
from tests.sshd import SshServer
from tests.test_cli import employer_channel, flad_process, write_config
from tests.test_remote_sftp import settings_for


def through(sshd: SshServer, tmp_path: Path, proxy: ProxySettings,
            **changes: object) -> SftpChannel:
    return SftpChannel(dataclasses.replace(settings_for(sshd, tmp_path), proxy=proxy,
                                           **changes))  # type: ignore[arg-type]


def test_http_connect_through_tinyproxy(sshd: SshServer, tmp_path: Path) -> None:
    with TinyProxy(tmp_path / "tinyproxy", sshd.port) as proxy:
        with through(sshd, tmp_path, ProxySettings(proxy.url)) as channel:
            assert channel.put_bytes(b"through the proxy", "IN/a") == 17
            assert ("a", 17) in channel.listdir("IN")
        log = (tmp_path / "tinyproxy" / "tinyproxy.log").read_text()
        assert f"CONNECT 127.0.0.1:{sshd.port}" in log or "Established connection" in log
    assert (sshd.root / "IN" / "a").read_bytes() == b"through the proxy"


def test_socks5_with_credentials_through_microsocks(sshd: SshServer, tmp_path: Path) -> None:
    with MicroSocks("flad", "s3cret") as proxy:
        good = ProxySettings(proxy.url, b"flad:s3cret")
        with through(sshd, tmp_path, good) as channel:
            assert channel.size("IN/nothing") is None
        wrong = ProxySettings(proxy.url, b"flad:wrong")
        channel = through(sshd, tmp_path, wrong)
        with pytest.raises(PermanentTransportError) as caught:
            channel.connect()
        channel.close()
        assert f"proxy {proxy.url}" in str(caught.value)
        assert "refused flad's credentials" in str(caught.value)
        assert "wrong" not in str(caught.value)  # the password is never shown


def test_a_proxy_that_refuses_the_destination(sshd: SshServer, tmp_path: Path) -> None:
    with TinyProxy(tmp_path / "tinyproxy", sshd.port + 1) as proxy:  # another port only
        channel = through(sshd, tmp_path, ProxySettings(proxy.url))
        with pytest.raises(TransportError) as caught:
            channel.connect()
        channel.close()
    assert not isinstance(caught.value, PermanentTransportError)  # retried with backoff
    assert f"through proxy {proxy.url}" in str(caught.value)
    assert "the proxy refused" in str(caught.value)


def test_a_stalling_proxy_is_cut_by_the_connect_timeout(sshd: SshServer,
                                                         tmp_path: Path) -> None:
    with StallingProxy() as proxy:
        channel = through(sshd, tmp_path, ProxySettings(proxy.url), connect_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(TransportError, match="no answer within 1s") as caught:
            channel.connect()
        channel.close()
        assert time.monotonic() - started < 5
        assert f"through proxy {proxy.url}" in str(caught.value)


def test_a_proxy_that_is_not_there(sshd: SshServer, tmp_path: Path) -> None:
    url = f"socks5://127.0.0.1:{free_port()}"
    channel = through(sshd, tmp_path, ProxySettings(url))
    with pytest.raises(TransportError, match="the proxy cannot be reached") as caught:
        channel.connect()
    channel.close()
    assert url in str(caught.value)


@pytest.mark.parametrize(("value", "problem"), [
    ("http://user:pw@proxy:3128", "credentials are never written in the configuration"),
    ("ftp://user:pw@proxy:21", "credentials are never written in the configuration"),
    ("https://proxy:3128", "must start with http:// or socks5://"),
    ("socks5://proxy", "must name a host and a port"),
    ("http://proxy:3128/path", "must be scheme://host:port and nothing more"),
])
def test_bad_proxy_addresses_are_refused_at_load(tmp_path: Path, value: str,
                                                 problem: str) -> None:
    ch = employer_channel(tmp_path)
    ch["sftp"]["proxy"] = value
    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.load(write_config(tmp_path, ch))
    assert any("proxy" in p and problem in p for p in caught.value.problems), caught.value
    assert "pw" not in str(caught.value.problems)


def test_proxy_credentials_come_from_a_private_file(tmp_path: Path) -> None:
    secret = tmp_path / "proxy-credentials"
    secret.write_text("flad:s3cret\n")
    os.chmod(secret, 0o600)
    ch = employer_channel(tmp_path)
    ch["sftp"].update(proxy="socks5://127.0.0.1:1080", proxy_credentials_file=secret)
    loaded = config_mod.load(write_config(tmp_path, ch)).channels[0].sftp
    assert loaded.proxy is not None and loaded.proxy.url == "socks5://127.0.0.1:1080"
    assert loaded.proxy.credentials == b"flad:s3cret"
    assert "s3cret" not in repr(loaded)
    os.chmod(secret, 0o644)
    with pytest.raises(config_mod.ConfigError, match="chmod 600"):
        config_mod.load(write_config(tmp_path, ch))


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_a_file_goes_to_its_receipt_through_a_proxy(tmp_path: Path, kind: str) -> None:
    """As a user would run it: flad run --once --wait-replies through the proxy."""
    with sandboxed_install(tmp_path) as (inst, sandbox):
        proxy = (TinyProxy(tmp_path / "tinyproxy", sandbox.port) if kind == "http"
                 else MicroSocks())
        with proxy:
            inst.channel["sftp"]["proxy"] = proxy.url
            configs.write(tmp_path, [inst.channel], **(inst.daemon or {}))
            inst.drop("a.xml", sample(1))
            done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "10",
                                "--wait-replies", "30")
            assert done.returncode == 0, done.stdout + done.stderr
            [sub] = inst.submissions()
            assert sub.state in (journal.ACKNOWLEDGED, journal.NOTIFIED)
            proxy.stop()  # the proxy is the only way: without it, nothing connects
            done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "2")
            assert "proxy" in done.stdout + done.stderr


def test_http_connect_keeps_what_the_server_says_right_after_the_answer() -> None:
    """SSH servers speak first: the banner may come in the proxy's answer's segment."""
    listener = socket.create_server(("127.0.0.1", 0))

    def proxy() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while not request.endswith(b"\r\n\r\n"):
                request += conn.recv(1)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-banner\r\n")
            conn.recv(10)

    thread = threading.Thread(target=proxy, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    sock = open_through(ProxySettings(url), "sftp.example", 8022, timeout=5)
    with sock:
        got = b""
        while not got.endswith(b"\r\n"):
            got += sock.recv(100)
        assert got == b"SSH-2.0-banner\r\n"
    thread.join(5)
    listener.close()


def test_http_connect_with_basic_credentials(sshd: SshServer, tmp_path: Path) -> None:
    with TinyProxy(tmp_path / "tinyproxy", sshd.port, basic_auth=("flad", "s3cret")) as proxy:
        with through(sshd, tmp_path, ProxySettings(proxy.url, b"flad:s3cret")) as channel:
            assert channel.size("IN/nothing") is None
        channel = through(sshd, tmp_path, ProxySettings(proxy.url, b"flad:wrong"))
        with pytest.raises(PermanentTransportError, match="refused flad's credentials"):
            channel.connect()
        channel.close()
