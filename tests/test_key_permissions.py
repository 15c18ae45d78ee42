"""Private files: who owns them, who may read them, and messages that give the fix.

The owner cases that need a second real user (a key owned by root, read by the service
user) are in test_systemd_path.py; here the rule itself, with real files and stats.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from flad import config, keyfiles
from flad.cli import checkup, main
from tests import certs, configs

NOBODY_UID = 4_242_424  # no account has it: its name is its number


def _owned_by(st: os.stat_result, uid: int) -> os.stat_result:
    return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, uid, st.st_gid,
                           st.st_size, 0, 0, 0))


def test_a_file_owned_by_another_user_names_both_and_the_chown(tmp_path: Path) -> None:
    key = certs.write_private(tmp_path / "key", b"secret")
    st = _owned_by(key.stat(), NOBODY_UID + 1)
    problem = keyfiles.mode_owner_problem(key, st, "SSH private key", NOBODY_UID)
    assert problem == (f"SSH private key {key} is owned by {NOBODY_UID + 1} (mode 0600), not "
                       f"by {NOBODY_UID} who runs flad, so flad cannot read it; fix it with: "
                       f"chown {NOBODY_UID} {key} (or run flad as {NOBODY_UID + 1})")
    # a key root owns: running flad as root is no advice
    problem = keyfiles.mode_owner_problem(key, _owned_by(st, 0), "SSH private key", NOBODY_UID)
    assert problem is not None and problem.endswith(f"fix it with: chown {NOBODY_UID} {key}")
    assert "is owned by root (mode 0600)" in problem


def test_group_readable_and_owned_by_another_user_gets_chown_and_chmod(tmp_path: Path) -> None:
    """0640 root:flad, as the issue's reader tried: chmod 600 alone would lock flad out."""
    key = certs.write_private(tmp_path / "key", b"secret")
    key.chmod(0o640)
    problem = keyfiles.mode_owner_problem(key, key.stat(), "signing private key", NOBODY_UID)
    assert problem is not None
    assert "is readable by group or others (mode 0640)" in problem
    assert problem.endswith(f"fix it with: chown {NOBODY_UID} {key} && chmod 600 {key}")


def test_own_file_needs_only_the_mode(tmp_path: Path) -> None:
    key = certs.write_private(tmp_path / "key", b"secret")
    st = key.stat()
    assert keyfiles.mode_owner_problem(key, st, "key", st.st_uid) is None
    key.chmod(0o604)
    problem = keyfiles.mode_owner_problem(key, key.stat(), "key", st.st_uid)
    assert problem == (f"key {key} is readable by group or others (mode 0604); fix it with: "
                       f"chmod 600 {key}")


def test_root_reads_any_owner_so_only_the_mode_counts(tmp_path: Path) -> None:
    key = certs.write_private(tmp_path / "key", b"secret")
    assert keyfiles.mode_owner_problem(key, _owned_by(key.stat(), NOBODY_UID), "key", 0) is None


def test_real_files_missing_a_folder_and_a_good_one(tmp_path: Path) -> None:
    assert keyfiles.private_file_problem(tmp_path / "none", "key") == (
        f"key {tmp_path / 'none'} does not exist")
    assert keyfiles.private_file_problem(tmp_path, "key") == f"key {tmp_path} is not a regular file"
    good = certs.write_private(tmp_path / "good", b"secret")
    assert keyfiles.private_file_problem(good, "key") is None


# --------------------------------------------------------------------------- flad sign


def sign(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["sign", *map(str, argv)])
    return code, capsys.readouterr().err


