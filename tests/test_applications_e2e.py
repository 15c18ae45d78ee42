"""A DmfA from drop to receipt through the sandbox, in the test and the S environments.

Real parts: flad's service in a thread, the sandbox platform on 127.0.0.1 (with the
official DmfA schema for the code DMFA when ../shared/platform is there), real keys
and a real signing certificate; and the OpenSSH fixture, which has no S folders.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from flad import config as config_mod
from flad.daemon import Service
from flad.journal import Journal, Submission
from flad.sandbox import Sandbox, start_sandbox
from tests import configs
from tests import declarations as decl
from tests.certs import write_test_signer
from tests.harness import make_install, sample, wait_for
from tests.sshd import SshServer


def dmfa_app() -> dict[str, Any]:
    table: dict[str, Any] = {"name": "dmfa", "profile": "dmfa"}
    xsd = decl.official_xsd("dmfa")
    if xsd is not None:
        table["xsd"] = xsd
    return table


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Sandbox, dict[str, Any]]]:
    """The sandbox, and a channel configured for it the way a new user would."""
    key = ed25519.Ed25519PrivateKey.generate()
    key_path = tmp_path / "id_ed25519"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    signer = write_test_signer(tmp_path / "signer")
    xsds = {"DMFA": path} if (path := decl.official_xsd("dmfa")) is not None else {}
    sandbox = start_sandbox(tmp_path / "platform", authorized_keys=[public],
                            client_cert=signer.cert_path, notify_delay=0.2,
                            poll_interval=0.05, settle_seconds=0.1, xsds=xsds,
                            sender_id="6400")
    channel = configs.channel(
        tmp_path, "acme", host=sandbox.host, port=sandbox.port, username="flad",
        key=key_path, noss_number=decl.NOSS_TEST, poll_seconds=0.3,
        signing={"certificate": signer.cert_path, "private_key": signer.key_path},
        application=[dmfa_app()])
    channel["sftp"]["known_hosts"] = sandbox.known_hosts_path
    try:
        yield sandbox, channel
    finally:
        sandbox.stop()


def drop(outbox: Path, env: str, name: str, data: bytes) -> None:
    folder = outbox / env / "dmfa"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f".{name}.tmp").write_bytes(data)
    os.rename(folder / f".{name}.tmp", folder / name)


def submissions(state_dir: Path) -> list[Submission]:
    journal = Journal(state_dir / "journal.sqlite3")
    try:
        return journal.submissions()
    finally:
        journal.close()


def test_a_dmfa_goes_from_drop_to_receipt_in_test_and_s(
        tmp_path: Path, platform: tuple[Sandbox, dict[str, Any]]) -> None:
    sandbox, channel = platform
    config_path = configs.write(tmp_path, [channel], settle_seconds=0.2, rescan_seconds=0.5,
                                max_backoff_seconds=1, log_format="json")
    outbox, inbox = Path(channel["outbox"]), Path(channel["inbox"])
    quarter = decl.dmfa(((decl.NOSS_TEST, "0"),), workers=3)
    drop(outbox, "test", "q3.xml", quarter)
    drop(outbox, "simulation", "q3.xml", quarter)  # the same file, in the S environment
    service = Service(config_mod.load(config_path), install_signals=False)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        done = wait_for(lambda: [s for s in submissions(tmp_path / "state")
                                 if s.state == "notified"], timeout=40,
                        what="both DmfAs notified")
        while len(done) < 2:
            done = wait_for(lambda: [s for s in submissions(tmp_path / "state")
                                     if s.state == "notified"], timeout=40)
    finally:
        service.stop()
        thread.join(15)
    by_env = {s.environment: s for s in submissions(tmp_path / "state")}
    assert set(by_env) == {"test", "simulation"}
    for env, letter in (("test", "T"), ("simulation", "S")):
        sub = by_env[env]
        assert sub.state == "notified" and sub.receipt_result == 1, sub
        assert sub.fi_name is not None and sub.fi_name.startswith("FI.DMFA.006400.")
        assert sub.fi_name.endswith(f".{letter}.1.1") and sub.fs_name is None  # not signed
        replies = sorted(p.name for p in (inbox / env).iterdir() if not p.name.startswith("."))
        assert any(n.startswith("FO.ACRF.") and n.endswith(f".{letter}") for n in replies)
        assert any(n.startswith("GO.NOTI.") for n in replies)
    # the S set went to INTEST-S and was answered in OUTTEST-S
    processed = {p.name for p in (sandbox.root / ".sandbox" / "processed").rglob("GO.*")}
    assert by_env["simulation"].go_name in processed
    assert any(p.parent.name.endswith("-INTEST-S")
               for p in (sandbox.root / ".sandbox" / "processed").rglob("GO.*.S.1"))


def test_a_server_without_s_folders_serves_the_other_environments(
        tmp_path: Path, sshd: SshServer) -> None:
    assert not (sshd.root / "INTEST-S").exists()
    install = make_install(tmp_path, sshd)
    install.drop("t.xml", sample(1))
    install.drop("s.xml", sample(2), env="simulation")
    install.run_once()
    by_env = {s.environment: s for s in install.submissions()}
    assert by_env["test"].state == "sent" and by_env["test"].go_name in install.remote("INTEST")
    failed = by_env["simulation"]
    assert failed.state == "failed", failed
    assert failed.error is not None and "has no INTEST-S folder" in failed.error
    assert failed.fi_name is not None and failed.fi_name.endswith(".S.1.1")


def test_replies_of_the_s_environment_and_dates_later_than_today(
        tmp_path: Path, sshd: SshServer) -> None:
    import datetime

    import structlog.testing

    from tests.replysets import acrf, poll, put_set

    install = make_install(tmp_path, sshd)
    (sshd.root / "OUTTEST-S").mkdir()  # a server that has the S folders
    s_names = put_set(sshd, "ACRF", 1, acrf("GO.X"), folder="OUTTEST-S", env="S")
    later = (datetime.date.today() + datetime.timedelta(days=3)).strftime("%Y%m%d")
    early = put_set(sshd, "ACRF", 2, acrf("GO.Y"))
    for name in early:  # the same set, dated three days from now
        os.rename(sshd.root / "OUTTEST" / name,
                  sshd.root / "OUTTEST" / name.replace(".20261127.", f".{later}."))
    with structlog.testing.capture_logs() as logs:
        assert poll(install) == 1
    assert sorted(os.listdir(install.inbox / "simulation")) == sorted(s_names)
    skipped = [e for e in logs if e["event"] == "reply_name_skipped"]
    assert len(skipped) == 3 and all("(ACRF-111)" in e["reason"] for e in skipped)
    assert len(os.listdir(sshd.root / "OUTTEST")) == 3  # left on the server
