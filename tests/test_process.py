"""`flad run` as systemd runs it: a real process, signals, logs, the unit file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flad import journal
from tests.harness import make_install, sample, wait_for
from tests.sshd import SshServer, generate_key

ROOT = Path(__file__).parent.parent


def start(config: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "flad.cli", "run", "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **env})


def test_sigterm_stops_within_ten_seconds_and_sighup_reloads(tmp_path: Path,
                                                              sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    proc = start(inst.config_path)
    try:
        inst.drop("a.xml", sample(1))
        wait_for(lambda: any(s.state == journal.SENT for s in inst.submissions()), 20, "sent")

        # SIGHUP: a new application appears without a restart
        apps = inst.channel["application"] + [{"name": "dmfa", "code": "DMFA"}]
        inst.rewrite(application=apps)
        proc.send_signal(signal.SIGHUP)
        folder = inst.outbox / "test" / "dmfa"
        wait_for(folder.is_dir, 10, "the new drop folder")
        time.sleep(0.5)
        inst.drop("d.xml", sample(2), app="dmfa")
        wait_for(lambda: any(n.startswith("GO.DMFA.") for n in inst.remote()), 20, "DMFA GO")

        # a broken configuration is refused and the running one kept
        inst.config_path.write_text(inst.config_path.read_text() + "\n[oops\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        inst.drop("b.xml", sample(3))
        wait_for(lambda: len(inst.submissions()) == 3
                 and inst.submissions()[-1].state == journal.SENT, 20, "third file sent")
        assert proc.poll() is None

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in proc.stdout.read().decode().splitlines()
             if line.startswith("{")] if proc.stdout else []
    events = [e["event"] for e in lines]
    assert "config_reloaded" in events and "reload_refused" in events
    assert events[-1] == "service_stopped"
    claimed = next(e for e in lines if e["event"] == "file_claimed")
    assert claimed["channel"] == "acme" and "submission" in claimed
    go = next(e for e in lines if e["event"] == "go_sent")
    assert {"channel", "submission", "fi_name", "go_name", "duration_ms"} <= go.keys()


def test_no_secret_reaches_logs_or_errors(tmp_path: Path, sshd: SshServer) -> None:
    secret = "Sup3r-S3cret-Passphrase-4242"
    inst = make_install(tmp_path, sshd, production=True)
    key = tmp_path / "protected_key"
    sshd.authorize(generate_key(key, "ed25519", passphrase=secret.encode()))
    os.chmod(key, 0o600)
    pass_file = tmp_path / "ssh.pass"
    pass_file.write_text(secret)
    os.chmod(pass_file, 0o600)
    sftp = dict(inst.channel["sftp"], private_key=key, passphrase_file=pass_file)
    inst.rewrite(sftp=sftp)
    inst.drop("a.xml", sample(1), env="production")
    good = subprocess.run([sys.executable, "-m", "flad.cli", "run", "--once", "-c",
                           str(inst.config_path), "--log-format", "json"],
                          capture_output=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert secret.encode() not in good.stdout + good.stderr

    pass_file.write_text("wrong-" + secret)
    inst.drop("b.xml", sample(2), env="production")
    bad = subprocess.run([sys.executable, "-m", "flad.cli", "run", "--once", "-c",
                          str(inst.config_path), "--max-wait", "3", "--log-format", "json"],
                         capture_output=True, timeout=60)
    assert bad.returncode == 1
    output = bad.stdout + bad.stderr
    assert secret.encode() not in output
    assert b"channel_failed" in output and str(key).encode() in output
    status = subprocess.run([sys.executable, "-m", "flad.cli", "status", "-c",
                             str(inst.config_path), "--json"], capture_output=True, timeout=30)
    assert secret.encode() not in status.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "flad.service").read_text()
    flad = Path(sys.executable).parent / "flad"
    assert flad.exists()
    (tmp_path / "flad.service").write_text(unit.replace("/opt/flad/bin/flad", str(flad)))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "flad.service")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in unit and "NoNewPrivileges=yes" in unit


def test_systemd_notify_ready_watchdog_and_status(tmp_path: Path, sshd: SshServer) -> None:
    import socket

    inst = make_install(tmp_path, sshd)
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(15)
    proc = start(inst.config_path, NOTIFY_SOCKET=address, WATCHDOG_USEC="1000000")
    messages: list[str] = []
    try:
        while not {"READY=1", "WATCHDOG=1"} <= set(messages) or not any(
                m.startswith("STATUS=") for m in messages):
            messages.append(sock.recv(4096).decode())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        while "STOPPING=1" not in messages:
            messages.append(sock.recv(4096).decode())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert messages.index("READY=1") < messages.index("STOPPING=1")
    status = next(m for m in messages if m.startswith("STATUS="))
    assert "1 channel, 0 queued, 0 failed" in status
