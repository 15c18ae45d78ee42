"""The README's systemd path, end to end, with real local users (issue 19, point 2).

The shipped systemd/flad.sysusers and systemd/flad.tmpfiles are applied (users and
groups renamed, folders under a temporary root), `flad init` runs as root as the README
says, and `flad check --offline` runs AS the service user: it must read its keys. A
payroll user in the drop group drops a file. Then the failure the issue met: keys that
belong to root, named with their owner and the chown that fixes them.

Needs root, useradd and runuser: skipped otherwise. Users and groups made here are
removed afterwards.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import certs, configs

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("useradd", "userdel", "groupadd", "groupdel", "usermod", "runuser")

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS),
    reason="needs root and useradd/groupadd/runuser to make real local users")


@dataclass(frozen=True)
class Machine:
    """A temporary root with the shipped sysusers and tmpfiles applied to it."""

    root: Path
    service: str  # stands for "flad"
    drop_group: str  # stands for "flad-drop"
    payroll: str  # a user of the drop group

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def config(self) -> Path:
        return self.path("/etc/flad/flad.toml")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120,
                          stdin=subprocess.DEVNULL)


def as_user(user: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`argv` run by `user`, as `sudo -u user` would (runuser: no password, no PAM prompt)."""
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True,
                          timeout=120, cwd=cwd, stdin=subprocess.DEVNULL,
                          env={**os.environ, "HOME": str(cwd), **_PYTHON_ENV})


# flad's own code and its dependencies, for an interpreter other users may run (the test
# venv's may live under /root, as pyenv puts it; /opt/flad would not).
_PYTHON_ENV = {"PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"],
                                              sysconfig.get_paths()["platlib"]]),
               "PYTHONDONTWRITEBYTECODE": "1"}


def _interpreters() -> list[str]:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = [sys.executable, os.path.realpath(sys.executable)]
    found += [p for p in (shutil.which(version, path="/usr/local/bin:/usr/bin"),) if p]
    return list(dict.fromkeys(found))


def service_python(user: str, cwd: Path) -> str:
    """An interpreter of this Python version that `user` can run with flad importable."""
    for candidate in _interpreters():
        probe = as_user(user, candidate, "-c", "import flad.cli", cwd=cwd)
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no python{sys.version_info.major}.{sys.version_info.minor} that {user} "
                f"may run imports flad here (tried {', '.join(_interpreters())})")


def flad_as(user: str, m: Machine, *argv: str) -> subprocess.CompletedProcess[str]:
    return as_user(user, service_python(user, m.root), "-m", "flad.cli", *argv, cwd=m.root)


def flad_root(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flad.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          stdin=subprocess.DEVNULL)


def _apply_sysusers(names: dict[str, str], made: list[tuple[str, str]]) -> None:
    for line in (REPO / "systemd" / "flad.sysusers").read_text(encoding="utf-8").splitlines():
        fields = shlex.split(line, comments=True)
        if not fields:
            continue
        if fields[0] == "u":
            sh("useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
               "/nonexistent", "--shell", "/usr/sbin/nologin", names[fields[1]])
            made.append(("user", names[fields[1]]))
        elif fields[0] == "g":
            sh("groupadd", "--system", names[fields[1]])
            made.append(("group", names[fields[1]]))
        elif fields[0] == "m":
            sh("usermod", "-aG", names[fields[2]], names[fields[1]])
        else:
            raise AssertionError(f"sysusers line this test does not know: {line}")


def _apply_tmpfiles(root: Path, names: dict[str, str]) -> None:
    for line in (REPO / "systemd" / "flad.tmpfiles").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        kind, path, mode, user, group = fields[:5]
        assert kind == "d", line
        folder = root / path.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        uid = pwd.getpwnam(names.get(user, user)).pw_uid
        os.chown(folder, uid, _gid(names.get(group, group)))
        os.chmod(folder, int(mode, 8))


def _gid(group: str) -> int:
    return grp.getgrnam(group).gr_gid


@pytest.fixture(name="m")
def machine() -> Iterator[Machine]:
    tag = secrets.token_hex(3)
    names = {"flad": f"fladsvc{tag}", "flad-drop": f"fladdrop{tag}", "root": "root"}
    made: list[tuple[str, str]] = []
    root = Path(tempfile.mkdtemp(prefix="flad-systemd-", dir="/tmp"))
    root.chmod(0o755)  # the users below must be able to walk into it, as into /
    try:
        _apply_sysusers(names, made)
        payroll = f"fladpay{tag}"
        sh("useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
           "/nonexistent", "--shell", "/usr/sbin/nologin", "-G", names["flad-drop"], payroll)
        made.append(("user", payroll))
        _apply_tmpfiles(root, names)
        yield Machine(root, names["flad"], names["flad-drop"], payroll)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for kind, name in reversed(made):
            if kind == "user":
                sh("userdel", name, check=False)
            sh("groupdel", name, check=False)  # the user's own group, or the drop group


