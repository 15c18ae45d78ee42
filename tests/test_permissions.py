"""The permission model of a shared host (issue 15), with a real payroll user.

flad runs with umask 0077: its journal, spool and archive are its own. What payroll
reads (replies, refusals and their reasons) is 0640 with the drop group, in 0750
folders; drop folders flad makes are 0770; folders inherit the set-group-ID bit from a
set-group-ID parent, as under the shipped tmpfiles (`/srv/flad` 2750 flad:flad-drop).

The end-to-end test makes a real drop group and payroll user (root needed, skipped
otherwise) and reads as that user what flad left: every file payroll must read is
readable by it, and no byte of the journal, the spool or the archive is.
"""

from __future__ import annotations

import grp
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog.testing

from flad import filemodes
from tests.harness import Install, make_install, sample
from tests.replysets import acrf, put_set
from tests.sshd import SshServer

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("useradd", "userdel", "groupadd", "groupdel", "runuser")

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS),
    reason="needs root and useradd/groupadd/runuser to make a real payroll user")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# -- the two routines, alone ---------------------------------------------------------

def test_folders_get_their_mode_whatever_the_umask_and_keep_the_inherited_sgid(
        tmp_path: Path) -> None:
    shared = tmp_path / "srv"
    shared.mkdir()
    os.chmod(shared, 0o2750)  # as tmpfiles makes /srv/flad
    old = os.umask(filemodes.UMASK)
    try:
        made = filemodes.make_folders(shared / "acme" / "outbox" / "test" / "fla",
                                      filemodes.DROP_FOLDER)
        again = filemodes.make_folders(shared / "acme" / "outbox" / "test" / "fla",
                                       filemodes.DROP_FOLDER)
        assert os.umask(filemodes.UMASK) == filemodes.UMASK  # lowered for the mkdir only
        private = tmp_path / "state" / "spool"
        private.mkdir(parents=True)  # anything else flad makes: its own
    finally:
        os.umask(old)
    assert [p.name for p in made] == ["acme", "outbox", "test", "fla"] and again == []
    assert [_mode(p) for p in made] == [0o2750, 0o2750, 0o2750, 0o2770]
    assert _mode(private) == 0o700 and _mode(private.parent) == 0o700
    # the set-group-ID bit only ever comes from the parent: RestrictSUIDSGID= refuses it
    with pytest.raises(ValueError, match="set-ID"):
        filemodes.make_folders(tmp_path / "x", 0o2770)
    assert not (tmp_path / "x").exists()


