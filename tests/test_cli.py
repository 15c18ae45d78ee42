"""The `flad` command as a new operator runs it: output and exit codes of each command.

Most calls run in-process (`flad.cli.main` and capsys); the ones a shell or systemd
would start (`flad run --once`, `flad sign` to standard output, `trust-host` without a
terminal) run as real subprocesses. The server is the real OpenSSH fixture `sshd`.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flad import journal
from flad.cli import build_parser, main
from tests import configs
from tests.certs import issue_cert, make_ca, make_cert_set, write_signer, write_test_signer
from tests.harness import STANDIN_XSD, Install, make_install, sample
from tests.hostile import ACCEPTED, CANARY_TEXT, EXPECTED_REASONS, corpus
from tests.sshd import SshServer

TODAY = datetime.date.today().strftime("%Y%m%d")
REPO = Path(__file__).parent.parent
FLA_APP = {"name": "fla", "code": "FLAX", "xsd": STANDIN_XSD, "root_element": "FLADeclaration"}
DMFA_APP = {"name": "dmfa", "code": "DMFA", "xsd": STANDIN_XSD,
            "root_element": "FLADeclaration"}


def flad(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    """`flad ARGV` in-process: (exit code, stdout, stderr of this command alone)."""
    capsys.readouterr()  # drop what earlier steps (the service's logs) printed
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def flad_process(*argv: Any, timeout: float = 60, **kwargs: Any
                 ) -> subprocess.CompletedProcess[str]:
    """`flad ARGV` as a real process, as a shell or systemd starts it."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, "-m", "flad.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)


def write_config(tmp: Path, *channels: dict[str, Any], **daemon: Any) -> Path:
    return configs.write(tmp, list(channels), **daemon)


def employer_channel(tmp: Path, **extra: Any) -> dict[str, Any]:
    """A channel with a real signer; its server is never contacted (port 9)."""
    extra.setdefault("application", [FLA_APP])
    if "signing" not in extra:
        signer = write_test_signer(tmp / "signer")
        extra["signing"] = {"certificate": signer.cert_path, "private_key": signer.key_path}
    return configs.channel(tmp, "acme", port=9, production=True, **extra)


def other_employer(data: bytes) -> bytes:
    return data.replace(b"0123456749</EmployerId>",
                        f"{configs.OTHER_COMPANY}</EmployerId>".encode())


def gos(inst: Install, folder: str = "INTEST") -> list[str]:
    return [n for n in inst.remote(folder) if n.startswith("GO.")]


# -- validate ----------------------------------------------------------------------

def test_validate_one_line_per_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, employer_channel(tmp_path))
    files = tmp_path / "files"
    files.mkdir()
    good = files / "good.xml"
    good.write_bytes(sample(1))
    broken = files / "broken.xml"
    broken.write_bytes(b"<FLADeclaration><oops></FLADeclaration>")
    other = files / "other.xml"
    other.write_bytes(other_employer(sample(2)))
    hostile = corpus(tmp_path / "hostile")
    xxe = hostile["xxe_file_passwd"]

    code, out, err = flad(capsys, "validate", "-c", config, good)
    assert (code, out, err) == (0, f"{good}: OK\n", "")

    code, out, err = flad(capsys, "validate", "-c", config, good, broken, xxe, other)
    assert code == 1, out + err
    lines = out.splitlines()
    assert len(lines) == 4, out
    assert lines[0] == f"{good}: OK"
    assert lines[1].startswith(f"{broken}: REFUSED: ") and "line 1" in lines[1]
    assert lines[2].startswith(f"{xxe}: REFUSED: ")
    assert EXPECTED_REASONS["xxe_file_passwd"] in lines[2]
    assert "root:" not in out  # /etc/passwd was not read into any message
    assert lines[3].startswith(f"{other}: REFUSED: ") and configs.OTHER_COMPANY in lines[3]
    # validate checks, it does not move: every file is where it was
    assert good.read_bytes() == sample(1) and broken.exists() and other.exists()


