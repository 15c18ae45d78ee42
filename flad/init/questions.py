"""The answers `flad init` needs: from its flags, and on a terminal from questions.

Without a terminal nothing is asked: a missing required answer is a usage error that
names the flag, so that scripts fail clearly instead of hanging on a question. On a
terminal an answer that cannot work (a protected key without its passphrase, a sender
number of the wrong shape) is asked again at once, with the reason.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from flad import identity, signing
from flad.init.certificate import read_passphrase
from flad.init.request import (
    InitError,
    InitRequest,
    app_code_problem,
    sender_problem,
    usage,
    username_problem,
)

__all__ = ["Ask", "gather"]

Ask = Callable[[str], str]


def _ask_until(ask: Ask, prompt: str, check: Callable[[str], str | None]) -> str:
    """Ask again until `check` accepts the answer (None), showing its reason."""
    while True:
        answer = ask(prompt).strip()
        reason = check(answer)
        if reason is None:
            return answer
        print(f"  {reason}", file=sys.stderr)


def _quality_problem(value: str) -> str | None:
    return None if value in identity.QUALITIES else f"one of {', '.join(identity.QUALITIES)}"


def _company_problem(value: str) -> str | None:
    return identity.enterprise_number_problem(identity.normalize_enterprise_number(value))


def _optional_path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _signer_problem(certificate: str | None, signing_key: str | None, pkcs12: str | None,
                    passphrase_file: str | None) -> tuple[str, bool] | None:
    """Why the signer does not open, and whether the passphrase is the cause; None if it
    opens. Tried while asking, so that a wrong answer is asked again at once."""
    source = f"passphrase file {passphrase_file}" if passphrase_file else None
    try:
        passphrase = read_passphrase(_optional_path(passphrase_file))
        if pkcs12 is None and (certificate is None or signing_key is None):
            return None  # an incomplete pair: run_init names the missing flag
        signing.load_signer(_optional_path(certificate), _optional_path(signing_key),
                            _optional_path(pkcs12), passphrase, source)
    except InitError as exc:  # the passphrase file cannot be read
        return str(exc), True
    except signing.PassphraseError as exc:
        return str(exc), True
    except signing.SigningError as exc:
        return str(exc), False
    return None
def _ask_signer(ask: Ask, certificate: str | None, signing_key: str | None,
                pkcs12: str | None, passphrase_file: str | None
                ) -> tuple[str | None, str | None, str | None, str | None]:
    """Certificate, key and passphrase file, asked until the signer opens.

    A blank or wrong passphrase (file) is asked again at once, naming the file; files
    asked here that do not open are asked again; files given as flags are not asked
    again (run_init then says what is wrong with them).
    """
    asked = certificate is None and signing_key is None and pkcs12 is None
    while True:
        if asked:
            first = _ask_until(ask, "Signing certificate: PEM/DER certificate, or PKCS#12 "
                               "(.p12/.pfx) file: ", lambda v: None if v else "a file is needed")
            if Path(first).suffix.lower() in (".p12", ".pfx"):
                certificate, signing_key, pkcs12 = None, None, first
            else:
                certificate, pkcs12 = first, None
                signing_key = _ask_until(ask, "Its private key (PEM): ",
                                         lambda v: None if v else "a file is needed")
        problem = _signer_problem(certificate, signing_key, pkcs12, passphrase_file)
        while problem is not None and problem[1]:
            print(f"  {problem[0]}", file=sys.stderr)
            passphrase_file = _ask_until(
                ask, "File holding the key's passphrase (mode 0600): ",
                lambda v: None if v else "the key is protected: a passphrase file is needed")
            problem = _signer_problem(certificate, signing_key, pkcs12, passphrase_file)
        if problem is None or not asked:
            return certificate, signing_key, pkcs12, passphrase_file
        print(f"  {problem[0]}", file=sys.stderr)


def gather(args: argparse.Namespace, *, interactive: bool, ask: Ask = input) -> InitRequest:
    """The answers from the flags, asking on a terminal for those left out.

    Without a terminal nothing is asked: a missing required answer is a usage error that
    names the flag, so that scripts fail clearly instead of hanging on a question.
    """
    def missing(flag: str, why: str) -> InitError:
        return usage(f"{flag} is required ({why}); without a terminal nothing is asked")

    try:
        config = args.config
        if config is None:
            if not interactive:
                raise missing("-c/--config", "the configuration file to create or extend")
            config = _ask_until(ask, "Configuration file [/etc/flad/flad.toml]: ",
                                lambda _: None) or "/etc/flad/flad.toml"
        quality = args.quality
        if quality is None:
            if not interactive:
                raise missing("--quality", f"one of {', '.join(identity.QUALITIES)}")
            quality = _ask_until(ask, f"Quality ({', '.join(identity.QUALITIES)}): ",
                                 _quality_problem)
        company = args.company
        if company is None:
            if not interactive:
                raise missing("--company", "the company's enterprise number (BCE/KBO)")
            company = _ask_until(ask, "Enterprise number (BCE/KBO) of the company: ",
                                 _company_problem)
        company = identity.normalize_enterprise_number(company)
        name = args.name
        if name is None and interactive:
            default = f"{company}-{quality}"
            name = ask(f"Channel name [{default}]: ").strip() or default
        certificate, signing_key, pkcs12 = args.certificate, args.signing_key, args.pkcs12
        passphrase_file = args.passphrase_file
        if interactive:
            certificate, signing_key, pkcs12, passphrase_file = _ask_signer(
                ask, certificate, signing_key, pkcs12, passphrase_file)
        sender, username, app_code = args.sender, args.username, args.app_code
        if sender is None and username is None and interactive:
            sender = _ask_until(ask, "Sender number shown by Chaman (blank: the channel is not "
                                "created yet): ", sender_problem) or None
            if sender is not None:
                username = _ask_until(ask, "SFTP user name chosen in Chaman: ",
                                      username_problem)
        if sender is not None and app_code is None and interactive:
            app_code = _ask_until(ask, "FLA application code from the FLA batch manual (blank: "
                                  "fill in later): ", app_code_problem) or None
    except EOFError:
        raise usage("no answer (end of input)") from None
    return InitRequest(
        config_path=Path(config).expanduser(), quality=quality, company_id=company, name=name,
        keys_dir=_optional_path(args.keys_dir), sender_id=sender, username=username,
        certificate=_optional_path(certificate), signing_key=_optional_path(signing_key),
        pkcs12=_optional_path(pkcs12), passphrase_file=_optional_path(passphrase_file),
        key_type=args.key_type, ssh_key=_optional_path(args.ssh_key), host=args.host,
        port=args.port, app_code=app_code, outbox=_optional_path(args.outbox),
        inbox=_optional_path(args.inbox), state_dir=_optional_path(args.state_dir),
        owner=args.owner,
    )