def test_share_file_gives_the_folder_group_and_never_follows_a_link(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    mine = folder / "FO.ACRF.999999.20260101.00001.T"
    mine.write_bytes(b"<ACRF/>")
    os.chmod(mine, 0o600)
    assert filemodes.share_file(mine, folder)
    assert _mode(mine) == 0o640 and mine.stat().st_gid == folder.stat().st_gid
    secret = tmp_path / "secret"
    secret.write_bytes(b"key")
    os.chmod(secret, 0o600)
    link = folder / "link"
    link.symlink_to(secret)
    assert not filemodes.share_file(link, folder)
    assert _mode(secret) == 0o600  # the link's target was not touched


def test_the_service_says_at_start_what_is_too_open(tmp_path: Path,
                                                     sshd: SshServer) -> None:
    """For the admin who reads the logs and never runs flad check."""
    inst = make_install(tmp_path, sshd)
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    with structlog.testing.capture_logs() as logs:
        assert inst.run_once() == 0
    said = [e for e in logs if e["event"] == "permissions_too_open"]
    assert any(e["subject"] == "daemon.state_dir" and e["warning"].endswith(f"chmod 700 {state}")
               for e in said), said


# -- end to end, with a real payroll user --------------------------------------------

@dataclass(frozen=True)
class Users:
    drop_group: str
    payroll: str


@pytest.fixture(name="users")
def real_users() -> Iterator[Users]:
    tag = secrets.token_hex(3)
    group, payroll = f"fladdrop{tag}", f"fladpay{tag}"
    made: list[tuple[str, str]] = []

    def sh(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    try:
        sh("groupadd", "--system", group)
        made.append(("group", group))
        sh("useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
           "/nonexistent", "--shell", "/usr/sbin/nologin", "-G", group, payroll)
        made.append(("user", payroll))
        yield Users(group, payroll)
    finally:
        for kind, name in reversed(made):
            if kind == "user":
                subprocess.run(["userdel", name], capture_output=True, timeout=60)
            subprocess.run(["groupdel", name], capture_output=True, timeout=60)


def as_payroll(users: Users, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", users.payroll, "--", *argv], capture_output=True,
                          text=True, timeout=60, cwd="/", stdin=subprocess.DEVNULL)


def flad_run_once(inst: Install) -> subprocess.CompletedProcess[str]:
    """`flad run --once` as a real process: the umask is the command's own."""
    return subprocess.run([sys.executable, "-m", "flad.cli", "run", "-c", str(inst.config_path),
                           "--once", "--max-wait", "20"], capture_output=True, text=True,
                          timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)


@pytest.fixture(name="walkable")
def walkable_root() -> Iterator[Path]:
    """A test folder the payroll user may walk into, as into / (pytest's are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="flad-perms-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@needs_root
def test_payroll_reads_its_replies_and_refusals_and_nothing_of_flads(
        walkable: Path, sshd: SshServer, users: Users) -> None:
    inst = make_install(walkable, sshd)
    drop_gid = grp.getgrnam(users.drop_group).gr_gid
    channel_dir = inst.outbox.parent  # /srv/flad/<channel> stands here
    os.chown(channel_dir, 0, drop_gid)
    os.chmod(channel_dir, 0o2750)
    state = walkable / "state"

    # flad makes the drop folder at its first start: the drop group can write into it
    done = flad_run_once(inst)
    assert done.returncode == 0, done.stderr
    drop = inst.outbox / "test" / "fla"
    assert (_mode(drop), drop.stat().st_gid) == (0o2770, drop_gid)
    assert _mode(state) == 0o700

    wrote = as_payroll(users, "sh", "-c", f"umask 0027; cat > {drop}/.good.tmp && "
                       f"mv {drop}/.good.tmp {drop}/good.xml")
    assert wrote.returncode == 0, wrote.stderr
    inst.drop("bad.xml", b"<not-closed>")  # dropped by someone else, refused
    put_set(sshd, "ACRF", 1, acrf("GO.X"))
    (drop / "good.xml").write_bytes(sample(1))
    done = flad_run_once(inst)
    assert done.returncode == 0, done.stderr

    replies = sorted((inst.inbox / "test").iterdir())
    assert replies, "the reply set was delivered"
    refused = sorted((inst.outbox / "rejected").rglob("bad.xml*"))
    assert [p.name for p in refused] == ["bad.xml", "bad.xml.reason.txt"]
    for folder in (inst.inbox, inst.inbox / "test", refused[0].parent):
        assert (_mode(folder) & 0o777, folder.stat().st_gid) == (0o750, drop_gid), folder
    for path in [*replies, refused[1]]:
        assert (_mode(path), path.stat().st_gid) == (0o640, drop_gid), path
    for path in [*replies, *refused]:
        read = as_payroll(users, "cat", str(path))
        assert read.returncode == 0 and read.stdout == path.read_text(), (path, read.stderr)

    # flad's own: the journal and the spool; the archive under sent/ is never payroll's
    own = [p for p in state.rglob("*") if p.is_file()]
    own += [p for p in (inst.outbox / ".flad-spool").rglob("*") if p.is_file()]
    assert any(p.name == "journal.sqlite3" for p in own)
    for path in own:
        assert _mode(path) & 0o077 == 0, path
        read = as_payroll(users, "cat", str(path))
        assert read.returncode != 0 and read.stdout == "", path
    assert as_payroll(users, "ls", str(state)).returncode != 0
    assert as_payroll(users, "ls", str(inst.outbox / ".flad-spool")).returncode != 0
    archived = [p for p in (inst.outbox / "sent").rglob("*") if p.is_file()]
    assert archived
    for path in archived:
        assert path.stat().st_uid == os.geteuid() and _mode(path) & 0o022 == 0, path
        changed = as_payroll(users, "sh", "-c", f"echo x >> {path}")
        assert changed.returncode != 0, path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder another group")
def test_a_file_moved_where_payroll_reads_gets_the_folders_group(tmp_path: Path) -> None:
    """A file made in the spool under flad's group, archived into sent/ (the drop
    group's): it takes the folder's group, or payroll could not read its 0640."""
    from flad import spool as spool_mod

    source_dir, target_dir = tmp_path / "spool", tmp_path / "sent"
    source_dir.mkdir(mode=0o700)
    target_dir.mkdir(mode=0o750)
    os.chown(target_dir, -1, 65534)
    source = source_dir / "FI.x"
    source.write_bytes(b"<x/>")
    os.chown(source, -1, 0)
    spool_mod.move_file(source, target_dir / "FI.x")
    st = (target_dir / "FI.x").stat()
    assert st.st_gid == 65534 and stat.S_IMODE(st.st_mode) == 0o640