def test_validate_the_hostile_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, employer_channel(tmp_path))
    files = corpus(tmp_path / "hostile")
    code, out, err = flad(capsys, "validate", "-c", config, *files.values())
    assert code == 1 and err == ""
    verdicts = dict(line.split(": ", 1) for line in out.splitlines())
    assert len(verdicts) == len(files)
    for name, path in files.items():
        verdict = verdicts[str(path)]
        if name in ACCEPTED:
            assert verdict == "OK", name
        else:
            assert verdict.startswith("REFUSED: "), (name, verdict)
            assert EXPECTED_REASONS[name] in verdict, (name, verdict)
    assert CANARY_TEXT not in out


def test_validate_a_missing_file_and_a_folder(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, employer_channel(tmp_path))
    code, out, _ = flad(capsys, "validate", "-c", config, tmp_path / "nope.xml", tmp_path)
    assert code == 1
    assert out.splitlines() == [f"{tmp_path / 'nope.xml'}: REFUSED: not a regular file",
                                f"{tmp_path}: REFUSED: not a regular file"]


def test_validate_needs_channel_when_there_are_two(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    acme = employer_channel(tmp_path)
    secretariat = configs.channel(tmp_path, "secr", quality="social_secretariat",
                                  sender_id="6401", port=9, application=[FLA_APP])
    config = write_config(tmp_path, acme, secretariat)
    other = tmp_path / "other.xml"
    other.write_bytes(other_employer(sample(1)))

    code, out, err = flad(capsys, "validate", "-c", config, other)
    assert code == 2 and out == ""
    assert "several channels are configured: say which with --channel" in err

    code, out, err = flad(capsys, "validate", "-c", config, "--channel", "nope", other)
    assert code == 2 and "no channel 'nope'" in err and "acme, secr" in err

    code, out, _ = flad(capsys, "validate", "-c", config, "--channel", "acme", other)
    assert code == 1 and out.startswith(f"{other}: REFUSED: ")
    # a social secretariat may send for a client employer (no mandate list: a warning)
    code, out, _ = flad(capsys, "validate", "-c", config, "--channel", "secr", other)
    assert code == 0 and out.startswith(f"{other}: OK"), out


def test_validate_guesses_the_application(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, employer_channel(tmp_path, application=[FLA_APP, DMFA_APP]))
    in_app_folder = tmp_path / "outbox-copy" / "dmfa" / "a.xml"
    in_app_folder.parent.mkdir(parents=True)
    in_app_folder.write_bytes(sample(1))
    elsewhere = tmp_path / "a.xml"
    elsewhere.write_bytes(sample(1))

    code, out, _ = flad(capsys, "validate", "-c", config, in_app_folder)
    assert (code, out) == (0, f"{in_app_folder}: OK\n")  # from the folder name
    code, out, err = flad(capsys, "validate", "-c", config, elsewhere)
    assert code == 2 and "several applications: say which with --app" in err
    code, out, _ = flad(capsys, "validate", "-c", config, "--app", "fla", elsewhere)
    assert (code, out) == (0, f"{elsewhere}: OK\n")
    code, out, err = flad(capsys, "validate", "-c", config, "--app", "dimona", elsewhere)
    assert code == 2 and "no application 'dimona'" in err


def test_validate_with_a_broken_config(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, employer_channel(tmp_path, company_id="0123456789"))
    code, out, err = flad(capsys, "validate", "-c", config, tmp_path / "a.xml")
    assert code == 2 and out == ""
    assert "config error:" in err and "company_id" in err
    code, _, err = flad(capsys, "validate", "-c", tmp_path / "missing.toml", "a.xml")
    assert code == 2 and "does not exist" in err


# -- sign / verify-signature -------------------------------------------------------

@pytest.fixture
def signer_files(tmp_path: Path) -> Any:
    return write_test_signer(tmp_path / "signer", passphrase=b"correct horse 42")


def test_sign_pem_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              signer_files: Any) -> None:
    fi = tmp_path / "decl.xml"
    fi.write_bytes(sample(1))
    passfile = tmp_path / "pass"
    passfile.write_bytes(b"correct horse 42\n")
    passfile.chmod(0o600)  # flad sign refuses a passphrase file others can read
    fs = tmp_path / "decl.fs"
    code, out, err = flad(capsys, "sign", "--cert", signer_files.cert_path, "--key",
                          signer_files.key_path, "--passphrase-file", passfile, fi, "-o", fs)
    assert (code, out, err) == (0, "", "")
    content = fs.read_bytes()
    assert b"\n" not in content and b"\r" not in content and b"-----" not in content
    base64.b64decode(content, validate=True)

    code, out, err = flad(capsys, "verify-signature", "--cert", signer_files.cert_path,
                          "--fs", fs, fi)
    assert code == 0, out + err
    assert out.startswith(f"{fi}: signature OK (sha256")
    assert "flad test signer rsa" in out

    fi.write_bytes(sample(1).replace(b"7.5", b"8.5"))  # one byte changed
    code, out, _ = flad(capsys, "verify-signature", "--cert", signer_files.cert_path,
                        "--fs", fs, fi)
    assert code == 1 and out.startswith(f"{fi}: signature INVALID")


