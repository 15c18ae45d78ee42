"""flad.secrets: the one reader of passphrase files and systemd credentials; and the
settings that carry a secret, which never show it in their repr (a log line or a
traceback prints reprs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flad import secrets
from flad.config import SigningConfig
from flad.sftp_settings import ProxySettings, SftpSettings

SECRET = b"correct horse battery staple"


def test_a_passphrase_file_is_read_without_its_line_break(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_bytes(SECRET + b"\r\n")
    assert secrets.read_secret_file(path) == SECRET


def test_an_unreadable_file_is_named_never_its_content(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(secrets.SecretError) as info:
        secrets.read_secret_file(missing, "--passphrase-file")
    assert str(info.value) == f"cannot read --passphrase-file {missing}: No such file or directory"


def test_a_credential_lives_in_the_folder_systemd_names(tmp_path: Path) -> None:
    (tmp_path / "acme-ssh").write_bytes(SECRET + b"\n")
    path = secrets.credential_path("acme-ssh", {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert path == tmp_path / "acme-ssh" and secrets.read_secret_file(path) == SECRET


@pytest.mark.parametrize(("name", "environ", "reason"), [
    ("acme", {}, "$CREDENTIALS_DIRECTORY is not set (LoadCredential="),
    ("../etc/shadow", {"CREDENTIALS_DIRECTORY": "/run/credentials/flad.service"},
     "must be a plain credential name"),
    ("..", {"CREDENTIALS_DIRECTORY": "/run/credentials/flad.service"},
     "must be a plain credential name"),
])
def test_a_credential_that_cannot_be_found_says_why(name: str, environ: dict[str, str],
                                                    reason: str) -> None:
    with pytest.raises(secrets.SecretError, match=reason.replace("$", r"\$").replace("(", r"\(")):
        secrets.credential_path(name, environ)


def test_the_process_environment_is_read_when_none_is_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", os.fspath(tmp_path))
    assert secrets.credential_path("x") == tmp_path / "x"


def test_no_settings_type_shows_a_secret_in_its_repr(tmp_path: Path) -> None:
    key, hosts = tmp_path / "id", tmp_path / "known_hosts"
    shown = [
        SigningConfig(None, None, tmp_path / "p12", passphrase=SECRET),
        SftpSettings("h", 8022, "u", key, SECRET, hosts,
                     proxy=ProxySettings("http://proxy:3128", b"user:" + SECRET)),
        ProxySettings("socks5://proxy:1080", b"user:" + SECRET),
    ]
    for settings in shown:
        text = repr(settings)
        assert "correct horse" not in text and "user:" not in text, text
