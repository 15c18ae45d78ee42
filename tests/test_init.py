"""`flad init` with real keys, real certificates and real files: what it writes must be
what Chaman takes and what `flad check --offline` accepts."""

from __future__ import annotations

import argparse
import io
import os
import shlex
import stat
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from flad import config, identity, keyfiles
from flad import init as sa
from flad.cli import checkup
from flad.cli import init as init_command
from tests import certs, configs

COMPANY = configs.VALID_COMPANY
MANDATARIES = sorted(identity.MANDATARY_QUALITIES)
REPO = Path(__file__).resolve().parent.parent


def request(tmp: Path, signer: certs.SignerFiles, quality: str = "employer", *,
            configured: bool = True, **extra: object) -> sa.InitRequest:
    """A complete non-interactive request, all folders in `tmp`, small RSA keys for speed."""
    base: dict[str, object] = {
        "config_path": tmp / "etc" / "flad.toml", "quality": quality, "company_id": COMPANY,
        "name": f"acme-{quality}", "certificate": signer.cert_path,
        "signing_key": signer.key_path, "outbox": tmp / "srv" / quality / "outbox",
        "inbox": tmp / "srv" / quality / "inbox", "state_dir": tmp / "state", "rsa_bits": 2048,
    }
    if configured:
        base |= {"sender_id": "6400", "username": f"EXP_{quality.upper()}", "app_code": "FLAX"}
    base |= extra
    return sa.InitRequest(**base)  # type: ignore[arg-type]