def test_sign_pkcs12_cr76_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      signer_files: Any) -> None:
    fi = tmp_path / "decl.xml"
    fi.write_bytes(sample(2, size=20_000))
    passfile = tmp_path / "pass"
    passfile.write_bytes(b"correct horse 42")
    passfile.chmod(0o600)  # flad sign refuses a passphrase file others can read
    fs = tmp_path / "decl.fs"
    code, _, err = flad(capsys, "sign", "--pkcs12", signer_files.p12_path, "--passphrase-file",
                        passfile, "--line-format", "cr76", fi, "-o", fs)
    assert code == 0, err
    content = fs.read_bytes()
    lines = content.split(b"\r")
    assert len(lines) > 2 and b"\n" not in content
    assert all(len(line) == 76 for line in lines[:-1]) and 0 < len(lines[-1]) <= 76
    code, out, _ = flad(capsys, "verify-signature", "--cert", signer_files.cert_path,
                        "--fs", fs, fi)
    assert code == 0 and "signature OK" in out
    # the signer's certificate alone (no chain) is enough too
    alone = tmp_path / "alone.pem"
    alone.write_bytes(signer_files.cert_path.read_bytes().split(b"-----END CERTIFICATE-----")[0]
                      + b"-----END CERTIFICATE-----\n")
    code, out, _ = flad(capsys, "verify-signature", "--cert", alone, "--fs", fs, fi)
    assert code == 0 and "signature OK" in out


def test_sign_to_standard_output_in_a_real_process(tmp_path: Path) -> None:
    signer = write_test_signer(tmp_path / "plain")
    fi = tmp_path / "decl.xml"
    fi.write_bytes(sample(3))
    done = flad_process("sign", "--cert", signer.cert_path, "--key", signer.key_path, fi)
    assert done.returncode == 0, done.stderr
    fs = tmp_path / "decl.fs"
    fs.write_text(done.stdout)
    done = flad_process("verify-signature", "--cert", signer.cert_path, "--fs", fs, fi)
    assert done.returncode == 0 and "signature OK" in done.stdout