def install_signer(m: Machine) -> tuple[Path, Path]:
    """README step 2: the certificate 0644, its key 0600 owned by the service user."""
    files = certs.write_test_signer(m.root / "from-the-ca")
    cert, key = m.path("/etc/flad/acme-cert.pem"), m.path("/etc/flad/keys/acme-key.pem")
    sh("install", "-m", "0644", str(files.cert_path), str(cert))
    sh("install", "-m", "0600", "-o", m.service, "-g", m.service, str(files.key_path), str(key))
    return cert, key


def init_args(m: Machine, cert: Path, key: Path, *, configured: bool) -> list[str]:
    args = ["init", "-c", str(m.config), "--quality", "employer", "--company",
            configs.VALID_COMPANY, "--name", "acme", "--key-type", "ed25519",
            "--certificate", str(cert), "--signing-key", str(key),
            "--state-dir", str(m.path("/var/lib/flad")),
            "--outbox", str(m.path("/srv/flad/acme/outbox")),
            "--inbox", str(m.path("/srv/flad/acme/inbox"))]
    if configured:
        args += ["--sender", "6400", "--username", "EXP_ACME", "--app-code", "FLAX"]
    return args


@needs_root
def test_init_for_the_service_user_gives_a_service_that_reads_its_keys(m: Machine) -> None:
    cert, key = install_signer(m)
    # step 5 run first without --owner, as the reader did: run again, it hands over
    mistake = flad_root(*init_args(m, cert, key, configured=False))
    assert mistake.returncode == 0 and "without --owner" in mistake.stderr
    first = flad_root(*init_args(m, cert, key, configured=False), "--owner", m.service)
    assert first.returncode == 0, first.stderr
    handed = {line.split(": ", 1)[1].split(" (made by", 1)[0]
              for line in first.stdout.splitlines() if line.startswith("Handed over to")}
    assert handed == {str(m.path(f"/etc/flad/keys/{name}"))
                      for name in ("acme_ed25519", "acme_ed25519.pub", "acme.cer")} | {
        str(m.config)}
    # step 7, after Chaman, for the service user too
    second = flad_root(*init_args(m, cert, key, configured=True), "--owner", m.service)
    assert second.returncode == 0, second.stderr
    assert "warning" not in second.stderr, second.stderr

    uid = pwd.getpwnam(m.service).pw_uid
    ssh_key = m.path("/etc/flad/keys/acme_ed25519")
    for path, mode in ((ssh_key, 0o600), (m.config, 0o640)):
        st = path.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, mode), path

    check = flad_as(m.service, m, "check", "-c", str(m.config), "--offline")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 error(s)" in check.stdout
    assert any(line.startswith("OK      channel acme signing:")  # the signing key was read
               for line in check.stdout.splitlines()), check.stdout
    assert as_user(m.service, "cat", str(ssh_key), cwd=m.root).returncode == 0

    # the drop group writes into the drop folder, and the service reads what it wrote
    drop = m.path("/srv/flad/acme/outbox/test/fla/first.xml")
    wrote = as_user(m.payroll, "sh", "-c", f"umask 0027; echo '<x/>' > {drop}", cwd=m.root)
    assert wrote.returncode == 0, wrote.stderr
    assert as_user(m.service, "cat", str(drop), cwd=m.root).stdout == "<x/>\n"
    assert drop.parent.stat().st_gid == _gid(m.drop_group)
    # ... but reads neither the configuration nor the keys, and writes nowhere else
    for secret in (m.config, ssh_key, key):
        assert as_user(m.payroll, "cat", str(secret), cwd=m.root).returncode != 0, secret
    beside = m.path("/srv/flad/acme/outbox/test/stray.xml")
    assert as_user(m.payroll, "touch", str(beside), cwd=m.root).returncode != 0


@needs_root
def test_keys_owned_by_root_are_named_with_their_owner_and_the_fix(m: Machine) -> None:
    """The issue's path: `sudo flad init` without --owner, then the service user."""
    cert, key = install_signer(m)
    done = flad_root(*init_args(m, cert, key, configured=True))
    assert done.returncode == 0, done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if "without --owner" in line]
    ssh_key = m.path("/etc/flad/keys/acme_ed25519")
    assert str(ssh_key) in warning and "chown flad " in warning

    # a key root owns at 0600 while the service user runs flad
    sh("chown", f"{m.service}:", str(m.config))  # so that the keys are what check meets
    check = flad_as(m.service, m, "check", "-c", str(m.config), "--offline")
    assert check.returncode == 1
    assert (f"SSH private key {ssh_key} is owned by root (mode 0600), not by {m.service} who "
            f"runs flad, so flad cannot read it; fix it with: chown {m.service} {ssh_key}"
            ) in check.stdout, check.stdout

    # 0640 root:<service group>, as the reader tried: chmod alone is not the fix
    sh("chgrp", m.service, str(ssh_key))
    ssh_key.chmod(0o640)
    check = flad_as(m.service, m, "check", "-c", str(m.config), "--offline")
    assert (f"fix it with: chown {m.service} {ssh_key} && chmod 600 {ssh_key}"
            ) in check.stdout, check.stdout

    # the warning's own command (for this machine's service user) repairs the rest
    ssh_key.chmod(0o600)
    command = shlex.split(warning.split("with: ", 1)[1].split(" (or use", 1)[0])
    assert command[:2] == ["chown", "flad"]
    sh("chown", m.service, *command[2:])
    check = flad_as(m.service, m, "check", "-c", str(m.config), "--offline")
    assert check.returncode == 0, check.stdout + check.stderr