def run(req: sa.InitRequest) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = sa.run_init(req, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def errors_of(path: Path) -> list[checkup.Finding]:
    return [f for f in checkup.check_all(path, offline=True) if f.level == "error"]


def cli(argv: list[str]) -> int:
    """The parser end to end, as flad.cli wires it: one add_parser call on the subparsers."""
    parser = argparse.ArgumentParser(prog="flad")
    sub = parser.add_subparsers(dest="command", required=True)
    init_command.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def signer(tmp_path: Path) -> certs.SignerFiles:
    return certs.write_test_signer(tmp_path / "signer")


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As under systemd or in a script: nothing may be asked."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


def sections(text: str) -> list[str]:
    return [line for line in text.splitlines() if line[:3].strip().rstrip(".").isdigit()]


# --------------------------------------------------------------------------- each quality


@pytest.mark.parametrize("quality", identity.QUALITIES)
def test_each_quality_gets_keys_cer_and_a_channel_that_passes_check(
        tmp_path: Path, signer: certs.SignerFiles, quality: str) -> None:
    code, out, err = run(request(tmp_path, signer, quality))
    assert code == 0, err

    cfg = config.load(tmp_path / "etc" / "flad.toml")
    (channel,) = cfg.channels
    assert (channel.quality, channel.company_id, channel.sender_id) == (quality, COMPANY, "006400")
    assert channel.production is False and channel.sftp.legacy_ssh_rsa is True
    assert (channel.sftp.host, channel.sftp.port) == ("sftp.socialsecurity.be", 8022)
    assert channel.sftp.known_hosts == tmp_path / "etc" / "known_hosts"
    assert channel.applications[0].name == "fla" and channel.applications[0].code == "FLAX"
    assert channel.signing is not None and channel.signing.certificate == signer.cert_path
    assert errors_of(cfg.path) == []

    steps = "\n".join(sections(out))
    assert ("Mandates in MAHIS" in steps) == (quality in identity.MANDATARY_QUALITIES)
    assert ("Activate the quality" in steps) == (quality == "training_provider")
    assert f'"{sa.QUALITY_LABELS[quality]}"' in out
    assert f"flad trust-host -c {cfg.path} acme-{quality}" in out
    assert f"flad run -c {cfg.path} --once" in out


@pytest.mark.parametrize("quality", MANDATARIES)
def test_a_mandatary_channel_offers_the_mandates_key(tmp_path: Path, signer: certs.SignerFiles,
                                                    quality: str) -> None:
    assert run(request(tmp_path, signer, quality))[0] == 0
    text = (tmp_path / "etc" / "flad.toml").read_text(encoding="utf-8")
    assert "# mandates = " in text and "MAHIS" in text
    warnings = [f.message for f in checkup.check_all(tmp_path / "etc" / "flad.toml",
                                                     offline=True) if f.level == "warning"]
    assert any("no mandate list" in w for w in warnings)


# --------------------------------------------------------------------------- keys and .cer


def test_the_ssh_key_is_0600_openssh_and_its_public_line_parses(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    assert run(request(tmp_path, signer, configured=False))[0] == 0
    private = tmp_path / "etc" / "keys" / "acme-employer_rsa"
    public = private.with_name("acme-employer_rsa.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    key = serialization.load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)

    line = public.read_text(encoding="ascii")
    assert line.endswith("\n") and line.count("\n") == 1
    kind, blob, comment = line.split()
    assert kind == "ssh-rsa" and blob.startswith("AAAA")
    assert comment == f"flad-acme-employer@{COMPANY}"
    parsed = serialization.load_ssh_public_key(line.encode("ascii"))
    assert parsed.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_the_cer_is_the_certificate_in_der(tmp_path: Path, signer: certs.SignerFiles) -> None:
    code, out, _ = run(request(tmp_path, signer, configured=False))
    assert code == 0
    cer = tmp_path / "etc" / "keys" / "acme-employer.cer"
    assert cer.read_bytes() == signer.issued.certificate.public_bytes(serialization.Encoding.DER)
    assert x509.load_der_x509_certificate(cer.read_bytes()) == signer.issued.certificate
    subject = signer.issued.certificate.subject.rfc4514_string()
    issuer = signer.issued.certificate.issuer.rfc4514_string()
    assert f"subject: {subject}" in out and f"issuer:  {issuer}" in out
    assert signer.issued.certificate.not_valid_after_utc.isoformat() in out


def test_pkcs12_with_a_passphrase_file(tmp_path: Path) -> None:
    files = certs.write_test_signer(tmp_path / "p12", kind="ec", passphrase=b"s3cret words")
    passphrase = certs.write_private(tmp_path / "p12" / "pass", b"s3cret words\n")
    req = request(tmp_path, files, certificate=None, signing_key=None, pkcs12=files.p12_path,
                  passphrase_file=passphrase)
    code, out, err = run(req)
    assert code == 0, err
    assert "s3cret" not in out + err
    cer = tmp_path / "etc" / "keys" / "acme-employer.cer"
    assert cer.read_bytes() == files.issued.certificate.public_bytes(serialization.Encoding.DER)
    channel = config.load(tmp_path / "etc" / "flad.toml").channels[0]
    assert channel.signing is not None
    assert (channel.signing.pkcs12, channel.signing.certificate) == (files.p12_path, None)
    assert channel.signing.passphrase == b"s3cret words"
    assert errors_of(tmp_path / "etc" / "flad.toml") == []


def test_ed25519_keys_on_request_without_legacy_rsa(tmp_path: Path,
                                                     signer: certs.SignerFiles) -> None:
    code, out, _ = run(request(tmp_path, signer, key_type="ed25519"))
    assert code == 0
    public = (tmp_path / "etc" / "keys" / "acme-employer_ed25519.pub").read_bytes()
    assert public.startswith(b"ssh-ed25519 AAAA")
    assert isinstance(serialization.load_ssh_public_key(public), ed25519.Ed25519PublicKey)
    assert "not documented publicly" in out
    channel = config.load(tmp_path / "etc" / "flad.toml").channels[0]
    assert channel.sftp.legacy_ssh_rsa is False
    assert errors_of(tmp_path / "etc" / "flad.toml") == []


def test_a_key_that_does_not_match_the_certificate_is_refused(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    other = certs.write_test_signer(tmp_path / "other")
    code, out, err = run(request(tmp_path, signer, signing_key=other.key_path))
    assert code == 1 and "does not match" in err and out == ""
    assert not (tmp_path / "etc").exists()  # refused before the first file is written


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    pki = certs.make_cert_set()
    files = certs.write_signer(tmp_path / "old", pki.expired)
    code, _, err = run(request(tmp_path, files))
    assert code == 1 and "expired" in err
    assert not (tmp_path / "etc").exists()


# --------------------------------------------------------------------------- two runs, 3a


def test_first_run_prepares_then_second_run_appends_with_the_same_keys(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    first = request(tmp_path, signer, configured=False)
    code, out, _ = run(first)
    assert code == 0
    path = tmp_path / "etc" / "flad.toml"
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {
        "daemon": {"state_dir": str(tmp_path / "state"), "log_format": "auto",
                   "log_level": "info"}}
    assert "run flad init again with --sender and --username" in out
    assert "Run flad init with them" in out and "--sender N --username U" in out
    keys = tmp_path / "etc" / "keys"
    before = {p.name: p.read_bytes() for p in keys.iterdir()}

    code, out, err = run(replace(first, sender_id="6400", username="EXP_ACME",
                                 app_code="FLAX"))
    assert code == 0, err
    assert "reusing" in out and "already there, unchanged" in out
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == before
    cfg = config.load(path)
    assert cfg.channels[0].sftp.private_key == keys / "acme-employer_rsa"
    assert errors_of(path) == []


def test_without_app_code_the_code_is_left_to_fill_in(tmp_path: Path,
                                                      signer: certs.SignerFiles) -> None:
    code, out, err = run(request(tmp_path, signer, app_code=None))
    assert code == 0, err
    assert "FLA application code is missing" in out
    path = tmp_path / "etc" / "flad.toml"
    text = path.read_text(encoding="utf-8")
    assert '# code = "...."' in text and "FLA batch manual" in text
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert [p for p in info.value.problems if "code: is required" in p] == info.value.problems
    path.write_text(text.replace('# code = "...."', 'code = "ABCD"'), encoding="utf-8")
    assert errors_of(path) == []


def test_an_existing_config_is_extended_not_rewritten(tmp_path: Path,
                                                      signer: certs.SignerFiles) -> None:
    existing = configs.write(tmp_path / "etc", [configs.channel(tmp_path / "etc", "dmfa")])
    before = existing.read_text(encoding="utf-8")
    code, _, err = run(request(tmp_path, signer, "training_provider"))
    assert code == 0, err
    assert existing.read_text(encoding="utf-8").startswith(before)
    names = [c.name for c in config.load(existing).channels]
    assert names == ["dmfa", "acme-training_provider"]


def test_a_block_that_would_not_load_leaves_the_config_as_it_was(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    assert run(request(tmp_path, signer, configured=False))[0] == 0
    path = tmp_path / "etc" / "flad.toml"
    before = path.read_bytes()
    bad = request(tmp_path, signer, outbox=tmp_path / "state" / "outbox")  # inside state_dir
    code, _, err = run(bad)
    assert code == 1 and "overlaps daemon.state_dir" in err and "left as it was" in err
    assert str(path) in err and "init-probe" not in err
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if "probe" in p.name] == []


# --------------------------------------------------------------------------- step 3b


def test_a_second_channel_for_a_quality_is_refused_with_step_3b(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    assert run(request(tmp_path, signer))[0] == 0
    path = tmp_path / "etc" / "flad.toml"
    before = path.read_bytes()
    keys_before = sorted(p.name for p in (tmp_path / "etc" / "keys").iterdir())

    again = request(tmp_path, signer, name="acme-fla", sender_id="7777", username="EXP_OTHER",
                    company_id="0123.456.749")
    code, out, err = run(again)
    assert code == 1 and out == ""
    assert "refused" in err and "one SFTP channel per quality" in err
    assert "already has an employer channel" in err
    assert "'acme-employer'" in err and "§3.3.2" in err and "3b" in err
    assert f'"{sa.FLA_PERMISSION}"' in err and "modifier" in err
    assert "no new SSH key" in err
    assert path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "etc" / "keys").iterdir()) == keys_before


def test_the_refusal_comes_before_any_question_about_certificates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Someone who only wants FLA on an existing channel needs step 3b, not a usage error."""
    configs.write(tmp_path / "etc", [configs.channel(tmp_path / "etc", "dmfa")])
    code = cli(["init", "-c", str(tmp_path / "etc" / "flad.toml"), "--quality", "employer",
                "--company", COMPANY])
    assert code == 1
    err = capsys.readouterr().err
    assert "one SFTP channel per quality" in err and "--certificate" not in err


def test_refusal_text_offers_the_application_block(tmp_path: Path) -> None:
    channel = configs.channel(tmp_path / "etc", "dmfa", application=[{"name": "dmfa",
                                                                       "code": "DMFA"}])
    path = configs.write(tmp_path / "etc", [channel])
    req = sa.InitRequest(config_path=path, quality="employer", company_id=COMPANY)
    code, _, err = run(req)
    assert code == 1
    assert "add to channel 'dmfa' an FLA application" in err
    assert "[[channel.application]]" in err and 'name = "fla"' in err


def test_another_quality_of_the_same_company_gets_its_own_channel(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    assert run(request(tmp_path, signer, "employer"))[0] == 0
    other = request(tmp_path, signer, "service_provider", sender_id="6401")
    code, _, err = run(other)
    assert code == 0, err
    cfg = config.load(tmp_path / "etc" / "flad.toml")
    assert [c.quality for c in cfg.channels] == ["employer", "service_provider"]
    assert errors_of(cfg.path) == []


def test_ssh_key_of_an_existing_channel_is_used_as_is(tmp_path: Path,
                                                       signer: certs.SignerFiles) -> None:
    existing = configs.ssh_key(tmp_path / "id_existing")
    before = existing.read_bytes()
    code, out, err = run(request(tmp_path, signer, ssh_key=existing))
    assert code == 0, err
    assert existing.read_bytes() == before
    keys = tmp_path / "etc" / "keys"
    assert not keys.exists() or list(keys.iterdir()) == []
    assert "step 3b" in out and "§3.3.2" in out and "Upload the public SSH key" not in out
    channel = config.load(tmp_path / "etc" / "flad.toml").channels[0]
    assert channel.sftp.private_key == existing and channel.sftp.legacy_ssh_rsa is False


# --------------------------------------------------------------------------- never overwrite


def test_a_public_key_without_its_private_key_is_not_overwritten(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    keys = tmp_path / "etc" / "keys"
    keys.mkdir(parents=True)
    (keys / "acme-employer_rsa.pub").write_text("ssh-rsa AAAAold old\n", encoding="ascii")
    code, _, err = run(request(tmp_path, signer))
    assert code == 1 and "never overwrites" in err
    assert (keys / "acme-employer_rsa.pub").read_text(encoding="ascii") == "ssh-rsa AAAAold old\n"
    assert not (keys / "acme-employer_rsa").exists()


def test_a_public_key_of_another_pair_is_refused(tmp_path: Path,
                                                 signer: certs.SignerFiles) -> None:
    req = request(tmp_path, signer, configured=False)
    assert run(req)[0] == 0
    public = tmp_path / "etc" / "keys" / "acme-employer_rsa.pub"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    public.write_bytes(stranger.public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH) + b"\n")
    code, _, err = run(req)
    assert code == 1 and "does not hold the public part" in err


def test_a_loose_private_key_is_not_reused(tmp_path: Path, signer: certs.SignerFiles) -> None:
    req = request(tmp_path, signer, configured=False)
    assert run(req)[0] == 0
    private = tmp_path / "etc" / "keys" / "acme-employer_rsa"
    private.chmod(0o644)
    code, _, err = run(req)
    assert code == 1 and "chmod 600" in err


# --------------------------------------------------------------------------- command line


def test_the_parser_end_to_end_with_default_rsa_4096(tmp_path: Path, signer: certs.SignerFiles,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "flad.toml"
    code = cli(["init", "-c", str(path), "--quality", "employer", "--company", "0123 456 749",
                "--name", "acme", "--sender", "6400", "--username", "EXP_ACME",
                "--certificate", str(signer.cert_path), "--signing-key", str(signer.key_path),
                "--app-code", "FLAX", "--outbox", str(tmp_path / "out"),
                "--inbox", str(tmp_path / "in"), "--state-dir", str(tmp_path / "state")])
    out = capsys.readouterr().out
    assert code == 0
    key = serialization.load_ssh_private_key((tmp_path / "keys" / "acme_rsa").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 4096
    cfg = config.load(path)
    assert cfg.channels[0].company_id == COMPANY and cfg.channels[0].sftp.legacy_ssh_rsa
    assert errors_of(path) == []
    assert "generated RSA 4096 key" in out


def test_relative_paths_are_taken_from_the_working_folder(
        tmp_path: Path, signer: certs.SignerFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell completes relative paths from where flad init runs, not from the config."""
    monkeypatch.chdir(tmp_path)
    req = request(Path("."), signer, config_path=Path("etc/flad.toml"), state_dir=Path("st"),
                  outbox=Path("out"), inbox=Path("in"), keys_dir=Path("k"))
    assert run(req)[0] == 0
    cfg = config.load(tmp_path / "etc" / "flad.toml")
    assert cfg.daemon.state_dir == tmp_path / "st"
    assert (cfg.channels[0].outbox, cfg.channels[0].inbox) == (tmp_path / "out", tmp_path / "in")
    assert cfg.channels[0].sftp.private_key == tmp_path / "k" / "acme-employer_rsa"


def test_paths_with_quotes_and_backslashes_are_written_as_toml_quotes_them(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    """tomlkit quotes the values; the block keeps its comments and loads as it was meant."""
    odd = tmp_path / 'drop "here" \\ there é'
    code, _, err = run(request(tmp_path, signer, outbox=odd / "outbox", inbox=odd / "inbox"))
    assert code == 0, err
    path = tmp_path / "etc" / "flad.toml"
    channel = config.load(path).channels[0]
    assert (channel.outbox, channel.inbox) == (odd / "outbox", odd / "inbox")
    text = path.read_text(encoding="utf-8")
    assert "# drops go to <outbox>/<test|production>/<app>/" in text
    assert "[channel.sftp]" in text and "# the server takes RSA keys" in text
    assert errors_of(path) == []


def test_default_paths_and_host_flags(tmp_path: Path, signer: certs.SignerFiles) -> None:
    req = request(tmp_path, signer, outbox=None, inbox=None, host="127.0.0.1", port=2222,
                  name=None)
    code, _, err = run(req)
    assert code == 0, err
    name = f"{COMPANY}-employer"
    text = (tmp_path / "etc" / "flad.toml").read_text(encoding="utf-8")
    channel = tomllib.loads(text)["channel"][0]
    assert channel["name"] == name
    assert channel["outbox"] == f"/srv/flad/{name}/outbox"
    assert channel["inbox"] == f"/srv/flad/{name}/inbox"
    assert (channel["sftp"]["host"], channel["sftp"]["port"]) == ("127.0.0.1", 2222)


@pytest.mark.parametrize(("argv", "flag"), [
    (["--company", COMPANY], "--quality"),
    (["--quality", "employer"], "--company"),
    (["--quality", "employer", "--company", COMPANY], "--certificate"),
    (["--quality", "employer", "--company", "0123456748"], "mod-97"),
    (["--quality", "employer", "--company", COMPANY, "--sender", "6400"], "--username"),
])
def test_without_a_terminal_a_missing_answer_names_its_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str) -> None:
    code = cli(["init", "-c", str(tmp_path / "flad.toml"), *argv])
    assert code == 2
    assert flag in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_without_a_terminal_the_config_flag_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["init", "--quality", "employer", "--company", COMPANY]) == 2
    assert "-c/--config" in capsys.readouterr().err


def test_on_a_terminal_the_missing_answers_are_asked(tmp_path: Path,
                                                     signer: certs.SignerFiles,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 19 point 10: an answer of the wrong shape is asked again at once, instead of
    ending the run after every question (a key without passphrase is not asked for one)."""
    parser = argparse.ArgumentParser()
    init_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["init", "-c", str(tmp_path / "flad.toml")])
    answers = iter(["teacher", "training_provider", "0123.456.749", "", str(signer.cert_path),
                    str(signer.key_path), "64OO", "6400", "EXP_TP", "flax", "FLAX"])
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    req = sa.gather(args, interactive=True, ask=ask)
    assert req.quality == "training_provider" and req.company_id == COMPANY
    assert req.name == f"{COMPANY}-training_provider"  # the default offered
    assert (req.certificate, req.signing_key) == (signer.cert_path, signer.key_path)
    assert (req.sender_id, req.username, req.passphrase_file) == ("6400", "EXP_TP", None)
    assert req.app_code == "FLAX"
    assert len(asked) == 11 and not any("passphrase" in p for p in asked)
    assert asked[6] == asked[7] and asked[9] == asked[10]  # sender, then code, asked again
    err = capsys.readouterr().err
    assert "'64OO': the sender number is the 1 to 6 digits" in err
    assert "'flax': the application code is 4 characters A-Z or 0-9" in err
    code, _, err = run(replace(req, rsa_bits=2048))
    assert code == 0, err


def test_on_a_terminal_a_blank_or_wrong_passphrase_is_asked_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = certs.write_test_signer(tmp_path / "signer", passphrase=b"right words")
    wrong = certs.write_private(tmp_path / "wrong.pass", b"wrong words\n")
    right = certs.write_private(tmp_path / "right.pass", b"right words\n")
    parser = argparse.ArgumentParser()
    init_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["init", "-c", str(tmp_path / "flad.toml"), "--quality",
                              "employer", "--company", COMPANY, "--name", "acme",
                              "--certificate", str(files.cert_path),
                              "--signing-key", str(files.key_path)])
    answers = iter(["", str(wrong), str(tmp_path / "missing.pass"), str(right), ""])
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    req = sa.gather(args, interactive=True, ask=ask)
    assert req.passphrase_file == right
    assert [p.startswith("File holding the key's passphrase") for p in asked] == [
        True, True, True, True, False]
    err = capsys.readouterr().err
    assert f"key file {files.key_path} is encrypted and no passphrase was given" in err
    assert "the key is protected: a passphrase file is needed" in err  # the blank answer
    assert f"wrong passphrase (read from passphrase file {wrong})" in err
    assert f"cannot read --passphrase-file {tmp_path / 'missing.pass'}" in err
    assert "words" not in err.replace(str(tmp_path), "")
    code, _, err = run(replace(req, rsa_bits=2048, state_dir=tmp_path / "state",
                               outbox=tmp_path / "out", inbox=tmp_path / "in"))
    assert code == 0, err


def test_on_a_terminal_a_certificate_that_does_not_open_is_asked_again(
        tmp_path: Path, signer: certs.SignerFiles, capsys: pytest.CaptureFixture[str]) -> None:
    other = certs.write_test_signer(tmp_path / "other")
    parser = argparse.ArgumentParser()
    init_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["init", "-c", str(tmp_path / "flad.toml"), "--quality",
                              "employer", "--company", COMPANY, "--name", "acme"])
    answers = iter([str(signer.cert_path), str(other.key_path), str(signer.cert_path),
                    str(signer.key_path), ""])
    req = sa.gather(args, interactive=True, ask=lambda _: next(answers))
    assert (req.certificate, req.signing_key) == (signer.cert_path, signer.key_path)
    assert "does not match" in capsys.readouterr().err


def test_the_step_6_hint_repeats_the_answers_given(tmp_path: Path,
                                                   signer: certs.SignerFiles) -> None:
    req = request(tmp_path, signer, configured=False, keys_dir=tmp_path / "my keys")
    code, out, err = run(req)
    assert code == 0, err
    (hint,) = [line.strip() for line in out.splitlines() if line.strip().startswith("flad init -c")]
    assert hint == (f"flad init -c {tmp_path / 'etc' / 'flad.toml'} --quality employer "
                    f"--company {COMPANY} --name acme-employer --sender N --username U "
                    f"--app-code CODE --certificate {signer.cert_path} --signing-key "
                    f"{signer.key_path} --keys-dir '{tmp_path / 'my keys'}' --outbox "
                    f"{tmp_path / 'srv' / 'employer' / 'outbox'} --inbox "
                    f"{tmp_path / 'srv' / 'employer' / 'inbox'}")
    assert "CERT" not in hint and "(or --pkcs12" not in hint
    assert sa.gather(_parsed(hint), interactive=False).keys_dir == tmp_path / "my keys"


def _parsed(command: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    init_command.add_parser(parser.add_subparsers())
    argv = shlex.split(command)[1:]
    argv = [a if a not in ("N", "U", "CODE") else {"N": "6400", "U": "EXP", "CODE": "FLAX"}[a]
            for a in argv]
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- --explain


@pytest.mark.parametrize("quality", identity.QUALITIES)
def test_explain_prints_the_checklist_and_touches_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        quality: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli(["init", "--explain", quality]) == 0
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    steps = sections(out)
    titles = [s.split("  [guide")[0].split(". ", 1)[1] for s in steps]
    expected = ["Register the company on the social-security portal"]
    if quality == "training_provider":
        expected.append('Activate the quality "Prestataire de formation" first')
    expected.append("Get access to Chaman")
    if quality in identity.MANDATARY_QUALITIES:
        expected.append('Mandates in MAHIS for "Federal Learning Account"')
    expected += ["Create the SFTP channel in Chaman",
                 f'Tick the permission "{sa.FLA_PERMISSION}"',
                 "Upload the public SSH key and the certificate",
                 "Tell flad the sender number and user name",
                 "Trust the server's host key",
                 "Send a first test file through INTEST"]
    assert titles == expected
    assert all("[guide " in s for s in steps)  # every item names its section
    assert "§3.1" in steps[0] and "Identifier son gestionnaire" in out
    assert "flad trust-host -c CONFIG NAME" in out and "flad run -c CONFIG --once" in out
    assert "no FS signature" in out and "3b" in out
    # the FLA has ended; the channel carries the other applications
    assert out.startswith("The Federal Learning Account (FLA) ended on 1 January 2026")
    assert "DmfA" in out and "DIMONA" in out and 'profile = "dmfa"' in out


def test_checklist_rejects_an_unknown_quality() -> None:
    with pytest.raises(ValueError, match="unknown quality"):
        sa.checklist("payroll")


# --------------------------------------------------------------------------- owner, folders


def test_the_files_init_writes_have_the_modes_the_service_needs(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    code, _, err = run(request(tmp_path, signer))
    assert code == 0, err
    keys = tmp_path / "etc" / "keys"
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (
        tmp_path / "etc" / "flad.toml", keys, keys / "acme-employer_rsa",
        keys / "acme-employer_rsa.pub", keys / "acme-employer.cer")}
    assert list(modes.values()) == [0o640, 0o700, 0o600, 0o644, 0o644]
    outbox = tmp_path / "srv" / "employer" / "outbox"
    inbox = outbox.parent / "inbox"
    folders = {p: stat.S_IMODE(p.stat().st_mode) for p in (
        outbox, outbox / "test", outbox / "test" / "fla", inbox, inbox / "test")}
    # the drop group writes only into the application's folder, reads refusals and replies
    assert list(folders.values()) == [0o2750, 0o2750, 0o2770, 0o2750, 0o2750]
    assert {p.stat().st_gid for p in folders} == {(tmp_path / "srv" / "employer").stat().st_gid}


def test_an_existing_drop_folder_is_left_as_it_is(tmp_path: Path,
                                                  signer: certs.SignerFiles) -> None:
    drop = tmp_path / "srv" / "employer" / "outbox" / "test" / "fla"
    drop.mkdir(parents=True, mode=0o755)
    drop.chmod(0o755)
    assert run(request(tmp_path, signer))[0] == 0
    assert stat.S_IMODE(drop.stat().st_mode) == 0o755


def test_owner_is_the_user_the_files_are_written_for(tmp_path: Path,
                                                     signer: certs.SignerFiles) -> None:
    me = keyfiles.user_name(os.geteuid())
    code, out, err = run(request(tmp_path, signer, owner=me, configured=False))
    assert code == 0, err
    assert f"--owner {me}" in out  # the step 6 hint keeps it
    code, out, err = run(request(tmp_path, signer, owner=me))
    assert code == 0, err
    assert f"belongs to {me}, the user the service runs as" in out
    assert f"sudo -u {me} flad check -c {tmp_path / 'etc' / 'flad.toml'} --offline" in out
    assert "without --owner" not in err
    keys = tmp_path / "etc" / "keys"
    assert {p.stat().st_uid for p in keys.iterdir()} == {os.geteuid()}


def test_root_without_owner_is_told_the_service_cannot_read_its_keys(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    code, _, err = run(request(tmp_path, signer))
    assert code == 0
    assert ("ran as root without --owner" in err) == (os.geteuid() == 0)


def test_an_unknown_owner_is_refused_before_anything_is_written(
        tmp_path: Path, signer: certs.SignerFiles) -> None:
    code, out, err = run(request(tmp_path, signer, owner="no-such-user-19"))
    assert code == 2 and out == ""
    assert "--owner 'no-such-user-19': no such user on this machine" in err
    assert not (tmp_path / "etc").exists()


def test_print_example_prints_the_installed_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["init", "--print-example"]) == 0
    text = capsys.readouterr().out
    assert text == (REPO / "config.example.toml").read_text(encoding="utf-8")
    assert "never copy this file over a" in text and "[[channel]]" in text


def test_the_root_example_and_the_packaged_one_are_the_same_file() -> None:
    root = (REPO / "config.example.toml").read_bytes()
    assert root == (REPO / "flad" / "data" / "config.example.toml").read_bytes()
    tomllib.loads(root.decode("utf-8"))  # and it is TOML


def test_without_a_terminal_a_missing_or_wrong_passphrase_names_the_flag_and_the_file(
        tmp_path: Path) -> None:
    files = certs.write_test_signer(tmp_path / "signer", passphrase=b"right")
    code, _, err = run(request(tmp_path, files))
    assert code == 1 and "is encrypted and no passphrase was given" in err
    assert "--passphrase-file F" in err
    wrong = certs.write_private(tmp_path / "wrong.pass", b"wrong\n")
    code, _, err = run(request(tmp_path, files, passphrase_file=wrong))
    assert code == 1 and f"wrong passphrase (read from --passphrase-file {wrong})" in err
    assert not (tmp_path / "etc").exists()


def test_owner_on_a_second_run_hands_over_what_the_first_made(tmp_path: Path,
                                                              signer: certs.SignerFiles) -> None:
    me = keyfiles.user_name(os.geteuid())
    code, out, _ = run(request(tmp_path, signer, configured=False, owner=me))
    assert code == 0 and "Handed over" not in out  # all of it was made for `me` at once
    code, out, err = run(request(tmp_path, signer, configured=False, owner=me))
    assert code == 0, err
    assert "Handed over" not in out  # already `me`'s: nothing changed hands