def test_verify_an_fs_made_by_openssl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer = write_test_signer(tmp_path / "plain")
    cert = tmp_path / "cert.pem"  # the signer alone, as `-signer` wants it
    cert.write_bytes(signer.cert_path.read_bytes().split(b"-----END CERTIFICATE-----")[0]
                     + b"-----END CERTIFICATE-----\n")
    fi = tmp_path / "decl.xml"
    fi.write_bytes(sample(4))
    der = tmp_path / "sig.der"
    subprocess.run(["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER",
                    "-signer", cert, "-inkey", signer.key_path, "-in", fi, "-out", der],
                   check=True, capture_output=True, timeout=30)
    fs = tmp_path / "decl.fs"
    fs.write_bytes(base64.b64encode(der.read_bytes()))
    code, out, err = flad(capsys, "verify-signature", "--cert", signer.cert_path, "--fs", fs, fi)
    assert code == 0, out + err
    assert "signature OK (sha256" in out

    fi.write_bytes(sample(5))
    code, out, _ = flad(capsys, "verify-signature", "--cert", signer.cert_path, "--fs", fs, fi)
    assert code == 1 and "INVALID" in out

    # and the other way round: openssl accepts what flad signs
    fi.write_bytes(sample(6))
    code, _, _ = flad(capsys, "sign", "--cert", signer.cert_path, "--key", signer.key_path,
                      fi, "-o", fs)
    assert code == 0
    der.write_bytes(base64.b64decode(fs.read_bytes()))
    done = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", der,
                           "-content", fi, "-noverify", "-out", os.devnull],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_verify_with_a_certificate_that_did_not_sign(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     signer_files: Any) -> None:
    other = write_test_signer(tmp_path / "other")
    fi = tmp_path / "decl.xml"
    fi.write_bytes(sample(1))
    fs = tmp_path / "decl.fs"
    code, _, _ = flad(capsys, "sign", "--cert", other.cert_path, "--key", other.key_path, fi,
                      "-o", fs)
    assert code == 0
    code, out, _ = flad(capsys, "verify-signature", "--cert", signer_files.cert_path,
                        "--fs", fs, fi)
    assert code == 1 and "INVALID" in out
    code, _, err = flad(capsys, "verify-signature", "--cert", tmp_path / "nope.pem",
                        "--fs", fs, fi)
    assert code == 2 and "nope.pem" in err


def test_wrong_passphrase_is_refused_and_never_shown(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     signer_files: Any) -> None:
    fi = tmp_path / "decl.xml"
    fi.write_bytes(sample(1))
    wrong = "Tr0ub4dor&3-not-it"
    passfile = tmp_path / "pass"
    passfile.write_text(wrong + "\n")
    fs = tmp_path / "decl.fs"
    for source in (["--cert", signer_files.cert_path, "--key", signer_files.key_path],
                   ["--pkcs12", signer_files.p12_path]):
        code, out, err = flad(capsys, "sign", *source, "--passphrase-file", passfile, fi,
                              "-o", fs)
        assert code == 1, out + err
        assert err.startswith("flad sign: ") and err.count("\n") == 1, err
        assert wrong not in out + err and "correct horse" not in out + err
        assert not fs.exists()
    # the same in a real process (a traceback would show locals and arguments)
    done = flad_process("sign", "--pkcs12", signer_files.p12_path, "--passphrase-file",
                        passfile, fi, "-o", fs)
    assert done.returncode == 1
    assert wrong not in done.stdout + done.stderr and "Traceback" not in done.stderr
    # no passphrase at all for an encrypted key
    code, out, err = flad(capsys, "sign", "--cert", signer_files.cert_path, "--key",
                          signer_files.key_path, fi, "-o", fs)
    assert code == 1 and "correct horse" not in out + err


def test_sign_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           signer_files: Any) -> None:
    fi = tmp_path / "decl.xml"
    fi.write_bytes(sample(1))
    code, _, err = flad(capsys, "sign", "--cert", signer_files.cert_path, fi)
    assert code == 2 and "give --cert and --key, or --pkcs12" in err
    code, _, err = flad(capsys, "sign", "--pkcs12", signer_files.p12_path, "--line-format",
                        "crlf", fi)
    assert code == 2 and "invalid choice" in err


def test_sign_to_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    signer = write_test_signer(tmp_path / "plain")
    fi = tmp_path / "decl.xml"
    fi.write_bytes(sample(1))
    done = flad_process("sign", "--cert", signer.cert_path, "--key", signer.key_path, fi,
                        "-o", tmp_path / "missing" / "decl.fs")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("flad sign: ") and "missing" in done.stderr


# -- check -------------------------------------------------------------------------

def test_check_offline_good_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, employer_channel(tmp_path))
    code, out, err = flad(capsys, "check", "-c", config, "--offline")
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("0 error(s)")
    assert "flad test signer rsa" in out  # the certificate it found
    assert "run flad trust-host" in out  # no known_hosts yet: a warning, not an error
    assert "sftp: connected" not in out  # offline means offline