def test_flad_sign_refuses_a_key_others_can_read(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    files = certs.write_test_signer(tmp_path / "signer")
    files.key_path.chmod(0o644)
    data = tmp_path / "decl.xml"
    data.write_bytes(b"<x/>")
    code, err = sign(capsys, "--cert", files.cert_path, "--key", files.key_path, data,
                     "-o", tmp_path / "decl.fs")
    assert code == 1
    assert f"refused: key file {files.key_path} is readable by group or others (mode 0644)" in err
    assert f"chmod 600 {files.key_path}" in err
    assert not (tmp_path / "decl.fs").exists()
    files.key_path.chmod(0o600)
    code, err = sign(capsys, "--cert", files.cert_path, "--key", files.key_path, data,
                     "-o", tmp_path / "decl.fs")
    assert (code, err) == (0, "")
    assert (tmp_path / "decl.fs").read_bytes()


def test_flad_sign_refuses_a_loose_pkcs12_and_passphrase_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = certs.write_test_signer(tmp_path / "signer", passphrase=b"pw")
    passfile = tmp_path / "pass"
    passfile.write_bytes(b"pw\n")
    passfile.chmod(0o644)
    files.p12_path.chmod(0o640)
    code, err = sign(capsys, "--pkcs12", files.p12_path, "--passphrase-file", passfile,
                     tmp_path / "x")
    assert code == 1
    assert f"key file {files.p12_path} is readable by group or others (mode 0640)" in err
    assert f"passphrase file {passfile} is readable by group or others (mode 0644)" in err


@pytest.mark.parametrize("kind", ["pem", "pkcs12"])
def test_a_wrong_passphrase_names_the_passphrase_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    files = certs.write_test_signer(tmp_path / "signer", passphrase=b"right")
    wrong = certs.write_private(tmp_path / "wrong.pass", b"wrong\n")
    data = tmp_path / "decl.xml"
    data.write_bytes(b"<x/>")
    key_args = (["--pkcs12", files.p12_path] if kind == "pkcs12"
                else ["--cert", files.cert_path, "--key", files.key_path])
    code, err = sign(capsys, *key_args, "--passphrase-file", wrong, data)
    assert code == 1
    assert f"wrong passphrase (read from passphrase file {wrong})" in err
    assert "wrong\n" not in err.replace(str(wrong), "")


def test_check_names_the_configured_passphrase_file(tmp_path: Path) -> None:
    files = certs.write_test_signer(tmp_path / "signer", passphrase=b"right")
    wrong = certs.write_private(tmp_path / "acme.pass", b"wrong\n")
    channel = configs.channel(tmp_path, signing={"certificate": files.cert_path,
                                                 "private_key": files.key_path,
                                                 "passphrase_file": wrong})
    path = configs.write(tmp_path, [channel])
    assert config.load(path).channels[0].signing.passphrase_source == (  # type: ignore[union-attr]
        f"passphrase_file {wrong}")
    errors = [f.message for f in checkup.check_all(path, offline=True) if f.level == "error"]
    assert any(f"wrong passphrase (read from passphrase_file {wrong})" in e for e in errors), errors


def test_an_employer_channel_reads_as_english(tmp_path: Path) -> None:
    channels = [configs.channel(tmp_path, "a"),
                configs.channel(tmp_path, "b", sender_id="6401", username="EXP_OTHER")]
    with pytest.raises(config.ConfigError) as info:
        config.load(configs.write(tmp_path, channels))
    text = "\n".join(info.value.problems)
    assert "already has an employer channel ('a')" in text and "a employer" not in text



def test_a_wrong_ssh_key_passphrase_names_the_passphrase_file(tmp_path: Path) -> None:
    from flad.remote import PrivateKeyError, SftpChannel

    key = tmp_path / "id_ed25519"
    key_object = ed25519.Ed25519PrivateKey.generate()
    certs.write_private(key, key_object.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"right")))
    wrong = certs.write_private(tmp_path / "ssh.pass", b"wrong\n")
    channel = configs.channel(tmp_path, key=key)
    channel["sftp"]["passphrase_file"] = wrong
    settings = config.load(configs.write(tmp_path, [channel])).channels[0].sftp
    assert settings.passphrase_source == f"passphrase_file {wrong}"
    with pytest.raises(PrivateKeyError) as info:
        SftpChannel(settings, channel_name="acme")._private_key()
    assert str(info.value) == (f"cannot load private key {key}: wrong passphrase (read from "
                               f"passphrase_file {wrong}), or a damaged key file")
