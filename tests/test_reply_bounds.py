"""Bounded replies: too large or too little room, a set stays on the server and is said.

A real sshd, real folders, real files: a large reply is a sparse file on the server
(nothing is written to disk for it there) and flad's memory is read from /proc.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import structlog.testing

from flad import signing
from flad.channel.replies import MAX_READ_BYTES, ReplyPoller, mapped
from flad.cli import main
from flad.config import load
from flad.journal import Journal
from flad.remote import SftpChannel
from tests.certs import write_test_signer
from tests.harness import Install, make_install
from tests.replysets import DATE, acrf, put_set
from tests.sshd import SshServer

MIB = 1024 * 1024


def poll_as_configured(inst: Install, times: int = 1) -> tuple[int, ReplyPoller]:
    """Polls with the configuration's bounds, as the service and `flad replies` do; the
    sets delivered by them all, and the poller."""
    cfg = load(inst.config_path)
    db = Journal(cfg.daemon.state_dir / "journal.sqlite3")
    transport = SftpChannel(cfg.channels[0].sftp)
    try:
        poller = ReplyPoller(cfg.channels[0], db, transport,
                             min_free_bytes=cfg.daemon.min_free_bytes,
                             state_dir=cfg.daemon.state_dir)
        return sum(poller.poll() for _ in range(times)), poller
    finally:
        transport.close()
        db.close()


def sparse(path: Path, size: int, head: bytes = b"") -> None:
    with path.open("wb") as f:
        f.write(head)
        f.truncate(size)


def test_config_defaults_and_refusals(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    cfg = load(inst.config_path)
    assert cfg.channels[0].max_reply_bytes == 200 * MIB
    assert cfg.daemon.min_free_bytes == 1024 * MIB
    inst.rewrite(max_reply_bytes=0)
    with pytest.raises(Exception, match="max_reply_bytes: must be greater than 0"):
        load(inst.config_path)
    inst.rewrite(max_reply_bytes="big")
    with pytest.raises(Exception, match="max_reply_bytes: must be"):
        load(inst.config_path)


def test_a_reply_over_max_reply_bytes_stays_on_the_server(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    small = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    big = put_set(sshd, "NOTI", 2, b"")
    sparse(sshd.root / "OUTTEST" / big[0], 200 * MIB + 1)  # one byte over the default
    with structlog.testing.capture_logs() as logs:
        delivered, poller = poll_as_configured(inst, times=2)
    assert delivered == 1 and poller.held == 1
    too_large = [e for e in logs if e["event"] == "reply_too_large"]
    assert len(too_large) == 1  # the service keeps its poller: said once, not each poll
    assert too_large[0]["log_level"] == "error"
    assert big[0] in too_large[0]["reason"] and str(200 * MIB) in too_large[0]["reason"]
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == sorted(big)
    assert sorted(os.listdir(inst.inbox / "test")) == sorted(small)
    assert not [p for p in (inst.inbox / ".incoming").rglob("*") if not p.is_dir()]
    assert main(["status", "-c", str(inst.config_path)]) == 0
    out = capsys.readouterr().out
    assert "1 reply set(s) left on the server" in out
    assert f"OUTTEST/NOTI.999999.{DATE}.00002.T: reply_too_large: {big[0]}" in out
    # raised for this channel: fetched at the next poll, and gone from flad status
    inst.rewrite(max_reply_bytes=300 * MIB)
    delivered, poller = poll_as_configured(inst)
    assert delivered == 1 and poller.held == 0
    assert (inst.inbox / "test" / big[0]).stat().st_size == 200 * MIB + 1
    assert main(["status", "-c", str(inst.config_path)]) == 0
    assert "left on the server" not in capsys.readouterr().out


def test_flad_replies_exits_non_zero_while_a_set_is_held(tmp_path: Path, sshd: SshServer,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    inst = make_install(tmp_path, sshd)
    inst.rewrite(max_reply_bytes=1000)
    put_set(sshd, "ACRF", 1, acrf("GO.X") + b" " * 1000)
    assert main(["replies", "-c", str(inst.config_path)]) == 1
    assert "1 reply set(s) left on the server" in capsys.readouterr().err


def test_a_set_that_would_cross_the_free_space_floor_waits(tmp_path: Path,
                                                           sshd: SshServer) -> None:
    free = shutil.disk_usage(tmp_path).free
    # a floor 256 MiB under what is free now (other work on this disk moves it a little):
    # a receipt fits, a 1 GiB notification (sparse on the server) does not
    inst = make_install(tmp_path, sshd, min_free_bytes=max(0, free - 256 * MIB))
    inst.rewrite(max_reply_bytes=2048 * MIB)  # size alone would let it in
    first = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    big = put_set(sshd, "NOTI", 2, b"")
    sparse(sshd.root / "OUTTEST" / big[0], 1024 * MIB)
    with structlog.testing.capture_logs() as logs:
        delivered, poller = poll_as_configured(inst)
    assert (delivered, poller.held) == (1, 1), \
        f"free was {free}, is {shutil.disk_usage(tmp_path).free}"
    low = [e for e in logs if e["event"] == "reply_space_low"]
    assert len(low) == 1 and "min_free_bytes" in low[0]["reason"]
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == sorted(big)
    assert sorted(os.listdir(inst.inbox / "test")) == sorted(first)
    held = Journal(tmp_path / "state" / "journal.sqlite3", readonly=True)
    try:
        rows = held.replies_held()
    finally:
        held.close()
    assert [(r["folder"], r["reason"], r["size"]) for r in rows] == [
        ("OUTTEST", "reply_space_low", 1024 * MIB)]


def _rss_peak_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
    except OSError:
        return False
    return True


def test_a_large_reply_is_streamed_never_held_whole(tmp_path: Path, sshd: SshServer) -> None:
    """150 MiB of notification: downloaded, delivered, recorded, memory flat."""
    if not _reset_peak():
        pytest.skip("no /proc/self/clear_refs: the peak cannot be measured here")
    inst = make_install(tmp_path, sshd)
    names = put_set(sshd, "NOTI", 1, b"")
    size = 150 * MIB
    assert size > MAX_READ_BYTES
    sparse(sshd.root / "OUTTEST" / names[0], size, b"<NOTIFICATION>")
    _reset_peak()
    before = _rss_peak_kib()
    with structlog.testing.capture_logs() as logs:
        delivered, _ = poll_as_configured(inst)
    grown = _rss_peak_kib() - before
    assert delivered == 1
    assert (inst.inbox / "test" / names[0]).stat().st_size == size
    assert grown < 48 * 1024, f"the peak grew by {grown} KiB for a {size}-byte reply"
    assert any(e["event"] == "reply_not_read" for e in logs)
    db = Journal(tmp_path / "state" / "journal.sqlite3", readonly=True)
    try:
        other = db.replies(unmatched_only=True)
    finally:
        db.close()
    assert [r["file_name"] for r in other] == [names[0]]
    assert "larger than flad reads" in other[0]["summary"]


def test_a_mapped_reply_verifies_as_bytes_do(tmp_path: Path) -> None:
    """The FS of a large reply is checked on a view of the mapped file (no copy)."""
    platform = write_test_signer(tmp_path / "platform")
    signer = signing.load_signer_pem(platform.cert_path, platform.key_path)
    trusted = signing.load_certificates(platform.chain_path)
    data = acrf("GO.X") + b"<!-- padding -->" * 200_000
    path = tmp_path / "FO.reply"
    path.write_bytes(data)
    fs = signing.make_fs(data, signer)
    with mapped(path) as view:
        assert isinstance(view, memoryview)
        signing.verify_fs(view, fs, trusted=trusted)
    path.write_bytes(data[:-1] + b"!")
    with mapped(path) as view, pytest.raises(signing.SignatureInvalid):
        signing.verify_fs(view, fs, trusted=trusted)
    (tmp_path / "empty").write_bytes(b"")
    with mapped(tmp_path / "empty") as view:
        assert view == b""
