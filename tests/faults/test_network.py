"""Network faults between flad and the server: cut, stalled, slow, refused, restarted.

flad must recover by itself, never follow a partly written FI with a GO, and show the
channel's state and retries in its logs and in `flad status`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flad import journal
from flad.cli import main
from tests.faults.audit import audit_sending
from tests.faults.proxy import FaultyProxy
from tests.harness import Install, Running, make_install, sample, wait_for
from tests.sshd import SshServer


@pytest.fixture
def proxied(tmp_path: Path, sshd: SshServer) -> Iterator[tuple[Install, FaultyProxy]]:
    proxy = FaultyProxy(sshd.port)
    inst = make_install(tmp_path, sshd, poll_seconds=3600)
    (tmp_path / "known_hosts").write_text(
        f"[127.0.0.1]:{proxy.port} {sshd.host_public_key_line}\n")
    sftp = dict(inst.channel["sftp"], port=proxy.port, request_timeout=2,
                connect_timeout=2)
    inst.rewrite(sftp=sftp)
    try:
        yield inst, proxy
    finally:
        proxy.close()


def gos(inst: Install) -> list[str]:
    return [n for n in inst.remote() if n.startswith("GO.")]


def assert_every_go_has_its_whole_fi(inst: Install, sshd: SshServer) -> None:
    for sub in inst.submissions():
        if sub.go_name and (sshd.root / "INTEST" / sub.go_name).exists():
            assert sub.fi_name
            assert (sshd.root / "INTEST" / sub.fi_name).stat().st_size == sub.size


def test_cut_mid_transfer(proxied: tuple[Install, FaultyProxy], sshd: SshServer,
        scoreboard: Callable[..., None]) -> None:
    inst, proxy = proxied
    proxy.cut_after(3_000_000)  # inside the upload of the big file
    inst.drop("big.xml", sample(1, size=8_000_000))
    inst.drop("small.xml", sample(2))
    assert inst.run_once(max_wait=30) == 0
    assert proxy.cuts == 1 and proxy.connections >= 2
    assert len(gos(inst)) == 2
    assert_every_go_has_its_whole_fi(inst, sshd)
    result = audit_sending(inst, sshd, ["big.xml", "small.xml"])
    scoreboard(**result)
    assert result["lost"] == 0 and result["go_duplicates"] == 0


def test_stalled_server_is_detected_and_left(proxied: tuple[Install, FaultyProxy],
                                             sshd: SshServer,
        scoreboard: Callable[..., None]) -> None:
    inst, proxy = proxied
    with Running(inst):
        inst.drop("a.xml", sample(1))
        wait_for(lambda: len(gos(inst)) == 1, 15, "first GO")
        proxy.set_mode("stall")
        inst.drop("b.xml", sample(2, size=2_000_000))
        db = inst.journal()
        wait_for(lambda: any(c.state == "retrying" for c in db.channel_states()), 20,
                 "the stall noticed")
        db.close()
        proxy.cut_all()
        proxy.set_mode("pass")
        wait_for(lambda: len(gos(inst)) == 2, 30, "second GO")
    assert_every_go_has_its_whole_fi(inst, sshd)
    result = audit_sending(inst, sshd, ["a.xml", "b.xml"])
    scoreboard(**result)
    assert result["lost"] == 0 and result["go_duplicates"] == 0


def test_slow_link_still_delivers(proxied: tuple[Install, FaultyProxy],
                                  sshd: SshServer,
        scoreboard: Callable[..., None]) -> None:
    inst, proxy = proxied
    proxy.set_mode("slow", bytes_per_second=2_000_000)
    for i in range(3):
        inst.drop(f"f{i}.xml", sample(i, size=300_000))
    assert inst.run_once(max_wait=30) == 0
    assert len(gos(inst)) == 3 and proxy.connections == 1
    assert_every_go_has_its_whole_fi(inst, sshd)
    result = audit_sending(inst, sshd, [f"f{i}.xml" for i in range(3)])
    scoreboard(**result)
    assert result["lost"] == 0 and result["go_duplicates"] == 0


def test_refused_then_accepted_shows_in_status(proxied: tuple[Install, FaultyProxy],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    inst, proxy = proxied
    proxy.set_mode("refuse")
    with Running(inst):
        inst.drop("a.xml", sample(1))
        db = inst.journal()
        wait_for(lambda: any(c.state == "retrying" and c.attempts >= 2
                             for c in db.channel_states()), 20, "two retries")
        db.close()
        assert main(["status", "-c", str(inst.config_path)]) == 0
        out = capsys.readouterr().out
        assert "channel acme: RETRYING" in out
        proxy.set_mode("pass")
        wait_for(lambda: len(gos(inst)) == 1, 20, "GO after the refusals")
        wait_for(lambda: all(c.state == "connected" for c in inst.journal().channel_states()),
                 10, "channel back to connected")
    assert main(["status", "-c", str(inst.config_path)]) == 0
    assert "RETRYING" not in capsys.readouterr().out


def test_server_restarted_mid_batch(tmp_path: Path, sshd: SshServer,
        scoreboard: Callable[..., None]) -> None:
    inst = make_install(tmp_path, sshd, poll_seconds=3600)
    with Running(inst):
        for i in range(20):
            inst.drop(f"f{i:02d}.xml", sample(i, size=200_000))
        wait_for(lambda: len(gos(inst)) >= 3, 20, "a few GO")
        sshd.stop()
        time.sleep(1.5)
        sshd.start()
        wait_for(lambda: len(gos(inst)) == 20, 60, "all GO")
    assert {s.state for s in inst.submissions()} == {journal.SENT}
    go_opens = [p for op, p in sshd.sftp_operations() if op == "open" and "/GO." in p]
    assert len(go_opens) == 20
    assert_every_go_has_its_whole_fi(inst, sshd)
    result = audit_sending(inst, sshd, [f"f{i:02d}.xml" for i in range(20)])
    scoreboard(**result)
    assert result["lost"] == 0 and result["go_duplicates"] == 0
