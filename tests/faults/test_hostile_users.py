"""A shared outbox written by a hostile payroll user (issue 15), with two real users.

flad runs as a service user; the attacker is a payroll user of the drop group, who
may write the drop folders (and, in the worst case tried here, the environment folder
above them). Each attack of the issue is tried as that user would, and each ends with
the same checks: no byte of a flad secret (the SSH key) or of the journal readable by
the payroll user, no file lost, none sent whose bytes differ from what was checked.

Needs root, useradd and runuser (the users are made here, and removed); skipped with
the reason otherwise. CI runs as root. The last tests need no second user: they drive
the claimer in this process (journal failure, a replaced folder, memory bounds).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flad import config as config_mod
from flad import journal as journal_mod
from flad import outbox, spool
from flad.journal import Journal
from tests.harness import Install, make_install, sample
from tests.sshd import SshServer
from tests.test_systemd_path import TOOLS, as_user, service_python, sh

_WHY_NOT = ("" if os.geteuid() == 0 and all(shutil.which(t) for t in TOOLS)
            else "needs root and useradd/groupadd/runuser to make a payroll and a service "
            "user")
needs_users = pytest.mark.skipif(bool(_WHY_NOT), reason=_WHY_NOT)
#: how long each race runs (the issue saw 2 leaks in about 2,000 tries)
RACE_SECONDS = 12.0 if os.environ.get("FLAD_FAULTS_FULL") == "1" else 5.0


@dataclass
class Host:
    inst: Install
    service: str
    payroll: str
    group: str

    @property
    def drop(self) -> Path:
        return self.inst.outbox / "test" / "fla"

    @property
    def key(self) -> Path:
        return self.inst.tmp / "client_key"

    @property
    def state(self) -> Path:
        return self.inst.tmp / "state"

    def python(self, user: str) -> str:
        return service_python(user, self.inst.tmp)

    def flad(self, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        who = user or self.service
        return as_user(who, self.python(who), "-m", "flad.cli", *argv, cwd=self.inst.tmp)

    def run_once(self, max_wait: float = 10) -> subprocess.CompletedProcess[str]:
        return self.flad("run", "--once", "-c", str(self.inst.config_path), "--max-wait",
                         str(max_wait))

    def attacker(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["runuser", "-u", self.payroll, "--", self.python(self.payroll), "-m",
             "tests.faults.hostile_attacker", *argv], cwd=self.inst.tmp, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=_env())

    def driver(self, name: str, seconds: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["runuser", "-u", self.service, "--", self.python(self.service), "-m",
             "tests.faults.hostile_driver", str(self.inst.config_path), name, str(seconds)],
            cwd=self.inst.tmp, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, env=_env())

    def journal_rows(self) -> list[journal_mod.Submission]:
        db = Journal(self.state / "journal.sqlite3")
        try:
            return db.submissions()
        finally:
            db.close()


def _env() -> dict[str, str]:
    from tests.test_systemd_path import _PYTHON_ENV
    return {**os.environ, "HOME": "/", **_PYTHON_ENV}


def _chown(path: Path, user: str, group: str | None, mode: int) -> None:
    shutil.chown(path, user, group)
    os.chmod(path, mode)


@pytest.fixture
def host(sshd: SshServer) -> Iterator[Host]:
    if _WHY_NOT:
        print(f"\nskipped: {_WHY_NOT}")
        pytest.skip(_WHY_NOT)
    tag = secrets.token_hex(3)
    group, service, payroll = f"fladtdrop{tag}", f"fladtsvc{tag}", f"fladtpay{tag}"
    made: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="flad-hostile-", dir="/tmp"))
    root.chmod(0o755)  # both users walk into it, as into /srv
    try:
        sh("groupadd", "--system", group)
        for user in (service, payroll):
            sh("useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
               "/nonexistent", "--shell", "/usr/sbin/nologin", "-G", group, user)
            made.append(user)
        inst = make_install(root, sshd, settle_seconds=0.2)
        # the service's own: keys, state; the configuration readable by it
        for secret in (inst.tmp / "client_key", inst.signer.key_path):
            _chown(secret, service, service, 0o600)
        inst.signer.key_path.parent.chmod(0o755)
        inst.signer.cert_path.chmod(0o644)
        inst.config_path.chmod(0o644)
        state = inst.tmp / "state"
        state.mkdir()
        _chown(state, service, service, 0o700)
        # the shared folders: the drop group writes the drop folders, and (the worst
        # case) the environment folder that holds them
        outbox_dir = inst.outbox
        (outbox_dir / "test" / "fla").mkdir(parents=True)
        _chown(outbox_dir, service, group, 0o2750)
        _chown(outbox_dir / "test", service, group, 0o2770)
        _chown(outbox_dir / "test" / "fla", service, group, 0o2770)
        inst.inbox.mkdir(parents=True)
        _chown(inst.inbox, service, group, 0o2750)
        yield Host(inst, service, payroll, group)
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", str(root / "acme" / "outbox" / "test" / "fla")],
                           capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
        for user in made:
            sh("userdel", user, check=False)
            sh("groupdel", user, check=False)
        sh("groupdel", group, check=False)


# -- the checks every attack ends with ----------------------------------------------------

_LEAK_PROBE = r"""
import json, os, sys
needles = [bytes.fromhex(h) for h in sys.argv[2:]]
found = []
for top, dirs, files in os.walk(sys.argv[1]):
    for name in files + dirs:
        path = os.path.join(top, name)
        try:
            with open(path, "rb") as f:   # as an attacker would: links followed
                data = f.read()
        except OSError:
            continue
        found += [path for n in needles if n in data]
