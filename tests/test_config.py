"""Every configuration rule, with the message an operator sees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flad import config
from tests import configs


def load_problems(path: Path) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    return info.value.problems


def test_a_minimal_channel_loads(tmp_path: Path) -> None:
    path = configs.write(tmp_path, [configs.channel(tmp_path)])
    cfg = config.load(path)
    (ch,) = cfg.channels
    assert ch.sender_id == "006400"  # zero-padded as written in names
    assert ch.sftp.port == 8022 and ch.production is False
    assert ch.applications[0].code == "FLAX"
    assert cfg.daemon.settle_seconds == 2.0 and cfg.daemon.duplicate_window_days == 30


def test_example_configuration_keys_are_all_known(tmp_path: Path) -> None:
    """config.example.toml documents real keys: loading it fails only on missing files."""
    example = Path(__file__).parent.parent / "config.example.toml"
    problems = load_problems(example)
    assert problems
    assert not [p for p in problems if "unknown key" in p], problems
    # only missing files: the DmfA and DIMONA applications, noss_number and profiles are sound
    assert all("does not exist" in p for p in problems), problems


def test_two_channels_of_one_quality_are_refused(tmp_path: Path) -> None:
    path = configs.write(tmp_path, [
        configs.channel(tmp_path, "a"),
        configs.channel(tmp_path, "b", port=8023),
    ])
    (problem,) = load_problems(path)
    assert str(path) in problem
    assert "channel 'b': quality" in problem
    assert "already has an employer channel ('a')" in problem
    assert "one SFTP channel per quality" in problem


def test_same_quality_for_two_companies_is_fine(tmp_path: Path) -> None:
    path = configs.write(tmp_path, [
        configs.channel(tmp_path, "a"),
        configs.channel(tmp_path, "b", company_id=configs.OTHER_COMPANY),
    ])
    assert len(config.load(path).channels) == 2


def test_same_sftp_login_is_the_same_channel(tmp_path: Path) -> None:
    path = configs.write(tmp_path, [
        configs.channel(tmp_path, "a", username="EXP_X"),
        configs.channel(tmp_path, "b", quality="training_provider", username="EXP_X"),
    ])
    (problem,) = load_problems(path)
    assert "channel 'b': sftp.username" in problem
    assert "is already channel 'a'" in problem


def test_channel_names_are_unique(tmp_path: Path) -> None:
    a = configs.channel(tmp_path, "a")
    b = configs.channel(tmp_path, "b", quality="training_provider")
    b["name"] = "a"
    path = configs.write(tmp_path, [a, b])
    problems = load_problems(path)
    assert any("channel.name: channel name 'a' is used twice" in p for p in problems)


@pytest.mark.parametrize("key", ["outbox", "inbox"])
def test_channels_never_share_folders(tmp_path: Path, key: str) -> None:
    a = configs.channel(tmp_path, "a")
    b = configs.channel(tmp_path, "b", quality="training_provider")
    b[key] = Path(a["outbox"]) / "nested"
    path = configs.write(tmp_path, [a, b])
    problems = load_problems(path)
    assert any("channel 'a': outbox" in p and f"channel 'b''s {key}" in p
               and "folders of its own" in p for p in problems), problems


def test_outbox_and_inbox_of_one_channel_differ(tmp_path: Path) -> None:
    a = configs.channel(tmp_path, "a")
    a["inbox"] = a["outbox"]
    problems = load_problems(configs.write(tmp_path, [a]))
    assert any("this channel's inbox" in p for p in problems)


@pytest.mark.parametrize(("value", "reason"), [
    ("0123456748", "mod-97"),
    ("12345", "10 digits"),
])
def test_company_id_must_be_an_enterprise_number(tmp_path: Path, value: str,
                                                 reason: str) -> None:
    problems = load_problems(configs.write(tmp_path, [configs.channel(tmp_path,
                                                                      company_id=value)]))
    (problem,) = problems
    assert "channel 'acme': company_id" in problem
    assert reason in problem


def test_company_id_with_dots_is_accepted(tmp_path: Path) -> None:
    path = configs.write(tmp_path, [configs.channel(tmp_path, company_id="0123.456.749")])
    assert config.load(path).channels[0].company_id == "0123456749"


@pytest.mark.parametrize("value", ["1234567", "12a4", "", "-1"])
def test_sender_id_is_one_to_six_digits(tmp_path: Path, value: str) -> None:
    (problem,) = load_problems(configs.write(tmp_path, [configs.channel(tmp_path,
                                                                        sender_id=value)]))
    assert "channel 'acme': sender_id: must be 1 to 6 digits" in problem


def test_quality_must_be_known(tmp_path: Path) -> None:
    (problem,) = load_problems(configs.write(tmp_path, [configs.channel(tmp_path,
                                                                        quality="boss")]))
    assert "quality: must be one of employer, social_secretariat, service_provider, " \
           "training_provider, got 'boss'" in problem


@pytest.mark.parametrize("code", ["fla1", "FLA", "FLAXX", "FL-A"])
def test_application_code_is_four_capitals_or_digits(tmp_path: Path, code: str) -> None:
    ch = configs.channel(tmp_path, application=[{"name": "fla", "code": code}])
    (problem,) = load_problems(configs.write(tmp_path, [ch]))
    assert "application[0].code: must be 4 characters A-Z or 0-9" in problem


def test_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    ch = configs.channel(tmp_path)
    key = Path(ch["sftp"]["private_key"])
    os.chmod(key, 0o644)
    (problem,) = load_problems(configs.write(tmp_path, [ch]))
    assert f"SSH private key {key} is readable by group or others (mode 0644)" in problem
    assert f"chmod 600 {key}" in problem


def test_signing_key_readable_by_group_is_refused(tmp_path: Path) -> None:
    from tests.certs import write_test_signer

    files = write_test_signer(tmp_path / "sig")
    os.chmod(files.key_path, 0o640)
    ch = configs.channel(tmp_path, signing={"certificate": files.cert_path,
                                            "private_key": files.key_path})
    (problem,) = load_problems(configs.write(tmp_path, [ch]))
    assert "signing.private_key" in problem and f"chmod 600 {files.key_path}" in problem


def test_inline_secrets_are_refused(tmp_path: Path) -> None:
    ch = configs.channel(tmp_path)
    ch["sftp"]["passphrase"] = "hunter2"
    problems = load_problems(configs.write(tmp_path, [ch]))
    (problem,) = problems
    assert "sftp.passphrase: secrets are never written in the configuration" in problem
    assert "hunter2" not in problem


def test_passphrase_from_file_and_from_systemd_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o600)
    ch = configs.channel(tmp_path)
    ch["sftp"]["passphrase_file"] = secret
    cfg = config.load(configs.write(tmp_path, [ch]))
    assert cfg.channels[0].sftp.passphrase == b"s3cret"
    assert "s3cret" not in repr(cfg.channels[0].signing)

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "acme-ssh").write_text("from-systemd")
    os.chmod(creds / "acme-ssh", 0o400)
    del ch["sftp"]["passphrase_file"]
    ch["sftp"]["passphrase_credential"] = "acme-ssh"
    path = configs.write(tmp_path, [ch])
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (problem,) = load_problems(path)
    assert "$CREDENTIALS_DIRECTORY is not set" in problem
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert config.load(path).channels[0].sftp.passphrase == b"from-systemd"


def test_passphrase_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("x")
    os.chmod(secret, 0o644)
    ch = configs.channel(tmp_path)
    ch["sftp"]["passphrase_file"] = secret
    (problem,) = load_problems(configs.write(tmp_path, [ch]))
    assert "passphrase file" in problem and "chmod 600" in problem


def test_production_needs_signing(tmp_path: Path) -> None:
    (problem,) = load_problems(configs.write(tmp_path, [configs.channel(tmp_path,
                                                                        production=True)]))
    assert "channel 'acme': signing: is required when production = true" in problem


def test_mandates_file_is_read_and_checked(tmp_path: Path) -> None:
    mandates = tmp_path / "mandates.txt"
    mandates.write_text(f"# clients\n{configs.OTHER_COMPANY}\n\n0123456748\n")
    ch = configs.channel(tmp_path, quality="social_secretariat", mandates=mandates)
    (problem,) = load_problems(configs.write(tmp_path, [ch]))
    assert "mandates" in problem and "line 4" in problem
    mandates.write_text(f"# clients\n{configs.OTHER_COMPANY}\n")
    cfg = config.load(configs.write(tmp_path, [ch]))
    assert cfg.channels[0].mandates == frozenset({configs.OTHER_COMPANY})


def test_mandatary_without_mandates_gets_a_startup_warning(tmp_path: Path) -> None:
    cfg = config.load(configs.write(tmp_path, [configs.channel(
        tmp_path, quality="service_provider")]))
    assert any("no mandate list" in w for w in cfg.warnings)


def test_employer_may_not_have_mandates(tmp_path: Path) -> None:
    mandates = tmp_path / "m.txt"
    mandates.write_text("")
    (problem,) = load_problems(configs.write(tmp_path, [configs.channel(
        tmp_path, mandates=mandates)]))
    assert "only mandataries" in problem


def test_unknown_keys_and_bad_types_name_the_key(tmp_path: Path) -> None:
    ch = configs.channel(tmp_path, production="yes", colour="blue")
    problems = load_problems(configs.write(tmp_path, [ch]))
    assert any("channel 'acme': production: must be true or false, got a text in quotes "
               "'yes'" in p for p in problems), problems
    assert any(p.endswith("channel 'acme': colour: unknown key") for p in problems), problems


def test_a_misspelt_key_gets_a_suggestion(tmp_path: Path) -> None:
    ch = configs.channel(tmp_path, sign_tests_files=True)
    problems = load_problems(configs.write(tmp_path, [ch]))
    assert any("sign_tests_files: unknown key (did you mean 'sign_test_files'?)" in p
               for p in problems), problems
    ch = configs.channel(tmp_path, poll_seconds="5")
    problems = load_problems(configs.write(tmp_path, [ch]))
    assert any("poll_seconds: must be a number, got a text in quotes '5'" in p
               for p in problems), problems


def test_bad_xpath_is_refused_at_load(tmp_path: Path) -> None:
    ch = configs.channel(tmp_path, application=[{"name": "fla", "code": "FLAX",
                                                 "employer_xpath": "//*["}])
    (problem,) = load_problems(configs.write(tmp_path, [ch]))
    assert "employer_xpath: invalid XPath" in problem


def test_missing_and_broken_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert "does not exist" in load_problems(missing)[0]
    broken = tmp_path / "broken.toml"
    broken.write_text("[daemon\n")
    assert "not valid TOML" in load_problems(broken)[0]
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert "no [[channel]] is configured" in load_problems(empty)[0]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    ch = configs.channel(tmp_path)
    ch["outbox"] = "acme/outbox"
    cfg = config.load(configs.write(tmp_path, [ch]))
    assert cfg.channels[0].outbox == tmp_path / "acme" / "outbox"


# --------------------------------------------------------------------------- loads


def test_loads_checks_text_as_if_it_were_the_file(tmp_path: Path) -> None:
    """`flad init` proves the text it is about to write; the verdict is load's own."""
    path = configs.write(tmp_path, [configs.channel(tmp_path)])
    text = path.read_text(encoding="utf-8")
    assert config.loads(text, path) == config.load(path)
    elsewhere = tmp_path / "not-written.toml"
    with pytest.raises(config.ConfigError) as info:
        config.loads(text + "\n[surprise]\n", elsewhere)
    assert info.value.problems == [f"{elsewhere}: surprise: unknown key"]
    assert not elsewhere.exists()
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.loads("[daemon", elsewhere)
