"""`flad check` names every place the shared-host model is not kept, and its fix (issue 15).

Real folders with real modes; the second test makes a real drop group and payroll user
(root needed, skipped otherwise). Each warning's own command is run, and the warning
must be gone after it: a fix that does not fix is caught here.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flad import sharedhost
from flad.cli import checkup
from flad.config import load
from tests import configs


def _install(tmp: Path) -> Path:
    config = configs.write(tmp, [configs.channel(tmp)])
    os.chmod(config, 0o600)
    for folder in ("acme/outbox/test/fla", "acme/outbox/rejected/test/fla", "acme/inbox/test",
                   "state/spool"):
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    for folder in ("acme/outbox", "acme/outbox/test", "acme/outbox/test/fla",
                   "acme/outbox/rejected", "acme/outbox/rejected/test",
                   "acme/outbox/rejected/test/fla", "acme/inbox", "acme/inbox/test"):
        os.chmod(tmp / folder, 0o750)
    os.chmod(tmp / "state", 0o700)
    (tmp / "state" / "journal.sqlite3").write_bytes(b"")
    os.chmod(tmp / "state" / "journal.sqlite3", 0o600)
    return config


def _lines(config: Path) -> list[str]:
    return [line for _, line in sharedhost.exposure(load(config))]


def _fix(line: str) -> None:
    command = line.split("fix it with: ", 1)[1]
    subprocess.run(shlex.split(command), check=True, capture_output=True, timeout=30)


def test_a_tidy_installation_has_nothing_to_say(tmp_path: Path) -> None:
    assert _lines(_install(tmp_path)) == []


def test_open_modes_are_each_named_with_the_chmod_that_closes_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _install(tmp_path)
    drop = tmp_path / "acme" / "outbox" / "test" / "fla"
    state = tmp_path / "state"
    journal = state / "journal.sqlite3"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    os.chmod(drop, 0o777)
    os.chmod(tmp_path / "acme" / "inbox", 0o755)
    os.chmod(state, 0o755)
    os.chmod(journal, 0o644)
    os.chmod(config, 0o644)
    os.chmod(known_hosts, 0o666)
    lines = _lines(config)
    expected = {
        f"chmod o-w {drop}": "is writable by every local user",
        f"chmod o-rwx {tmp_path / 'acme' / 'inbox'}": "is open to every local user",
        f"chmod 700 {state}": "is open to every local user",
        f"chmod 600 {journal}": "is readable by others than flad",
        f"chmod o-r {config}": "configuration",
        f"chmod go-w {known_hosts}": "known_hosts",
    }
    for fix, said in expected.items():
        matching = [line for line in lines if line.endswith(fix)]
        assert len(matching) == 1 and said in matching[0], (fix, lines)
    assert len(lines) == len(expected), lines
    assert all("\n" not in line for line in lines)

    # flad check shows them as warnings (exit 0: nothing stops flad from working)
    code = checkup_main(capsys, config)
    out = capsys.readouterr().out
    assert code == 0
    assert sum(line.startswith("WARNING") and "fix it with: chmod" in line
               for line in out.splitlines()) == len(expected)

    for line in lines:
        _fix(line)
    assert _lines(config) == []


def test_the_drop_group_writes_the_drop_folders_and_nothing_else(tmp_path: Path) -> None:
    """A writable outbox root would let payroll rename flad's spool away or plant its own
    sent/ and rejected/; a writable inbox, replies of its own (review finding)."""
    config = _install(tmp_path)
    outbox, inbox = tmp_path / "acme" / "outbox", tmp_path / "acme" / "inbox"
    for folder in (outbox, outbox / "test", outbox / "test" / "fla", outbox / "rejected",
                   inbox / "test"):
        os.chmod(folder, 0o770)
    lines = _lines(config)
    flagged = {line.split("fix it with: ", 1)[1] for line in lines}
    assert flagged == {f"chmod g-w {f}" for f in (outbox, outbox / "test",
                                                  outbox / "rejected", inbox / "test")}
    assert all("writable by the drop group" in line for line in lines)
    for line in lines:
        _fix(line)
    assert _lines(config) == []
    assert os.stat(outbox / "test" / "fla").st_mode & 0o020  # the drop folder stays


def checkup_main(capsys: pytest.CaptureFixture[str], config: Path) -> int:
    from flad.cli import main

    capsys.readouterr()
    return main(["check", "-c", str(config), "--offline"])


# -- with a real drop group and payroll user ----------------------------------------

TOOLS = ("useradd", "userdel", "groupadd", "groupdel")


@pytest.fixture(name="payroll")
def payroll_user() -> Iterator[tuple[str, str]]:
    """(drop group, payroll user in it), made for the test and removed afterwards."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS):
        pytest.skip("needs root and useradd/groupadd to make a real drop group and user")
    tag = secrets.token_hex(3)
    group, user = f"fladdrop{tag}", f"fladpay{tag}"
    subprocess.run(["groupadd", "--system", group], check=True, capture_output=True)
    try:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        "-G", group, user], check=True, capture_output=True)
        try:
            yield group, user
        finally:
            subprocess.run(["userdel", user], capture_output=True)
            subprocess.run(["groupdel", user], capture_output=True)
    finally:
        subprocess.run(["groupdel", group], capture_output=True)