print(json.dumps(found))
"""


def leaks(host: Host) -> list[str]:
    """Files under the installation that the payroll user can read and that hold a
    piece of flad's SSH key or of its journal."""
    key_lines = host.key.read_bytes().splitlines()
    needles = [key_lines[1][:40], b"SQLite format 3\x00"]
    probe = as_user(host.payroll, host.python(host.payroll), "-c", _LEAK_PROBE,
                    str(host.inst.tmp), *(n.hex() for n in needles), cwd=host.inst.tmp)
    assert probe.returncode == 0, probe.stderr
    found: list[str] = json.loads(probe.stdout)
    return found


def journal_is_whole(host: Host) -> None:
    db = sqlite3.connect(host.state / "journal.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


def sent_bytes(host: Host) -> dict[str, bytes]:
    """The FI files on the server, by name."""
    folder = host.inst.sshd.root / "INTEST"
    return {p.name: p.read_bytes() for p in folder.glob("FI.*")} if folder.exists() else {}


def every_sent_file_is_the_checked_one(host: Host) -> int:
    rows = {r.fi_name: r for r in host.journal_rows() if r.fi_name}
    sent = sent_bytes(host)
    for name, data in sent.items():
        assert name in rows, f"{name} on the server and not in the journal"
        assert hashlib.sha256(data).hexdigest() == rows[name].sha256, name
    return len(sent)


def no_internal_errors(host: Host) -> None:
    for row in host.journal_rows():
        assert "internal error" not in (row.error or ""), row.error
        assert "ELOOP" not in (row.error or ""), row.error


# -- the attacks ---------------------------------------------------------------------------

@needs_users
def test_a_drop_folder_swapped_for_a_link_to_the_state_folder_is_stopped(
        host: Host, scoreboard: Callable[..., Any]) -> None:
    """outbox/test/fla becomes a link to flad's state folder: before the issue, the
    journal and spool were moved into rejected/ and sequence numbers were reused."""
    os.chmod(host.state, 0o711)  # the worst case: the attacker can name the folder
    as_user(host.payroll, "mv", str(host.drop), str(host.drop) + ".old", cwd=host.inst.tmp)
    link = as_user(host.payroll, "ln", "-s", str(host.state), str(host.drop),
                   cwd=host.inst.tmp)
    assert link.returncode == 0, link.stderr
    first = host.run_once()
    assert first.returncode == 1, first.stderr  # `--once` says something was not taken
    assert "drop_folder_replaced" in first.stdout + first.stderr
    assert (host.state / "journal.sqlite3").exists()
    journal_is_whole(host)
    assert host.journal_rows() == []  # nothing of the state folder was taken
    assert not (host.inst.outbox / "rejected").exists() or not any(
        (host.inst.outbox / "rejected").rglob("*sqlite*"))
    second = host.run_once()  # the service still starts, the folder still stopped
    assert "drop_folder_replaced" in second.stdout + second.stderr
    assert leaks(host) == []
    scoreboard(dropped=0, sent=0, refused=0, lost=0)


@needs_users
def test_a_file_swapped_for_a_link_to_the_ssh_key_during_the_claim(
        host: Host, scoreboard: Callable[..., Any]) -> None:
    """Hundreds of drops, each swapped for a link to flad's SSH key (and a hard link
    tried) while the claimer runs as the service user; then the service checks and
    refuses what was taken. No byte of the key may end where the payroll user reads."""
    attack = host.attacker("swap", str(host.drop), "a.xml", str(host.key),
                           str(RACE_SECONDS))
    time.sleep(0.2)
    driver = host.driver("a.xml", RACE_SECONDS + 0.5)
    out, err = driver.communicate(timeout=RACE_SECONDS + 60)
    assert driver.returncode == 0, err
    a_out, a_err = attack.communicate(timeout=60)
    assert attack.returncode == 0, a_err
    race, swaps = json.loads(out.splitlines()[-1]), json.loads(a_out)
    assert swaps["swaps"] > 50 and race["tries"] > 50, (race, swaps)
    done = host.run_once(max_wait=30)
    assert done.returncode in (0, 1), done.stderr
    assert leaks(host) == []
    journal_is_whole(host)
    no_internal_errors(host)
    rows = host.journal_rows()
    assert rows and all(r.state == journal_mod.REJECTED for r in rows), rows[:3]
    for row in rows:  # what flad took as a file is the dropper's text, never the key
        rejected = Path(row.rejected_path or "")
        if rejected.is_file() and not rejected.is_symlink():
            assert b"PRIVATE KEY" not in rejected.read_bytes()
    links = [r for r in rows if "symbolic link" in (r.error or "")]
    scoreboard(dropped=swaps["swaps"], sent=0, refused=len(rows), lost=0)
    print(f"\n{race['tries']} claim tries, {swaps['swaps']} swaps, {len(rows)} taken, "
          f"{len(links)} links refused, {swaps['hard_links']} hard links made")


@needs_users
def test_the_link_swap_where_the_claim_is_a_copy_under_a_bind_mount(
        host: Host, scoreboard: Callable[..., Any]) -> None:
    """The drop folder bind-mounted on itself, as the unit's mounts made the state
    folder: the claim crosses mounts (EXDEV) and is a checked copy. A planted
    `.a.xml.partial` link to the journal, and the link swaps, change nothing."""
    mounted = subprocess.run(["mount", "--bind", str(host.drop), str(host.drop)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.strip()}")
    assert os.stat(host.drop).st_dev == os.stat(host.inst.outbox).st_dev  # same fs...
    probe = host.drop / "probe"
    probe.write_bytes(b"x")
    with pytest.raises(OSError):  # ...but another mount: a rename is refused
        os.rename(probe, host.inst.outbox / "probe")
    probe.unlink()
    journal_before = None
    host.run_once()  # makes the journal
    journal_before = (host.state / "journal.sqlite3").read_bytes()
    for planted in (host.drop / ".a.xml.partial",
                    host.inst.outbox / ".flad-spool" / "test" / "fla" / ".a.xml.partial"):
        with contextlib.suppress(OSError):
            as_user(host.payroll, "ln", "-s", str(host.state / "journal.sqlite3"),
                    str(planted), cwd=host.inst.tmp)
    attack = host.attacker("swap", str(host.drop), "a.xml", str(host.key),
                           str(RACE_SECONDS))
    time.sleep(0.2)
    driver = host.driver("a.xml", RACE_SECONDS + 0.5)
    out, err = driver.communicate(timeout=RACE_SECONDS + 60)
    assert driver.returncode == 0, err
    a_out, _ = attack.communicate(timeout=60)
    done = host.run_once(max_wait=30)
    assert done.returncode in (0, 1), done.stderr
    assert leaks(host) == []
    journal_is_whole(host)
    no_internal_errors(host)
    assert len((host.state / "journal.sqlite3").read_bytes()) >= len(journal_before) // 2
    rows = host.journal_rows()
    assert rows, (out, a_out)
    scoreboard(dropped=json.loads(a_out)["swaps"], sent=0, refused=len(rows), lost=0)


@needs_users
def test_a_newer_file_dropped_during_the_copy_is_never_lost(
        host: Host, scoreboard: Callable[..., Any]) -> None:
    """Across mounts (a copy), big drops replaced by newer ones while being copied:
    the newer file is never unlinked with the older one, and no copy of a file the
    dropper took back is left to be sent."""
    mounted = subprocess.run(["mount", "--bind", str(host.drop), str(host.drop)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.strip()}")
    log = host.inst.tmp / "attack.json"
    log.touch()
    _chown(log, host.payroll, None, 0o644)
    attack = host.attacker("replace", str(host.drop), "big.xml", str(RACE_SECONDS),
                           str(log))
    driver = host.driver("big.xml", RACE_SECONDS + 0.5)
    _, err = driver.communicate(timeout=RACE_SECONDS + 60)
    assert driver.returncode == 0, err
    _, a_err = attack.communicate(timeout=60)
    assert attack.returncode == 0, a_err
    # the last newer file: still in the drop folder, or taken
    last = json.loads(log.read_text())["last"]["big.xml"]
    left = host.drop / "big.xml"
    taken = {r.sha256 for r in host.journal_rows()}
    assert (left.exists() and hashlib.sha256(left.read_bytes()).hexdigest() == last) or (
        last in taken)
    # every spooled file is journaled with its own bytes: nothing unjournaled to send
    spool_dir = host.inst.outbox / ".flad-spool" / "test" / "fla"
    rows = {r.spool_path: r for r in host.journal_rows()}
    for path in spool_dir.iterdir():
        assert str(path) in rows, f"{path.name} in the spool and not in the journal"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == rows[str(path)].sha256
    scoreboard(dropped=json.loads(log.read_text())["drops"] * 2, sent=0,
               refused=0, lost=0)


@needs_users
def test_content_written_through_a_kept_descriptor_after_the_claim_is_not_sent(
        host: Host, scoreboard: Callable[..., Any]) -> None:
    """The dropper keeps a descriptor open and rewrites the file once flad took it:
    what is sent is what was checked, and `sent/` is flad's, not the dropper's."""
    first, then = sample(1), sample(2)
    (host.inst.tmp / "first.xml").write_bytes(first)
    (host.inst.tmp / "then.xml").write_bytes(then)
    go = host.inst.tmp / "go"
    attack = host.attacker("hold", str(host.drop), "held.xml", str(go),
                           str(host.inst.tmp / "first.xml"), str(host.inst.tmp / "then.xml"))
    deadline = time.monotonic() + 20
    while not (host.drop / "held.xml").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    driver = host.driver("held.xml", 1.0)  # the claim, as the service user
    assert driver.wait(timeout=60) == 0
    go.touch()  # now write other bytes through the descriptor kept open
    assert attack.wait(timeout=60) == 0
    done = host.run_once(max_wait=20)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = host.journal_rows()
    assert row.state == journal_mod.SENT and row.fi_name
    assert sent_bytes(host)[row.fi_name] == first
    assert every_sent_file_is_the_checked_one(host) == 1
    archived = host.inst.outbox / "sent" / "test" / row.fi_name
    assert archived.read_bytes() == first
    st = archived.stat()
    assert st.st_uid != _uid(host.payroll) and not st.st_mode & 0o022
    write = as_user(host.payroll, host.python(host.payroll), "-c",
                    f"open({str(archived)!r}, 'r+b')", cwd=host.inst.tmp)
    assert write.returncode != 0 and "Permission denied" in write.stderr
    assert leaks(host) == []
    scoreboard(dropped=1, sent=1, refused=0, lost=0)


def _uid(user: str) -> int:
    import pwd
    return pwd.getpwnam(user).pw_uid


@needs_users
def test_a_spooled_file_changed_after_the_check_is_refused_with_the_reason(
        host: Host, scoreboard: Callable[..., Any]) -> None:
    """Whatever changed the spool (a writer flad could not stop), the bytes are
    compared with the journal's sha256 before they are signed or sent."""
    (host.drop / "a.xml").write_bytes(sample(3))
    driver = host.driver("a.xml", 0.5)
    assert driver.wait(timeout=60) == 0
    (row,) = host.journal_rows()
    Path(row.spool_path).write_bytes(sample(4))  # root, standing for that writer
    done = host.run_once(max_wait=10)
    assert done.returncode in (0, 1)
    (row,) = host.journal_rows()
    assert row.state == journal_mod.REJECTED
    assert "changed after flad took it" in (row.error or "")
    assert sent_bytes(host) == {}
    scoreboard(dropped=1, sent=0, refused=1, lost=0)


@needs_users
def test_names_the_kernel_accepts_are_taken_or_refused_never_a_crash(
        host: Host, scoreboard: Callable[..., Any]) -> None:
    """`\\xff\\xfe.xml` (not UTF-8), a name with a newline and an escape sequence, and a
    name too long for the spool: each is taken or refused once, and a second start
    works; `flad status` shows them escaped."""
    drop = os.fsencode(host.drop)
    names = [b"\xff\xfe.xml", b"evil\n\x1b]0;owned\x07.xml", b"L" * 250 + b".xml"]
    for i, name in enumerate(names):
        path = drop + b"/" + name
        with open(path, "wb") as f:
            f.write(sample(10 + i))
        shutil.chown(path.decode("utf-8", "surrogateescape"), host.payroll, host.group)
        old = time.time() - 60
        os.utime(path, (old, old))
    first = host.run_once(max_wait=20)
    assert "Traceback" not in first.stderr + first.stdout, first.stderr
    second = host.run_once(max_wait=5)
    assert "Traceback" not in second.stderr + second.stdout, second.stderr
    rows = host.journal_rows()
    assert len(rows) == 3, [(r.drop_name, r.state, r.error) for r in rows]
    by_name = {r.drop_name: r for r in rows}
    assert by_name["\\xff\\xfe.xml"].state == journal_mod.SENT
    long_row = next(r for r in rows if r.drop_name.startswith("LLLL"))
    assert long_row.state == journal_mod.REJECTED and "bytes long" in (long_row.error or "")
    assert not os.path.lexists(drop + b"/" + names[2])
    status = host.flad("status", "-c", str(host.inst.config_path))
    assert "\x1b" not in status.stdout and "\\x1b" in status.stdout, status.stdout
    assert every_sent_file_is_the_checked_one(host) == 2
    scoreboard(dropped=3, sent=2, refused=1, lost=0)


# -- in this process: no second user needed ------------------------------------------------

def _install(tmp_path: Path, sshd: SshServer) -> tuple[Install, config_mod.Config, Journal]:
    inst = make_install(tmp_path, sshd)
    cfg = inst.config
    return inst, cfg, Journal(cfg.daemon.state_dir / "journal.sqlite3")


class _FailingOnce(Journal):
    fail = 1

    def add_received_many(self, rows: Any) -> list[int]:
        if self.fail:
            self.fail -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return super().add_received_many(rows)


def test_a_failed_journal_write_is_recorded_at_the_next_turn(tmp_path: Path,
                                                             sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    cfg = inst.config
    db = _FailingOnce(cfg.daemon.state_dir / "journal.sqlite3")
    try:
        claimed: list[outbox.Claimed] = []
        watcher = outbox.OutboxWatcher(cfg, outbox.Claimer(cfg, db), claimed.append)
        watcher.prepare_folders()
        path = inst.drop("a.xml", sample(1))
        watcher.consider(path, immediate=True)
        assert not path.exists() and db.submissions() == [] and watcher.claimer.unrecorded
        watcher.record_unrecorded()  # the watcher's next turn, not a restart
        (row,) = db.submissions()
        assert row.state == journal_mod.RECEIVED and row.drop_name == "a.xml"
        assert row.sha256 == hashlib.sha256(sample(1)).hexdigest()
        assert [c.submission_id for c in claimed] == [row.id]
    finally:
        db.close()


def test_a_drop_folder_replaced_by_another_folder_stops_that_folder(
        tmp_path: Path, sshd: SshServer) -> None:
    from structlog.testing import capture_logs

    inst, cfg, db = _install(tmp_path, sshd)
    try:
        with capture_logs() as seen:
            watcher = outbox.OutboxWatcher(cfg, outbox.Claimer(cfg, db), lambda c: None)
            watcher.prepare_folders()
            folder = inst.outbox / "test" / "fla"
            folder.rename(tmp_path / "elsewhere")
            folder.mkdir()
            path = inst.drop("a.xml", sample(1))
            watcher.consider(path, immediate=True)
            watcher.rescan()
        assert path.exists() and db.submissions() == []
        assert folder in watcher.claimer.stopped
        loud = [e for e in seen if e["event"] == "drop_folder_replaced"]
        assert len(loud) == 1 and loud[0]["log_level"] == "error"  # once, not per look
        other = inst.drop("b.xml", sample(2), env="simulation")  # the others go on
        watcher.consider(other, immediate=True)
        assert not other.exists() and len(db.submissions()) == 1
    finally:
        db.close()


def test_a_link_found_in_the_spool_is_a_refusal_with_a_reason(tmp_path: Path,
                                                              sshd: SshServer) -> None:
    """An entry renamed in that turns out to be a link (swapped between the look and
    the rename): refused, not 'internal error: ELOOP'."""
    inst, cfg, db = _install(tmp_path, sshd)
    try:
        claimer = outbox.Claimer(cfg, db)
        folders = outbox.drop_folders(cfg)
        fd = spool.open_spool(cfg.channels[0], "test", "fla")
        os.close(fd)
        spooled = spool.spool_dir(cfg.channels[0], "test", "fla")
        (spooled / ".claim-0123456789ab_x.xml").symlink_to(inst.tmp / "client_key")
        claimer.recover(folders)
        (row,) = db.submissions()
        assert row.state == journal_mod.REJECTED and "symbolic link" in (row.error or "")
        assert row.drop_name == "x.xml"
        assert (inst.outbox / "rejected" / "test" / "fla" / "x.xml").is_symlink()
    finally:
        db.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop a file as another user")
def test_a_crash_mid_copy_never_costs_the_original(tmp_path: Path, sshd: SshServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of another user is copied into flad's own; a crash in the copy leaves the
    claimed original and a partial `.copy-` file, never a torn file under the final name:
    recovery makes the copy again, whole, and journals the whole bytes (review finding:
    a torn final name was trusted and the original unlinked)."""
    from flad import taking

    inst, cfg, db = _install(tmp_path, sshd)
    whole = sample(7, 3 * 1024 * 1024)
    try:
        claimer = outbox.Claimer(cfg, db)
        (folder,) = [f for f in outbox.drop_folders(cfg) if f.environment == "test"]
        path = inst.drop("big.xml", whole)
        os.chown(path, 65534, 65534)  # the payroll system's file, not flad's
        real_read = taking._read
        spooled = spool.spool_dir(cfg.channels[0], "test", "fla")
        during: list[list[str]] = []

        def cut(src: int, out: int | None, keep_up_to: int) -> Any:
            if out is not None:
                os.write(out, whole[:1024 * 1024])  # a third written, then the crash
                during.append(sorted(os.listdir(spooled)))
                raise KeyboardInterrupt  # stands for SIGKILL: no clean-up is trusted
            return real_read(src, out, keep_up_to)

        monkeypatch.setattr(taking, "_read", cut)
        with pytest.raises(KeyboardInterrupt):
            claimer.claim_many(folder, [path])
        # while the copy is written, no name but hidden ones exists: a kill at that
        # moment leaves nothing recovery could take for a whole copy
        assert during and all(n.startswith(".") for n in during[0]), during
        left = sorted(os.listdir(spooled))
        assert not path.exists() and len(left) == 1 and left[0].startswith(".claim-")
        # the state a real kill leaves: the claimed original and a partial copy
        (spooled / (".copy-" + left[0][len(".claim-"):])).write_bytes(whole[:1024 * 1024])
        monkeypatch.setattr(taking, "_read", real_read)
        outbox.Claimer(cfg, db).recover(outbox.drop_folders(cfg))  # the next start
        (row,) = db.submissions()
        assert row.size == len(whole) and row.sha256 == hashlib.sha256(whole).hexdigest()
        (final,) = os.listdir(spooled)
        assert (spooled / final).read_bytes() == whole
        assert (spooled / final).stat().st_uid == os.geteuid()
    finally:
        db.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop a file as another user")
def test_a_claim_cut_by_a_full_disk_is_finished_without_a_restart(
        tmp_path: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry was renamed into the spool, the copy failed (ENOSPC): it has left the
    outbox, so the log says where it waits and the next turn takes it in."""
    import errno

    from structlog.testing import capture_logs

    from flad import taking

    inst, cfg, db = _install(tmp_path, sshd)
    try:
        claimed: list[outbox.Claimed] = []
        watcher = outbox.OutboxWatcher(cfg, outbox.Claimer(cfg, db), claimed.append)
        watcher.prepare_folders()
        path = inst.drop("a.xml", sample(3))
        os.chown(path, 65534, 65534)
        real_copy = taking._copy

        def full(*args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(taking, "_copy", full)
        with capture_logs() as seen:
            watcher.consider(path, immediate=True)
        assert not path.exists() and db.submissions() == []
        (line,) = [e for e in seen if e["event"] == "claim_not_finished"]
        assert "waits in the spool" in line["action"]
        assert watcher.claimer.unrecorded
        watcher.record_unrecorded()  # still full: waits, tried again at the rescan
        assert db.submissions() == [] and watcher.claimer.unfinished
        monkeypatch.setattr(taking, "_copy", real_copy)
        watcher.rescan()
        (row,) = db.submissions()
        assert row.drop_name == "a.xml" and row.sha256 == hashlib.sha256(sample(3)).hexdigest()
        assert [c.submission_id for c in claimed] == [row.id]
    finally:
        db.close()


def test_a_claim_batch_keeps_a_bounded_number_of_bytes(tmp_path: Path, sshd: SshServer,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    inst, cfg, db = _install(tmp_path, sshd)
    monkeypatch.setattr(outbox, "CLAIM_BATCH_BYTES", 1024 * 1024)
    try:
        claimer = outbox.Claimer(cfg, db)
        (folder,) = [f for f in outbox.drop_folders(cfg) if f.environment == "test"]
        paths = [inst.drop(f"{i}.xml", sample(i, 600 * 1024)) for i in range(4)]
        claimed = claimer.claim_many(folder, paths)
        assert all(c is not None for c in claimed)
        kept = sum(len(c.data or b"") for c in claimed if c is not None)
        assert 0 < kept <= 1024 * 1024
        rows = db.submissions()
        assert len(rows) == 4 and all(r.sha256 for r in rows)
    finally:
        db.close()


def test_an_inbox_folder_swapped_for_a_link_takes_no_reply(tmp_path: Path,
                                                           sshd: SshServer) -> None:
    """inbox/test a link to flad's state folder: the reply is not written through it,
    stays on the server, and is delivered once the folder is a folder again."""
    from structlog.testing import capture_logs

    from tests.replysets import acrf, poll, put_set

    inst = make_install(tmp_path, sshd)
    state = tmp_path / "flad-only"  # stands for the state folder (the journal is made there)
    state.mkdir()
    inst.inbox.mkdir(parents=True)
    (inst.inbox / "test").symlink_to(state)
    names = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    before = sorted(os.listdir(state))
    with capture_logs() as logged:
        assert poll(inst) == 0
    failure = next(e for e in logged if e["event"] == "reply_delivery_failed")
    assert "symbolic link" in failure["error"]
    assert sorted(os.listdir(state)) == before  # nothing written through the link
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == sorted(names)
    (inst.inbox / "test").unlink()
    assert poll(inst) == 1
    assert sorted(os.listdir(inst.inbox / "test")) == sorted(names)


def test_an_entry_that_cannot_be_moved_is_said_once_and_moved_once_it_can(
        tmp_path: Path, sshd: SshServer) -> None:
    """A folder dropped where files go, and rejected/ blocked: refused and journaled
    once, said once, not at every rescan; moved as soon as the way is free."""
    from structlog.testing import capture_logs

    inst, cfg, db = _install(tmp_path, sshd)
    try:
        folder = inst.outbox / "test" / "fla"
        folder.mkdir(parents=True)
        (folder / "dir.xml").mkdir()
        blocked = inst.outbox / "rejected" / "test" / "fla"
        blocked.parent.mkdir(parents=True)
        blocked.write_text("a file where the folder should be")
        with capture_logs() as logged:
            watcher = outbox.OutboxWatcher(cfg, outbox.Claimer(cfg, db), lambda c: None)
            watcher.prepare_folders()
            for _ in range(4):
                watcher.rescan()
        said = [e for e in logged if e["event"] == "claim_failed"]
        assert len(said) == 1 and "folder" in said[0]["reason"]
        assert len(db.submissions()) == 1
        blocked.unlink()
        watcher.rescan()
        assert (blocked / "dir.xml").is_dir() and not (folder / "dir.xml").exists()
        assert len(db.submissions()) == 1
    finally:
        db.close()