def _unit_values(key: str) -> list[str]:
    lines = (REPO / "systemd" / "flad.service").read_text(encoding="utf-8").splitlines()
    return [line.split("=", 1)[1] for line in lines if line.startswith(f"{key}=")]


def test_the_units_documentation_is_a_file_pip_installs() -> None:
    """Documentation= names <venv>/share/doc/flad/README.md for the venv of ExecStart, and
    pyproject's data-files is what puts README.md there."""
    (doc,) = _unit_values("Documentation")
    (exec_start,) = _unit_values("ExecStart")
    venv = exec_start.split()[0].removesuffix("/bin/flad")
    assert doc == f"file://{venv}/share/doc/flad/README.md"
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "README.md" in project["tool"]["setuptools"]["data-files"]["share/doc/flad"]
    assert (REPO / "README.md").is_file()


def _colon_file(path: Path) -> dict[str, list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {fields[0]: fields for fields in (line.split(":") for line in lines if line)}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("systemd-sysusers")
                    or not shutil.which("systemd-tmpfiles"),
                    reason="needs root and systemd-sysusers/systemd-tmpfiles")
def test_systemds_own_tools_take_the_shipped_files(tmp_path: Path) -> None:
    """The README's `systemd-sysusers && systemd-tmpfiles --create`, into a spare root."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    sh("systemd-sysusers", f"--root={root}", str(REPO / "systemd" / "flad.sysusers"))
    users, groups = _colon_file(root / "etc" / "passwd"), _colon_file(root / "etc" / "group")
    uid, gid = int(users["flad"][2]), int(users["flad"][3])
    assert groups["flad"][2] == str(gid)
    assert "flad" in groups["flad-drop"][3].split(",")  # flad reads what the group drops
    done = sh("systemd-tmpfiles", f"--root={root}", "--create",
              str(REPO / "systemd" / "flad.tmpfiles"), check=False)
    assert done.returncode == 0, done.stderr
    # /var/lib/flad was 0750 before issue 15: now flad's alone
    expected = {"/var/lib/flad": (0o700, uid, gid), "/etc/flad": (0o750, 0, gid),
                "/etc/flad/keys": (0o750, 0, gid),
                "/srv/flad": (0o2750, uid, int(groups["flad-drop"][2]))}
    for folder, (mode, owner, group) in expected.items():
        st = (root / folder.lstrip("/")).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, owner, group), folder


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """Every key of the unit is one systemd knows (an unknown one is only a warning)."""
    flad = tmp_path / "flad"
    flad.write_text("#!/bin/sh\n", encoding="utf-8")
    flad.chmod(0o755)  # ExecStart must exist: stands for /opt/flad/bin/flad
    unit = tmp_path / "flad.service"
    unit.write_text((REPO / "systemd" / "flad.service").read_text(encoding="utf-8")
                    .replace("/opt/flad/bin/flad", str(flad)), encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line for line in (done.stdout + done.stderr).splitlines()
            if "flad.service" in line] == []


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_the_units_exposure_stays_at_or_below_1_4(tmp_path: Path) -> None:
    """Issue 15: the permission model tightens the unit, never loosens it."""
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                           str(REPO / "systemd" / "flad.service")], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    overall = [line for line in done.stdout.splitlines() if "Overall exposure level" in line]
    if not overall:
        pytest.skip(f"this systemd-analyze has no offline security: {done.stderr.strip()}")
    (line,) = overall
    exposure = float(line.split(":", 1)[1].split()[0])
    assert exposure <= 1.4, line


def test_the_unit_keeps_the_state_flads_alone_and_says_how_to_fence_the_network() -> None:
    assert _unit_values("UMask") == ["0077"]
    assert _unit_values("StateDirectoryMode") == ["0700"]
    text = (REPO / "systemd" / "flad.service").read_text(encoding="utf-8")
    assert "#IPAddressDeny=any" in text and "#IPAddressAllow=" in text
    tmpfiles = (REPO / "systemd" / "flad.tmpfiles").read_text(encoding="utf-8").splitlines()
    assert "d /var/lib/flad 0700 flad flad -" in tmpfiles
