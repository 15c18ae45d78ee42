"""What `flad init` is asked to do, and the refusal of answers that cannot work.

Every answer is checked before the first file is written, and a refusal names the flag
to fix; the same shape rules serve the questions asked on a terminal.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from flad import config as config_mod
from flad import identity
from flad.init.guide import DEFAULT_HOST

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_RSA_BITS",
    "DEFAULT_SERVICE_ROOT",
    "DEFAULT_STATE_DIR",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "KEY_TYPES",
    "InitError",
    "InitRequest",
    "app_code_problem",
    "check_request",
    "check_who",
    "given_flags",
    "sender_problem",
    "usage",
    "username_problem",
]

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2

DEFAULT_PORT = config_mod.DEFAULT_PORT
# RSA because public clients report that the platform takes RSA user keys (with the
# legacy "ssh-rsa" signature); 4096 bits because the key lives for years.
DEFAULT_RSA_BITS = 4096
KEY_TYPES = ("rsa", "ed25519")
DEFAULT_STATE_DIR = Path("/var/lib/flad")
DEFAULT_SERVICE_ROOT = Path("/srv/flad")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # as config.py accepts it
_APP_CODE = re.compile(r"[A-Z0-9]{4}")
_SENDER = re.compile(r"[0-9]{1,6}")
_USERNAME = re.compile(r"[^\s\"'\\]{1,128}")


class InitError(Exception):
    """`flad init` cannot go on; the text says why and what to do. Never a secret in it."""

    def __init__(self, message: str, exit_code: int = EXIT_PROBLEM) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def usage(message: str) -> InitError:
    """A refusal of the command line itself (exit 2)."""
    return InitError(message, EXIT_USAGE)


@dataclass(frozen=True)
class InitRequest:
    """Every answer `flad init` needs, whether it came from a flag or a question."""

    config_path: Path
    quality: str
    company_id: str
    name: str | None = None
    keys_dir: Path | None = None
    sender_id: str | None = None
    username: str | None = None
    certificate: Path | None = None
    signing_key: Path | None = None
    pkcs12: Path | None = None
    passphrase_file: Path | None = None
    key_type: str = "rsa"
    ssh_key: Path | None = None  # step 3b: the existing channel's private key
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    app_code: str | None = None
    outbox: Path | None = None
    inbox: Path | None = None
    state_dir: Path | None = None
    owner: str | None = None  # the user the service runs as: it gets what init writes
    rsa_bits: int = DEFAULT_RSA_BITS  # not a flag: tests use smaller keys to run faster


def check_who(req: InitRequest) -> None:
    """The quality and the company: enough to tell whether the channel already exists."""
    if req.quality not in identity.QUALITIES:
        raise usage(f"--quality must be one of {', '.join(identity.QUALITIES)}, "
                    f"got {req.quality!r}")
    problem = identity.enterprise_number_problem(req.company_id)
    if problem:
        raise usage(f"--company: {problem}")


def check_request(req: InitRequest) -> None:
    """Refuse bad answers before anything is written, naming the flag to fix."""
    if req.name is not None and not _NAME.fullmatch(req.name):
        raise usage(f"--name {req.name!r} must be letters, digits, '-', '_' or '.', at most "
                    "64 characters, starting with a letter or digit")
    if req.key_type not in KEY_TYPES:
        raise usage(f"--key-type must be one of {', '.join(KEY_TYPES)}")
    if (req.sender_id is None) != (req.username is None):
        given, missing = (("--sender", "--username") if req.username is None
                          else ("--username", "--sender"))
        raise usage(f"{given} needs {missing}: both come from Chaman once the channel exists")
    if req.sender_id is not None and not _SENDER.fullmatch(req.sender_id):
        raise usage(f"--sender must be the 1 to 6 digits Chaman shows as \"numéro "
                    f"d'expéditeur\", got {req.sender_id!r}")
    if req.username is not None and not _USERNAME.fullmatch(req.username):
        raise usage("--username must be the SFTP user name chosen in Chaman: no spaces, "
                    "no quotes")
    if req.app_code is not None and not _APP_CODE.fullmatch(req.app_code):
        raise usage(f"--app-code must be 4 characters A-Z or 0-9 (the FLA code from the FLA "
                    f"batch manual), got {req.app_code!r}")
    if req.app_code is not None and req.sender_id is None:
        raise usage("--app-code is written into the channel block, which needs --sender and "
                    "--username")
    if not 1 <= req.port <= 65535:
        raise usage(f"--port must be between 1 and 65535, got {req.port}")
    if not req.host.strip() or any(c in req.host for c in "\"'\\ "):
        raise usage(f"--host {req.host!r} is not a host name")
    if req.pkcs12 is not None and (req.certificate is not None or req.signing_key is not None):
        raise usage("give --certificate and --signing-key, or --pkcs12, not both")
    if req.pkcs12 is None:
        if req.certificate is None and req.signing_key is None:
            raise usage("--certificate CERT --signing-key KEY, or --pkcs12 P12, is required: "
                        "Chaman's \"Certificat\" field takes the public part of the qualified "
                        "certificate that signs the FS files, and the channel block names it")
        if req.certificate is None:
            raise usage("--signing-key needs --certificate")
        if req.signing_key is None:
            raise usage("--certificate needs --signing-key (the certificate's private key), "
                        "or give both in one file with --pkcs12")


def given_flags(req: InitRequest) -> str:
    """The answers of `req` that a second run needs again, as shell-quoted flags."""
    flags: list[str] = []

    def add(flag: str, value: object | None, default: object | None = None) -> None:
        if value is not None and value != default:
            flags.extend([flag, str(value.absolute() if isinstance(value, Path) else value)])

    add("--certificate", req.certificate)
    add("--signing-key", req.signing_key)
    add("--pkcs12", req.pkcs12)
    add("--passphrase-file", req.passphrase_file)
    add("--ssh-key", req.ssh_key)
    add("--key-type", req.key_type, "rsa")
    add("--keys-dir", req.keys_dir)
    add("--owner", req.owner)
    add("--host", req.host, DEFAULT_HOST)
    add("--port", req.port, DEFAULT_PORT)
    add("--outbox", req.outbox)
    add("--inbox", req.inbox)
    return shlex.join(flags)


# -- the same shape rules, as a question's answer is checked --------------------------

def sender_problem(value: str) -> str | None:
    if not value or _SENDER.fullmatch(value):
        return None
    return (f"{value!r}: the sender number is the 1 to 6 digits Chaman shows as \"numéro "
            "d'expéditeur\" (blank if the channel is not created yet)")


def username_problem(value: str) -> str | None:
    if not value:
        return "the user name is needed"
    return None if _USERNAME.fullmatch(value) else "no spaces, no quotes: the name from Chaman"


def app_code_problem(value: str) -> str | None:
    if not value or _APP_CODE.fullmatch(value):
        return None
    return (f"{value!r}: the application code is 4 characters A-Z or 0-9, as the FLA batch "
            "manual writes it (blank: fill it in later)")