def test_check_reads_the_list_of_error_codes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_replyparse import SMALL_ERROR_CODES

    good = tmp_path / "ErrorCodes.xml"
    good.write_bytes(SMALL_ERROR_CODES)
    config = write_config(tmp_path, employer_channel(tmp_path), error_codes=good)
    code, out, err = flad(capsys, "check", "-c", config, "--offline")
    assert code == 0, out + err
    assert f"{good}: 2 error codes" in out
    good.write_bytes(b"<html>a login page</html>")  # not the list: labels off, not an error
    code, out, _ = flad(capsys, "check", "-c", config, "--offline")
    assert code == 0 and "error codes will be shown without their label" in out
    good.unlink()
    code, out, _ = flad(capsys, "check", "-c", config, "--offline")
    assert code != 0 and "daemon.error_codes" in out and "does not exist" in out


def test_check_offline_lists_every_config_problem(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ch = employer_channel(tmp_path, company_id="0123456789")
    os.chmod(ch["sftp"]["private_key"], 0o644)
    ch["application"] = [{**FLA_APP, "code": "fla"}]
    config = write_config(tmp_path, ch)
    code, out, _ = flad(capsys, "check", "-c", config, "--offline")
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert any("company_id" in e and "0123456789" in e for e in errors), out
    assert any("private_key" in e and "0644" in e and "chmod 600" in e for e in errors), out
    assert any("code" in e and "'fla'" in e for e in errors), out
    assert out.splitlines()[-1].startswith(f"{len(errors)} error(s)")


def test_check_offline_lists_certificate_and_file_problems(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certs = make_cert_set()
    expired = write_signer(tmp_path / "expired", certs.expired, chain=[certs.ca.certificate])
    bad_xsd = tmp_path / "bad.xsd"
    bad_xsd.write_text("<not a schema")
    ch = employer_channel(tmp_path, signing={"certificate": expired.cert_path,
                                             "private_key": expired.key_path},
                          application=[{**FLA_APP, "xsd": bad_xsd}])
    config = write_config(tmp_path, ch)
    code, out, _ = flad(capsys, "check", "-c", config, "--offline")
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert any("signing" in e and "expired" in e for e in errors), out
    assert any("application fla" in e for e in errors), out
    assert out.splitlines()[-1].startswith(f"{len(errors)} error(s)")


def test_check_offline_lists_config_and_certificate_problems_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certs = make_cert_set()
    expired = write_signer(tmp_path / "expired", certs.expired, chain=[certs.ca.certificate])
    ch = employer_channel(tmp_path, company_id="0123456789",
                          signing={"certificate": expired.cert_path,
                                   "private_key": expired.key_path})
    os.chmod(ch["sftp"]["private_key"], 0o644)
    config = write_config(tmp_path, ch)
    code, out, _ = flad(capsys, "check", "-c", config, "--offline")
    assert code == 1
    assert "company_id" in out and "0644" in out
    assert "expired" in out, out


def test_check_online_connects(tmp_path: Path, sshd: SshServer,
                               capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    code, out, err = flad(capsys, "check", "-c", inst.config_path)
    assert code == 0, out + err
    assert f"connected to {sshd.username}@127.0.0.1:{sshd.port}" in out
    assert "INTEST" in out and out.splitlines()[-1].startswith("0 error(s)")


def test_check_online_unknown_host_key(tmp_path: Path, sshd: SshServer,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    (tmp_path / "known_hosts").write_text("")
    code, out, _ = flad(capsys, "check", "-c", inst.config_path)
    assert code == 1
    assert "not in known_hosts" in out
    # the hint names the real configuration (issue 15: it said `-c CONFIG`)
    assert f"flad trust-host -c {inst.config_path} {inst.channel['name']}" in out
    assert "-c CONFIG" not in out
    assert out.splitlines()[-1].startswith("1 error(s)")


def test_check_online_server_down(tmp_path: Path, sshd: SshServer,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    sshd.stop()
    code, out, _ = flad(capsys, "check", "-c", inst.config_path)
    assert code == 1 and "channel acme sftp" in out


# -- trust-host --------------------------------------------------------------------

def ssh_keygen_fingerprint(sshd: SshServer, tmp: Path) -> str:
    pub = tmp / "host_key.pub"
    pub.write_text(sshd.host_public_key_line + "\n")
    done = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True, timeout=30)
    return done.stdout.split()[1]  # "256 SHA256:... comment (ED25519)"


def test_trust_host_records_the_key(tmp_path: Path, sshd: SshServer,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    expected = ssh_keygen_fingerprint(sshd, tmp_path)
    assert expected.startswith("SHA256:")

    code, out, err = flad(capsys, "trust-host", "-c", inst.config_path, "acme", "--yes")
    assert code == 0, out + err
    assert f"127.0.0.1:{sshd.port} presents a ssh-ed25519 key, fingerprint {expected}" in out
    assert f"recorded in {known_hosts}" in out
    assert known_hosts.read_text().split() == sshd.known_hosts_line().split()

    # twice is harmless: the same key is not added again
    code, _, _ = flad(capsys, "trust-host", "-c", inst.config_path, "acme", "--yes")
    assert code == 0 and len(known_hosts.read_text().splitlines()) == 1

    inst.drop("a.xml", sample(1))
    code, _, _ = flad(capsys, "run", "-c", inst.config_path, "--once", "--max-wait", "10")
    assert code == 0
    assert gos(inst) == [f"GO.FLAX.006400.{TODAY}.00001.T.1"]


def test_trust_host_without_yes_and_without_terminal(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    done = flad_process("trust-host", "-c", inst.config_path, "acme")
    assert done.returncode == 1
    assert ssh_keygen_fingerprint(sshd, tmp_path) in done.stdout
    assert "run again with --yes" in done.stderr
    assert known_hosts.read_text() == ""


def test_trust_host_errors(tmp_path: Path, sshd: SshServer,
                           capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    code, _, err = flad(capsys, "trust-host", "-c", inst.config_path, "nope", "--yes")
    assert code == 2 and "no channel 'nope' (channels: acme)" in err
    sshd.stop()
    code, _, err = flad(capsys, "trust-host", "-c", inst.config_path, "acme", "--yes")
    assert code == 1 and err.startswith("flad trust-host: ") and err.count("\n") == 1


def test_trust_host_when_the_server_key_changed(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    known_hosts = tmp_path / "known_hosts"
    before = known_hosts.read_text()
    sshd.replace_host_key()  # the server now shows another key of the same type
    done = flad_process("trust-host", "-c", inst.config_path, "acme", "--yes")
    assert known_hosts.read_text() == before  # holds today already
    assert done.returncode == 1
    assert "already trusts another ssh-ed25519 key" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


# -- status ------------------------------------------------------------------------

def test_status_before_and_after_a_run(tmp_path: Path, sshd: SshServer,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    config = inst.config_path
    code, out, _ = flad(capsys, "status", "-c", config)
    assert code == 0 and out.startswith("no journal yet")
    code, out, _ = flad(capsys, "status", "-c", config, "--json")
    assert code == 0 and json.loads(out) == []
    assert not (tmp_path / "state" / "journal.sqlite3").exists()  # status created nothing

    inst.drop("good.xml", sample(1))
    inst.drop("broken.xml", b"<FLADeclaration><oops></FLADeclaration>")
    assert inst.run_once() == 0
    by_name = {s.drop_name: s for s in inst.submissions()}
    good, broken = by_name["good.xml"], by_name["broken.xml"]

    code, out, _ = flad(capsys, "status", "-c", config)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "CHANNEL", "ENV", "STATE"]
    good_line = next(line for line in lines if "good.xml" in line)
    assert good_line.split()[:4] == [str(good.id), "acme", "test", "SENT"]
    assert good.fi_name and good.fi_name in good_line
    broken_line = next(line for line in lines if "broken.xml" in line)
    assert "!! REJECTED" in broken_line
    assert any(line.strip().startswith("reason:") and "line 1" in line for line in lines)
    assert lines[-1] == "1 rejected, 1 sent"

    code, out, _ = flad(capsys, "status", "-c", config, "--json")
    rows = json.loads(out)
    assert isinstance(rows, list) and len(rows) == 2
    for row in rows:
        assert {"id", "drop_name", "channel", "environment", "fi_name", "state",
                "error"} <= row.keys()
    row = {r["drop_name"]: r for r in rows}
    assert (row["good.xml"]["state"], row["good.xml"]["fi_name"], row["good.xml"]["error"]) == (
        "sent", good.fi_name, None)
    assert (row["broken.xml"]["state"], row["broken.xml"]["fi_name"]) == ("rejected", None)
    assert "line 1" in row["broken.xml"]["error"]
    assert row["good.xml"]["channel"] == "acme" and row["good.xml"]["environment"] == "test"
    datetime.datetime.fromisoformat(row["good.xml"]["updated_at"])

    code, out, _ = flad(capsys, "status", "-c", config, "--json", "--state", "rejected")
    assert [r["id"] for r in json.loads(out)] == [broken.id]
    code, out, _ = flad(capsys, "status", "-c", config, "--json", "--state", "rejected",
                        "--state", "sent")
    assert len(json.loads(out)) == 2
    code, out, err = flad(capsys, "status", "-c", config, "--state", "lost")
    assert code == 2 and "invalid choice" in err

    code, out, _ = flad(capsys, "status", "-c", config, "--json", "--channel", "acme")
    assert len(json.loads(out)) == 2
    code, out, _ = flad(capsys, "status", "-c", config, "--channel", "other")
    assert code == 0 and out.strip() == "no submissions"

    code, out, _ = flad(capsys, "status", "-c", config, "--json", "--since", "1h")
    assert len(json.loads(out)) == 2
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    code, out, _ = flad(capsys, "status", "-c", config, "--json", "--since", tomorrow)
    assert json.loads(out) == []
    code, out, err = flad(capsys, "status", "-c", config, "--since", "yesterday")
    assert code == 2 and "--since takes 30m, 2h, 7d or an ISO date" in err


def test_status_while_the_journal_is_locked(tmp_path: Path, sshd: SshServer,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    inst = make_install(tmp_path, sshd)
    inst.drop("a.xml", sample(1))
    assert inst.run_once() == 0
    writer = sqlite3.connect(tmp_path / "state" / "journal.sqlite3", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE submission SET state = 'failed'")
        done = flad_process("status", "-c", inst.config_path, "--json", timeout=5)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert done.returncode == 0, done.stderr
    assert [r["state"] for r in json.loads(done.stdout)] == ["sent"]


# -- run ---------------------------------------------------------------------------

def test_run_once_in_a_real_process(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    for i in range(3):
        inst.drop(f"d{i}.xml", sample(i))
    done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "10")
    assert done.returncode == 0, done.stderr
    assert gos(inst) == [f"GO.FLAX.006400.{TODAY}.{n:05d}.T.1" for n in (1, 2, 3)]
    assert [s.state for s in inst.submissions()] == [journal.SENT] * 3
    logged = done.stdout + done.stderr
    assert "once_finished" in logged

    # nothing left: a second run is a quiet success
    done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "5")
    assert done.returncode == 0, done.stderr
    assert len(gos(inst)) == 3


def test_run_once_with_the_server_down_keeps_files_queued(tmp_path: Path,
                                                          sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    sshd.stop()
    inst.drop("a.xml", sample(1))
    inst.drop("b.xml", sample(2))
    done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "3")
    assert done.returncode == 1, done.stdout + done.stderr
    subs = inst.submissions()
    assert len(subs) == 2
    assert {s.state for s in subs} <= {journal.RECEIVED, journal.PREPARED}
    assert not (inst.outbox / "rejected").exists() or not any(
        (inst.outbox / "rejected").rglob("*.xml"))

    sshd.start()
    done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [s.state for s in inst.submissions()] == [journal.SENT] * 2
    assert len(gos(inst)) == 2
    sequences = sorted(s.sequence or "" for s in inst.submissions())
    assert len(set(sequences)) == 2


def test_run_with_a_broken_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, employer_channel(tmp_path, quality="boss"))
    code, out, err = flad(capsys, "run", "-c", config, "--once")
    assert code == 2 and out == "" and "config error:" in err and "quality" in err


def test_run_with_an_expired_certificate(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ca = make_ca()
    now = datetime.datetime.now(datetime.UTC)
    expired = write_signer(tmp_path / "old", issue_cert(
        ca, "old signer", not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1)), chain=[ca.certificate])
    config = write_config(tmp_path, employer_channel(
        tmp_path, signing={"certificate": expired.cert_path, "private_key": expired.key_path}))
    code, out, err = flad(capsys, "run", "-c", config, "--once", "--log-format", "json",
                          "--max-wait", "1")
    # issue 17: the channel is held (its files wait), no longer a refusal to start; a
    # run --once still ends in failure, so that a scheduled run is noticed
    assert code == 1
    [said] = [json.loads(line) for line in (out + err).splitlines()
              if '"certificate_expired"' in line]
    assert said["channel"] == "acme" and said["level"] == "error"
    assert "certificate expired on" in said["error"]


# -- resend ------------------------------------------------------------------------

def test_resend_refuses_a_submission_that_was_not_rejected(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    inst.drop("a.xml", sample(1))
    assert inst.run_once() == 0
    (sub,) = inst.submissions()
    code, out, err = flad(capsys, "resend", "-c", inst.config_path, sub.id)
    assert code == 1 and out == ""
    assert err == (f"flad resend: submission {sub.id} is sent: only rejected or failed "
                   "submissions can be sent again\n")
    code, _, err = flad(capsys, "resend", "-c", inst.config_path, 999)
    assert code == 1 and "no submission 999" in err
    code, _, err = flad(capsys, "resend", "-c", inst.config_path, "abc")
    assert code == 2 and "invalid int value" in err
    assert len(gos(inst)) == 1 and [s.state for s in inst.submissions()] == [journal.SENT]


def test_resend_a_rejected_file(tmp_path: Path, sshd: SshServer,
                                capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    inst.drop("a.xml", other_employer(sample(1)))
    assert inst.run_once() == 0
    (sub,) = inst.submissions()
    assert sub.state == journal.REJECTED
    code, out, _ = flad(capsys, "resend", "-c", inst.config_path, sub.id)
    assert code == 0 and f"submission {sub.id} (a.xml) is queued again" in out
    assert f"flad run -c {inst.config_path} --once" in out  # a hint that works as printed
    assert inst.submissions()[0].state == journal.RECEIVED
    code, _, err = flad(capsys, "resend", "-c", inst.config_path, sub.id)
    assert code == 1 and "is received" in err


# -- help --------------------------------------------------------------------------

def subcommands() -> dict[str, str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    choices: dict[str, Any] = action.choices  # type: ignore[assignment]
    return {name: sub.description or "" for name, sub in choices.items()}


WHAT_IT_DOES = {
    "validate": "check each file", "sign": "signature", "verify-signature": "valid signature",
    "check": "every problem", "run": "watch the outboxes", "status": "one row per submission",
    "resend": "back in line", "replies": "reply set", "trust-host": "fingerprint",
    "init": "set up", "sandbox": "stand-in",
}


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = flad(capsys, "--help")
    assert code == 0 and err == ""
    assert "usage: flad" in out and "social-security" in out
    for name in subcommands():
        assert name in out
    code, out, _ = flad(capsys)
    assert code == 2  # no command: usage
    code, out, _ = flad(capsys, "--version")
    assert code == 0 and out.startswith("flad ")


@pytest.mark.parametrize("command", sorted(WHAT_IT_DOES))
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert command in subcommands()
    code, out, err = flad(capsys, command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: flad {command}")
    assert WHAT_IT_DOES[command].lower() in " ".join(out.lower().split())


def test_every_command_is_in_this_test() -> None:
    assert set(subcommands()) == set(WHAT_IT_DOES)


def test_help_in_a_real_process() -> None:
    done = flad_process("--help")
    assert done.returncode == 0 and "usage: flad" in done.stdout