def test_what_the_drop_group_or_a_payroll_user_could_do_is_named(
        tmp_path: Path, payroll: tuple[str, str]) -> None:
    group, user = payroll
    drop_gid = grp.getgrnam(group).gr_gid
    payroll_gid = pwd.getpwnam(user).pw_gid
    config = _install(tmp_path)
    outbox, inbox = tmp_path / "acme" / "outbox", tmp_path / "acme" / "inbox"
    for top in (outbox, inbox):  # as tmpfiles and flad init make them
        for folder in [top, *(p for p in top.rglob("*") if p.is_dir())]:
            os.chown(folder, -1, drop_gid)
    drop = outbox / "test" / "fla"
    os.chmod(drop, 0o2770)
    assert _lines(config) == []  # the model as shipped: the drop group writes its folder

    os.chown(drop, pwd.getpwnam(user).pw_uid, -1)  # payroll made the folder itself
    rejected = outbox / "rejected" / "test"
    os.chown(rejected, -1, payroll_gid)
    os.chmod(rejected, 0o770)  # writable by payroll's own group
    os.chown(config, -1, drop_gid)
    os.chmod(config, 0o640)  # the drop group reads the configuration
    state = tmp_path / "state"
    os.chown(state, -1, drop_gid)
    os.chmod(state, 0o750)  # ... and the journal
    lines = _lines(config)
    me = pwd.getpwuid(os.geteuid()).pw_name
    expected = {
        f"chown {me} {drop}": f"belongs to {user}",
        f"chgrp {group} {rejected}": f"is writable by group {user}, not by the drop group "
                                     f"{group}",
        f"chgrp {grp.getgrgid(os.getegid()).gr_name} {config}": "is readable by the drop "
                                                                f"group {group}",
        f"chmod 700 {state}": f"is open to the drop group {group}",
    }
    for fix, said in expected.items():
        matching = [line for line in lines if line.endswith(fix)]
        assert len(matching) == 1 and said in matching[0], (fix, lines)
    assert len(lines) == len(expected), lines
    for line in lines:
        _fix(line)
    # rejected/ now has the drop group, and the drop group has nothing to write there
    (again,) = _lines(config)
    assert again.endswith(f"chmod g-w {rejected}") and "writable by the drop group" in again
    _fix(again)
    assert _lines(config) == []
    # and flad check lists the same, as warnings
    findings = checkup.check_all(config, offline=True)
    assert not [f for f in findings if f.level == "warning" and "fix it with" in f.message]

    # the configuration's folder open to the drop group; a service user outside it
    os.chown(config.parent, -1, drop_gid)
    os.chmod(config.parent, 0o750)
    nobody = pwd.getpwnam("nobody")
    os.chown(tmp_path / "state", nobody.pw_uid, -1)  # root's check: flad is the state's owner
    lines = _lines(config)
    assert [line for line in lines if line.startswith("configuration folder")] == [
        f"configuration folder {config.parent} (root:{group} 0750) is open to the drop group "
        f"{group}, which has no business with the keys: fix it with: chgrp "
        f"{grp.getgrgid(nobody.pw_gid).gr_name} {config.parent}"]
    assert (f"nobody, who runs flad, is not in the drop group {group}: it cannot read files "
            f"dropped for that group, nor give it the replies; fix it with: usermod -aG "
            f"{group} nobody (then restart flad)") in lines
