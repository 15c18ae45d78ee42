"""The metrics endpoint of a running flad: every figure moves as files go through.

A real service (the sandbox platform, which answers with receipts and notifications,
and a channel whose server is down) is scraped over HTTP, as Prometheus would.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from flad import config as config_mod
from flad import journal, listen_address
from flad.cli.status import certificate_notices
from flad.metrics import kinds
from flad.remote import errors as remote_errors
from tests import configs
from tests.certs import issue_cert, make_ca, write_signer
from tests.harness import Running, make_install, sample, wait_for
from tests.sandboxed import sandboxed_install
from tests.sshd import SshServer


def get(url: str, accept: str = "") -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, _, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def matching(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
             **labels: str) -> list[float]:
    """The values of `name` whose labels include `labels` (others may differ)."""
    wanted = set(labels.items())
    return [v for (n, have), v in samples.items() if n == name and wanted <= have]


def port_of(running: Running) -> int:
    server = wait_for(lambda: running.service.metrics, 15, "the metrics endpoint")
    return int(server.port)


# -- the address -------------------------------------------------------------------

@pytest.mark.parametrize(("text", "host", "port", "loopback"), [
    ("127.0.0.1:9464", "127.0.0.1", 9464, True),
    ("[::1]:9464", "::1", 9464, True),
    ("localhost:0", "localhost", 0, True),
    ("0.0.0.0:9464", "0.0.0.0", 9464, False),
    ("metrics.example:9464", "metrics.example", 9464, False),
])
def test_listen_addresses_are_read(text: str, host: str, port: int, loopback: bool) -> None:
    address = listen_address.parse(text)
    assert (address.host, address.port, address.loopback) == (host, port, loopback)


@pytest.mark.parametrize("text", ["9464", ":9464", "127.0.0.1:99999", "::1:9464", "[::1]9464",
                                  "127.0.0.1:http"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(listen_address.AddressProblem):
        listen_address.parse(text)


def test_a_public_metrics_address_needs_to_be_asked_for(tmp_path: Path) -> None:
    channel = configs.channel(tmp_path, "acme")
    configs.write(tmp_path, [channel], metrics_listen="0.0.0.0:9464")
    with pytest.raises(config_mod.ConfigError) as refused:
        config_mod.load(tmp_path / "flad.toml")
    assert "not a loopback address" in str(refused.value)
    assert "metrics_listen_public = true" in str(refused.value)
    configs.write(tmp_path, [channel], metrics_listen="0.0.0.0:9464",
                  metrics_listen_public=True)
    address = config_mod.load(tmp_path / "flad.toml").daemon.metrics_listen
    assert address is not None and (address.host, address.port) == ("0.0.0.0", 9464)
    configs.write(tmp_path, [channel])
    assert config_mod.load(tmp_path / "flad.toml").daemon.metrics_listen is None  # off


@pytest.mark.parametrize(("reason", "kind"), [
    ("the same content was already sent as FI.X on 2026-01-01", "duplicate"),
    ("file is 30 bytes, larger than the limit of 10 bytes", "size"),
    ("not well-formed XML: line 1: Start tag expected, '<' not found", "xml"),
    ("Element 'Foo': This element is not expected. (XSD)", "schema"),
    ("the enterprise number 0123 is not allowed on this channel", "identity"),
    ("something new", "other"),
])
def test_rejection_reasons_become_a_few_classes(reason: str, kind: str) -> None:
    assert kinds.reason_class(reason) == kind
    assert kind in kinds.REASON_CLASSES


@pytest.mark.parametrize(("error", "kind"), [
    (remote_errors.HostKeyMismatch("host key changed"), "host_key"),
    (remote_errors.AuthenticationFailed("refused our key"), "auth"),
    (remote_errors.TransportError("cannot connect to 127.0.0.1:1: connection refused"),
     "refused"),
    (remote_errors.TransportError("cannot connect to h:22 through proxy http://p:3128: "
                                  "the proxy refused (403)"), "proxy"),
    (remote_errors.TransportError("cannot connect to h:22: timed out"), "timeout"),
    (remote_errors.TransportError("closed by the server (EOF)"), "closed"),
    (remote_errors.TransportError("something else"), "transient"),
])
def test_connection_failures_become_a_few_kinds(error: Exception, kind: str) -> None:
    assert kinds.failure_kind(error) == kind
    assert kind in kinds.FAILURE_KINDS


# -- a running service ---------------------------------------------------------------

def test_a_scrape_shows_every_figure_moving_as_files_go_through(tmp_path: Path) -> None:
    with sandboxed_install(tmp_path) as (inst, _sandbox):
        dead = configs.channel(tmp_path, "dead", quality="training_provider", port=1,
                               username="EXP_DEAD")
        dead["sftp"]["connect_timeout"] = 1
        configs.write(tmp_path, [inst.channel, dead], **{**(inst.daemon or {}),
                                                          "metrics_listen": "127.0.0.1:0"})
        started = time.time()
        with Running(inst) as running:
            port = port_of(running)
            assert get(f"http://127.0.0.1:{port}/healthz")[:1] == (200,)
            before = scrape(port)
            acme = {"channel": "acme", "environment": "test"}
            for name in ("flad_files_claimed_total", "flad_files_sent_total",
                         "flad_files_acknowledged_total", "flad_files_failed_total"):
                assert value(before, name, **acme) == 0, name  # a series from the start
            assert value(before, "flad_files_rejected_total", reason="xml", **acme) == 0
            [days] = matching(before, "flad_certificate_days_left", channel="acme",
                              role="signing")
            assert 363 < days <= 365

            inst.drop("good.xml", sample(1))
            inst.drop("broken.xml", b"<FLADeclaration><unclosed></FLADeclaration>")
            (tmp_path / "dead" / "outbox" / "test" / "fla").mkdir(parents=True, exist_ok=True)
            (tmp_path / "dead" / "outbox" / "test" / "fla" / "b.xml").write_bytes(sample(2))

            def answered() -> Any:
                now = scrape(port)
                return now if (value(now, "flad_files_acknowledged_total", **acme)
                               and value(now, "flad_connection_failures_total",
                                         channel="dead", kind="refused")
                               and value(now, "flad_queue_files", state="prepared",
                                         channel="dead", environment="test")) else None

            after = wait_for(answered, 60, "a receipt, a refused connection, a file waiting")
            assert value(after, "flad_files_claimed_total", **acme) == 2
            assert value(after, "flad_files_rejected_total", reason="xml", **acme) == 1
            assert value(after, "flad_files_sent_total", **acme) == 1
            assert value(after, "flad_files_acknowledged_total", **acme) == 1
            assert (value(after, "flad_uploaded_bytes_total", **acme) or 0) >= len(sample(1))
            assert value(after, "flad_upload_duration_seconds_count", channel="acme") == 1
            for name in ("flad_last_connection_success_timestamp_seconds",
                         "flad_last_reply_poll_success_timestamp_seconds"):
                assert (value(after, name, channel="acme") or 0) >= started, name
            assert value(after, "flad_last_connection_success_timestamp_seconds",
                         channel="dead") is None
            # the dead channel: its file numbered and waiting, getting older
            dead_test = {"channel": "dead", "environment": "test"}
            assert value(after, "flad_queue_files", state="prepared", **dead_test) == 1
            assert (value(after, "flad_oldest_unsent_age_seconds", **dead_test) or 0) > 0
            assert value(after, "flad_oldest_unsent_age_seconds", **acme) == 0
            assert value(after, "flad_channel_state", channel="dead", state="retrying") == 1
            assert value(after, "flad_channel_state", channel="acme", state="connected") == 1

            def with_notification() -> Any:
                now = scrape(port)
                return now if sum(matching(now, "flad_files_notified_total", **acme)) else None

            notified = wait_for(with_notification, 60, "a notification counted")
            results = {dict(labels)["result"]: v for (n, labels), v in notified.items()
                       if n == "flad_files_notified_total"}
            assert results == {"1": 1}, results  # ResultCode 1: no anomaly
            assert value(notified, "flad_oldest_without_receipt_age_seconds", **acme) == 0
            # scraping again counts nothing twice
            again = scrape(port)
            assert value(again, "flad_files_claimed_total", **acme) == 2
            assert value(again, "flad_files_sent_total", **acme) == 1
            # ready: acme connected, dead retrying within its backoff
            status, _, body = get(f"http://127.0.0.1:{port}/readyz")
            assert (status, body) == (200, "ready\n")
            status, content_type, text = get(f"http://127.0.0.1:{port}/metrics",
                                             accept="application/openmetrics-text")
            assert status == 200 and content_type.startswith("application/openmetrics-text")
            assert text.rstrip().endswith("# EOF")
            assert get(f"http://127.0.0.1:{port}/other")[0] == 404
        # stopped: the port is free again
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_a_busy_metrics_address_is_said_and_files_still_go(tmp_path: Path,
                                                           sshd: SshServer) -> None:
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        inst = make_install(tmp_path, sshd, metrics_listen=f"127.0.0.1:{port}")
        inst.drop("a.xml", sample(1))
        with capture_logs() as logged, Running(inst):
            wait_for(lambda: any(n.startswith("GO.") for n in inst.remote()), 20, "GO")
        said = [e for e in logged if e["event"] == "metrics_unavailable"]
        assert said and f"cannot listen on 127.0.0.1:{port}" in said[0]["error"]
    finally:
        holder.close()


# -- an expired signing certificate ------------------------------------------------

def _dated_signer(directory: Path, days_left: float) -> Any:
    ca = make_ca()
    now = dt.datetime.now(dt.UTC)
    issued = issue_cert(ca, "acme signer", not_before=now - dt.timedelta(days=400),
                        not_after=now + dt.timedelta(days=days_left))
    return write_signer(directory, issued, chain=[ca.certificate])


def test_an_expired_signing_certificate_holds_its_channel_only_until_reload(
        tmp_path: Path, sshd: SshServer, request: pytest.FixtureRequest) -> None:
    inst = make_install(tmp_path, sshd, sign_test_files=True, metrics_listen="127.0.0.1:0")
    expired = _dated_signer(tmp_path / "expired", -2)
    inst.channel["signing"] = {"certificate": expired.cert_path,
                               "private_key": expired.key_path}
    other = SshServer()  # the other channel: a server (and a login) of its own
    request.addfinalizer(other.close)
    other.start()
    beta_key = tmp_path / "beta_key"
    shutil.copy(other.client_key_path, beta_key)
    os.chmod(beta_key, 0o600)
    beta = configs.channel(tmp_path, "beta", quality="training_provider", port=other.port,
                           username=other.username, key=beta_key, sender_id="6401")
    beta["sftp"]["known_hosts"] = other.write_known_hosts(tmp_path / "beta_known_hosts")
    beta["sftp"]["connect_timeout"] = 3
    beta["poll_seconds"] = 0.5
    configs.write(tmp_path, [inst.channel, beta], **(inst.daemon or {}))
    inst.drop("a.xml", sample(1))
    (tmp_path / "beta" / "outbox" / "test" / "fla").mkdir(parents=True, exist_ok=True)
    (tmp_path / "beta" / "outbox" / "test" / "fla" / "b.xml").write_bytes(sample(2))

    with capture_logs() as logged, Running(inst) as running:
        port = port_of(running)
        wait_for(lambda: {s.channel: s.state for s in inst.submissions()}.get("beta")
                 == journal.SENT, 30, "beta's file sent")
        time.sleep(1.5)  # several turns of acme's loop: its file must still wait
        subs = {s.channel: s for s in inst.submissions()}
        assert subs["acme"].state == journal.RECEIVED, subs["acme"]
        assert not subs["acme"].error  # waiting, not refused
        loud = [e for e in logged if e["event"] == "certificate_expired"]
        assert [(e["log_level"], e["channel"]) for e in loud] == [("error", "acme")]
        assert "its files wait" in loud[0]["message"]
        figures = scrape(port)
        assert value(figures, "flad_channel_signing_held", channel="acme") == 1
        assert value(figures, "flad_channel_signing_held", channel="beta") == 0
        [days] = matching(figures, "flad_certificate_days_left", channel="acme",
                          role="signing")
        assert math.isclose(days, -2, abs_tol=0.1)
        status, _, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and "channel acme: signing held" in body
        header = certificate_notices(inst.config)
        assert any(line.startswith("ERROR: channel acme: the signing certificate")
                   and "EXPIRED" in line and "files wait" in line for line in header)

        fresh = _dated_signer(tmp_path / "renewed", 300)
        expired.cert_path.write_bytes(fresh.cert_path.read_bytes())
        expired.key_path.write_bytes(fresh.key_path.read_bytes())
        running.service.reload()
        wait_for(lambda: {s.channel: s.state for s in inst.submissions()}.get("acme")
                 == journal.SENT, 30, "acme's file sent after the reload")
        assert any(n.startswith("FS.") for n in inst.remote())
        wait_for(lambda: value(scrape(port), "flad_channel_signing_held", channel="acme")
                 == 0, 10, "the hold lifted in the metrics")


def test_a_reload_moves_or_stops_the_endpoint(tmp_path: Path, sshd: SshServer) -> None:
    import socket

    inst = make_install(tmp_path, sshd, metrics_listen="127.0.0.1:0")
    with Running(inst) as running:
        first = port_of(running)
        probe = socket.create_server(("127.0.0.1", 0))
        second = probe.getsockname()[1]
        probe.close()
        inst.daemon = {**(inst.daemon or {}), "metrics_listen": f"127.0.0.1:{second}"}
        inst.rewrite()
        running.service.reload()
        wait_for(lambda: running.service.metrics is not None
                 and running.service.metrics.port == second, 20, "the endpoint moved")
        assert get(f"http://127.0.0.1:{second}/healthz")[0] == 200
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{first}/healthz", timeout=2)
        del inst.daemon["metrics_listen"]
        inst.rewrite()
        running.service.reload()
        wait_for(lambda: running.service.metrics is None, 20, "the endpoint stopped")
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{second}/healthz", timeout=2)


def test_a_file_without_receipt_ages_in_the_metrics(tmp_path: Path, sshd: SshServer) -> None:
    """A plain SFTP server never answers: the file stays sent, its wait grows."""
    inst = make_install(tmp_path, sshd, metrics_listen="127.0.0.1:0")
    inst.drop("a.xml", sample(1))
    with Running(inst) as running:
        port = port_of(running)
        wait_for(lambda: [s.state for s in inst.submissions()] == [journal.SENT], 20, "sent")
        acme = {"channel": "acme", "environment": "test"}
        first = wait_for(lambda: value(scrape(port), "flad_oldest_without_receipt_age_seconds",
                                       **acme), 10, "an age")
        time.sleep(1.1)
        figures = scrape(port)
        later = value(figures, "flad_oldest_without_receipt_age_seconds", **acme)
        assert later is not None and later >= first + 1
        assert value(figures, "flad_queue_files", state="sent", **acme) == 1
        assert value(figures, "flad_files_acknowledged_total", **acme) == 0
