"""The paramiko compatibility module: every private name checked, loud when one is gone.

A paramiko release that renames an internal flad uses must stop flad at start-up with
the installed version named, never show up as every file failing with an internal
error or as a transient error retried for ever.
"""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from flad.cli import main
from flad.remote import RemoteIncompatible, SftpChannel, TransportError, paramiko_compat
from tests.sshd import SshServer
from tests.test_cli import employer_channel, write_config
from tests.test_remote_sftp import settings_for


def test_the_installed_paramiko_has_every_name_flad_uses() -> None:
    paramiko_compat.self_check()
    for cls, names in paramiko_compat.PRIVATE_CLASS_NAMES.items():
        assert all(hasattr(cls, name) for name in names), cls


def test_a_missing_private_name_stops_flad_with_the_version(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delattr(paramiko.SFTPClient, "_async_request")
    with pytest.raises(RemoteIncompatible) as caught:
        paramiko_compat.self_check()
    message = str(caught.value)
    assert f"paramiko {paramiko_compat.paramiko_version()}" in message
    assert "SFTPClient._async_request" in message and paramiko_compat.SUPPORTED in message

    config = write_config(tmp_path, employer_channel(tmp_path))
    assert main(["run", "-c", str(config), "--once", "--max-wait", "1"]) == 2
    assert "SFTPClient._async_request" in capsys.readouterr().err
    assert main(["check", "-c", str(config), "--offline"]) == 1
    assert "ERROR   paramiko:" in capsys.readouterr().out


def test_a_missing_instance_attribute_is_permanent_at_connect(
        monkeypatch: pytest.MonkeyPatch, sshd: SshServer, tmp_path: Path) -> None:
    monkeypatch.setattr(paramiko_compat, "PRIVATE_INSTANCE_NAMES", ("_no_such_thing",))
    channel = SftpChannel(settings_for(sshd, tmp_path))
    with pytest.raises(RemoteIncompatible, match="SFTPClient attribute _no_such_thing"):
        channel.connect()
    assert not channel.is_connected
    channel.close()


def test_a_renamed_internal_during_connect_is_not_transient(
        monkeypatch: pytest.MonkeyPatch, sshd: SshServer, tmp_path: Path) -> None:
    def renamed(*_: object) -> None:
        raise AttributeError("'Client' object has no attribute '_request'")

    monkeypatch.setattr("flad.remote.sftp.server_limits", renamed)
    channel = SftpChannel(settings_for(sshd, tmp_path))
    with pytest.raises(RemoteIncompatible, match="AttributeError"):
        channel.connect()
    channel.close()


def test_a_bug_during_connect_is_never_a_transient_error(
        monkeypatch: pytest.MonkeyPatch, sshd: SshServer, tmp_path: Path) -> None:
    def broken(*_: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr("flad.remote.sftp.server_limits", broken)
    channel = SftpChannel(settings_for(sshd, tmp_path))
    with pytest.raises(ValueError, match="a bug") as caught:
        channel.connect()
    assert not isinstance(caught.value, TransportError)
    channel.close()
    monkeypatch.undo()
    channel = SftpChannel(settings_for(sshd, tmp_path))
    channel.connect()  # and the real thing connects
    assert channel.is_connected
    channel.close()
