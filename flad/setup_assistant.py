"""`flad init`: set up one channel the way "Etablir le canal batch" describes it.

Setting up the batch channel is mostly portal work (registration, Chaman access,
mandates, the FLA permission) that flad cannot do; what it can do is make the two files
Chaman asks for (the public SSH key, the certificate as .cer), refuse the set-up the
platform would refuse (a second SFTP channel for one quality), write a configuration
block that loads, and print the portal steps for the company's quality in the order
of the official guide, each naming its section, so nobody has to read the whole document to
find the part that applies.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import shlex
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from flad import config as config_mod
from flad import identity, service_user, signing

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_RSA_BITS",
    "FLA_PERMISSION",
    "KEY_TYPES",
    "QUALITY_LABELS",
    "ChecklistContext",
    "ChecklistItem",
    "InitError",
    "InitRequest",
    "InitResult",
    "add_parser",
    "checklist",
    "cmd_init",
    "explain",
    "init_channel",
    "render_checklist",
    "run_init",
]

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2

DEFAULT_HOST = "sftp.socialsecurity.be"
DEFAULT_PORT = config_mod.DEFAULT_PORT
# RSA because public clients report that the platform takes RSA user keys (with the
# legacy "ssh-rsa" signature); 4096 bits because the key lives for years.
DEFAULT_RSA_BITS = 4096
KEY_TYPES = ("rsa", "ed25519")
FLA_PERMISSION = "CareerPro - Federal Learning Account"
FLA_APPLICATION = "fla"
DEFAULT_STATE_DIR = Path("/var/lib/flad")
DEFAULT_SERVICE_ROOT = Path("/srv/flad")

#: The quality names as Chaman and "Gestion des accès" show them (guide §3.3.1, point 4).
QUALITY_LABELS: Mapping[str, str] = {
    "employer": "Employeur ONSS",
    "social_secretariat": "Secrétariat social",
    "service_provider": "Prestataire de service",
    "training_provider": "Prestataire de formation",
}

# Where each step stands in the official guide. Its table of contents and its text
# number the last sections differently; the titles are what a reader can search for.
GUIDE = '"Etablir le canal batch"'
S_STEP1 = '§3.1 "Etape 1 : inscrire son entreprise sur le portail de la sécurité sociale"'
S_STEP2 = "§3.2 \"Etape 2 : obtenir un accès au service en ligne 'CHAMAN'\""
S_ANNEX = ('annex "Identifier son gestionnaire d\'accès local" (5.1 in the contents, 6.1 in '
           "the text)")
S_QUALITY = ('"4. Activer une nouvelle qualité (ex prestataire de formation)" (and §2.5 '
             '"Spécificité des prestataires de formation")')
S_MANDATE = '§2.2.1 "Création d\'un mandat"'
S_STEP3 = '§3.3 "Etape 3 : activer le canal BATCH"'
S_3A = '§3.3.1 "Etape 3a: activer un nouveau canal BATCH"'
S_3B = '§3.3.2 "Etape 3b: activer un canal BATCH existant"'
S_CONNECT = ('"Information technique", "Connexion" (4.1 in the contents, 5.1 in the text)')
S_FILES = ('"Information technique", "Créer les fichiers" (4.2 in the contents, 5.2 in the '
           "text)")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # as config.py accepts it
_APP_CODE = re.compile(r"[A-Z0-9]{4}")
_SENDER = re.compile(r"[0-9]{1,6}")
_USERNAME = re.compile(r"[^\s\"'\\]{1,128}")
_PROBE_CODE = "ZZZZ"  # stands in for a missing --app-code while the block is checked

Ask = Callable[[str], str]


class InitError(Exception):
    """`flad init` cannot go on; the text says why and what to do. Never a secret in it."""

    def __init__(self, message: str, exit_code: int = EXIT_PROBLEM) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _usage(message: str) -> InitError:
    return InitError(message, EXIT_USAGE)


# --------------------------------------------------------------------------- checklist


@dataclass(frozen=True)
class ChecklistItem:
    """One thing a person does on the portal (or with flad), and where the guide says so."""

    section: str
    title: str
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChecklistContext:
    """What `flad init` knows, so the checklist names real files instead of placeholders."""

    config_path: str = "CONFIG"
    channel_name: str = "NAME"
    company_id: str = "BCE"
    public_key: str | None = None
    cer: str | None = None
    outbox: str = "<outbox>"
    inbox: str = "<inbox>"
    existing_channel: bool = False  # step 3b: the SFTP channel exists for another application
    configured: bool = False  # the [[channel]] block is in the configuration
    app_code_missing: bool = False
    given_flags: str | None = None  # the answers given this time, as flags; None: unknown


def _rerun_command(quality: str, ctx: ChecklistContext) -> str:
    """The next run's command: the answers already given as they were, placeholders only
    for what Chaman has not shown yet (sender number, user name) and the FLA code."""
    if ctx.given_flags is not None:
        given = f" {ctx.given_flags}" if ctx.given_flags else ""
    else:
        given = (" --certificate CERT --signing-key KEY (or --pkcs12 P12)"
                 + (" --ssh-key KEY" if ctx.existing_channel else ""))
    return (f"flad init -c {ctx.config_path} --quality {quality} --company {ctx.company_id} "
            f"--name {ctx.channel_name} --sender N --username U --app-code CODE{given}")


def _given_flags(req: InitRequest) -> str:
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


def checklist(quality: str, ctx: ChecklistContext | None = None) -> list[ChecklistItem]:
    """The set-up steps for `quality`, in the guide's order, each naming its section.

    Mandates appear only for mandataries, the quality activation only for training
    providers: the guide gives those steps to them alone.
    """
    if quality not in identity.QUALITIES:
        raise ValueError(f"unknown quality {quality!r}, expected one of "
                         f"{', '.join(identity.QUALITIES)}")
    ctx = ctx or ChecklistContext()
    label = QUALITY_LABELS[quality]
    items: list[ChecklistItem] = [
        ChecklistItem(S_STEP1, "Register the company on the social-security portal", (
            "Skip this when the company already uses a service of the portal.",
            "Otherwise: \"Etape 1 : Identifiez-vous en tant qu'employeur\" and \"Etape 2 : "
            "Enregistrez-vous sur le portail\", described on "
            "https://www.socialsecurity.be/site_fr/general/first_time.htm",
        )),
    ]
    if quality == "training_provider":
        items.append(ChecklistItem(S_QUALITY, f'Activate the quality "{label}" first', (
            "A channel in this quality can only be made once the quality exists, and its "
            "local manager is named while activating it.",
            "The entity's access manager (\"responsable d'accès entité\") logs in to "
            "\"Gestion des accès\" (UMAN) with the employer quality: www.socialsecurity.be "
            "→ entreprise → service en ligne → gestion des accès → gestion des accès.",
            f'Click the company\'s name; under "Activer la qualité" choose "{label}", '
            '"suivant"; fill in the activation screen, naming the local manager '
            '("gestionnaire local"), "suivant", "confirmer": "La qualité a bien été '
            'activée".',
            "That local manager gets Chaman access in this quality automatically.",
        )))
    items.append(ChecklistItem(f"{S_STEP2}; {S_ANNEX}", "Get access to Chaman", (
        f'The local manager ("gestionnaire local") of the quality "{label}" has it. Anyone '
        'else asks that local manager for "Gestion des canaux techniques" in the service '
        f'"Gestion des accès", under the quality "{label}".',
        'Who the local manager is: "Gestion des accès" → page "Vos responsables", at the '
        f'level of the quality "{label}" (the access manager is at the "entité" level).',
        '"Accès interdit" in Chaman means this step is not done.',
    )))
    if quality in identity.MANDATARY_QUALITIES:
        items.append(ChecklistItem(S_MANDATE, 'Mandates in MAHIS for "Federal Learning '
                                   'Account"', (
            "For each client employer, an active mandate for the service \"Federal Learning "
            "Account\" must link the employer (mandant) and your company (mandataire): "
            "www.socialsecurity.be → entreprise → service en ligne → MAHIS. The conditions "
            "are in \"lignes de conduite pour les prestataires de services\" on that page.",
            "An employer has only one FLA mandatary (it may differ from its DmfA or DIMONA "
            "one); without an active mandate the platform refuses the employer's files.",
            "List those employers' enterprise numbers, one per line, in a file named by "
            f'`mandates = "..."` in channel {ctx.channel_name}: flad then refuses, before '
            "sending, a file for an employer without a mandate.",
        )))
    login = ("www.socialsecurity.be → entreprise → Vers tous les services en ligne → Chaman "
             "→ gérer vos canaux techniques; public cible \"entreprise\"; log in with CSAM "
             f'(eID, itsme, ...); choose the quality "{label}".')
    if ctx.existing_channel:
        items.append(ChecklistItem(S_3B, f'Give the existing SFTP channel the permission '
                                   f'"{FLA_PERMISSION}"', _step_3b_lines(label)))
    else:
        items.append(ChecklistItem(f"{S_STEP3}; {S_3A}", "Create the SFTP channel in Chaman", (
            "One SFTP channel per quality: if Chaman already lists an SFTP channel in this "
            "quality (made for DmfA, DIMONA, ...), do not create one; follow step 3b "
            f"({S_3B}) instead, and give flad that channel's private key with --ssh-key.",
            login,
            f'If the quality "{label}" is not offered, the main access manager must create '
            'it in "gestion des accès".',
            '"Ajouter un compte FTP ou SFTP", Type "SFTP"; "Nom du compte": any name, for '
            f"instance {ctx.channel_name}.",
        )))
        items.append(ChecklistItem(S_3A, f'Tick the permission "{FLA_PERMISSION}"', (
            f'Under "Permissions sécurisées", tick "{FLA_PERMISSION}" '
            "(others, such as DmfA or DIMONA, as the company needs: the same channel carries "
            "every application).",
        )))
        pub = ctx.public_key or "the public SSH key (.pub, made by flad init)"
        cer = ctx.cer or "the certificate's .cer (made by flad init)"
        items.append(ChecklistItem(S_3A, "Upload the public SSH key and the certificate", (
            f'"Certificat": {cer}; "Nom du certificat": any name.',
            '"Nom d\'utilisateur": the technical SFTP user name you choose; keep it '
            "(--username).",
            f'"Clé SSH publique": {pub}',
            '"Valider": Chaman shows the "numéro d\'expéditeur"; keep it (--sender).',
        )))
    tell = f"{S_3A if not ctx.existing_channel else S_3B}; {S_CONNECT}"
    if ctx.configured:
        done = [f"Done: channel {ctx.channel_name} is in {ctx.config_path}."]
        if ctx.app_code_missing:
            done.append("Still to do: fill in the FLA application code (`code = ...` in its "
                        "[[channel.application]]), from the FLA batch manual.")
        items.append(ChecklistItem(tell, "Tell flad the sender number and user name",
                                   tuple(done)))
    else:
        items.append(ChecklistItem(tell, "Tell flad the sender number and user name", (
            "Run flad init with them (keys and .cer made by an earlier run are reused):",
            f"  {_rerun_command(quality, ctx)}",
        )))
    items.append(ChecklistItem(S_CONNECT, "Trust the server's host key", (
        f"  flad trust-host -c {ctx.config_path} {ctx.channel_name}",
        f"flad connects to {DEFAULT_HOST}, port {DEFAULT_PORT}, and shows the host key's "
        "fingerprint: compare it with the one your administrator published before "
        "accepting it.",
    )))
    items.append(ChecklistItem(S_FILES, "Send a first test file through INTEST", (
        "With production = false, files go to INTEST (simulation), where no FS signature "
        "is needed.",
        f"Drop an FLA XML file into {ctx.outbox}/test/{FLA_APPLICATION}/, then run:",
        f"  flad run -c {ctx.config_path} --once --wait-replies 600",
        "It waits until the platform's receipt (ACRF) is there and exits 0 only when it "
        f"is positive; the receipt is in {ctx.inbox}/test/ and "
        f"`flad status -c {ctx.config_path}` shows the outcome.",
        "Set production = true only after a positive receipt: files then go to IN, signed.",
    )))
    return items


def _step_3b_lines(label: str) -> tuple[str, ...]:
    return (
        "Keep the existing SFTP channel: no new certificate and no new SSH key, the "
        "existing ones are used.",
        "In Chaman: www.socialsecurity.be → entreprise → service en ligne → Chaman → gérer "
        f'vos canaux techniques; public cible "entreprise"; CSAM; the quality "{label}". '
        'Keep the "numéro d\'expéditeur" shown.',
        'On the line of the existing SFTP channel click "modifier" (keep the user name '
        f'shown); under "Permissions sécurisées" tick "{FLA_PERMISSION}", then "valider".',
    )


def _quality_notes(quality: str) -> tuple[str, ...]:
    if quality == "employer":
        return ("An employer sends only for its own enterprise number. When a mandatary "
                "sends your FLA data for you, you need no channel of your own (§2.2.2).",)
    if quality in identity.MANDATARY_QUALITIES:
        return ("A mandatary sends for its client employers, under each client's enterprise "
                "number, through one channel for all of them and all applications (§2.2.2). "
                "A company of a group can be the mandatary of the others (§2.3).",)
    return ("A training provider sends under its own enterprise number; the data may name a "
            "participant's employer, and no mandate is needed for that (§2.5).",)


def render_checklist(quality: str, items: list[ChecklistItem]) -> str:
    """The checklist as numbered text, each item followed by the guide's section it comes from."""
    label = QUALITY_LABELS[quality]
    lines = [f'Checklist for the quality {quality} ("{label}"), in the order of the official '
             f"guide {GUIDE}:"]
    lines += [f"  Note: {note}" for note in _quality_notes(quality)]
    for number, item in enumerate(items, start=1):
        lines.append(f"{number:2}. {item.title}  [guide {item.section}]")
        lines += [f"      {line}" for line in item.lines]
    return "\n".join(lines)


#: What `--explain` says first: the seed's FLA has ended, the channel it sets up lives on.
APPLICATIONS_NOTE = (
    "The Federal Learning Account (FLA) ended on 1 January 2026 (law of 14 January 2026:",
    "no new data is accepted; the data is kept until the end of 2026). The SFTP channel",
    "this checklist sets up lives on: it carries the DmfA (every quarter), DIMONA, the",
    "social-risk declarations, supplementary pensions and the generic documents. flad",
    "has profiles for the DmfA, DIMONA and the generic documents (profile = \"dmfa\",",
    "\"dimona\", \"generic\" in [[channel.application]]). Where a step names the FLA",
    "permission or an FLA mandate, tick or ask for the applications you send instead.",
)


def explain(quality: str) -> str:
    """The checklist of `flad init --explain`: nothing is read or written."""
    return "\n".join(APPLICATIONS_NOTE) + "\n\n" + render_checklist(quality, checklist(quality))


# --------------------------------------------------------------------------- the request


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


@dataclass(frozen=True)
class SshKeyResult:
    private_path: Path
    public_path: Path | None  # None: an existing key (--ssh-key) whose .pub flad did not write
    public_line: str
    description: str  # "RSA 4096", "Ed25519"
    fingerprint: str  # as `ssh-keygen -l` prints it
    is_rsa: bool
    generated: bool


@dataclass(frozen=True)
class CertificateResult:
    cer_path: Path | None  # None in step 3b: the existing channel keeps its certificate
    info: dict[str, str]
    warnings: tuple[str, ...]
    written: bool


@dataclass(frozen=True)
class InitResult:
    """What `flad init` did, for the printed summary and for tests."""

    request: InitRequest
    name: str
    config_path: Path
    config_created: bool
    ssh: SshKeyResult
    certificate: CertificateResult
    appended: bool
    outbox: Path
    inbox: Path
    notes: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())
    owner: str | None = None  # who the written files were handed to


# --------------------------------------------------------------------------- checks


def _check_who(req: InitRequest) -> None:
    """The quality and the company: enough to tell whether the channel already exists."""
    if req.quality not in identity.QUALITIES:
        raise _usage(f"--quality must be one of {', '.join(identity.QUALITIES)}, "
                     f"got {req.quality!r}")
    problem = identity.enterprise_number_problem(req.company_id)
    if problem:
        raise _usage(f"--company: {problem}")


def _check_request(req: InitRequest) -> None:
    """Refuse bad answers before anything is written, naming the flag to fix."""
    if req.name is not None and not _NAME.fullmatch(req.name):
        raise _usage(f"--name {req.name!r} must be letters, digits, '-', '_' or '.', at most "
                     "64 characters, starting with a letter or digit")
    if req.key_type not in KEY_TYPES:
        raise _usage(f"--key-type must be one of {', '.join(KEY_TYPES)}")
    if (req.sender_id is None) != (req.username is None):
        given, missing = (("--sender", "--username") if req.username is None
                          else ("--username", "--sender"))
        raise _usage(f"{given} needs {missing}: both come from Chaman once the channel exists")
    if req.sender_id is not None and not _SENDER.fullmatch(req.sender_id):
        raise _usage(f"--sender must be the 1 to 6 digits Chaman shows as \"numéro "
                     f"d'expéditeur\", got {req.sender_id!r}")
    if req.username is not None and not _USERNAME.fullmatch(req.username):
        raise _usage("--username must be the SFTP user name chosen in Chaman: no spaces, "
                     "no quotes")
    if req.app_code is not None and not _APP_CODE.fullmatch(req.app_code):
        raise _usage(f"--app-code must be 4 characters A-Z or 0-9 (the FLA code from the FLA "
                     f"batch manual), got {req.app_code!r}")
    if req.app_code is not None and req.sender_id is None:
        raise _usage("--app-code is written into the channel block, which needs --sender and "
                     "--username")
    if not 1 <= req.port <= 65535:
        raise _usage(f"--port must be between 1 and 65535, got {req.port}")
    if not req.host.strip() or any(c in req.host for c in "\"'\\ "):
        raise _usage(f"--host {req.host!r} is not a host name")
    if req.pkcs12 is not None and (req.certificate is not None or req.signing_key is not None):
        raise _usage("give --certificate and --signing-key, or --pkcs12, not both")
    if req.pkcs12 is None:
        if req.certificate is None and req.signing_key is None:
            raise _usage("--certificate CERT --signing-key KEY, or --pkcs12 P12, is required: "
                         "Chaman's \"Certificat\" field takes the public part of the qualified "
                         "certificate that signs the FS files, and the channel block names it")
        if req.certificate is None:
            raise _usage("--signing-key needs --certificate")
        if req.signing_key is None:
            raise _usage("--certificate needs --signing-key (the certificate's private key), "
                         "or give both in one file with --pkcs12")


@dataclass(frozen=True)
class _Existing:
    """The channels a configuration already has, read leniently (it may not load yet)."""

    channels: tuple[Mapping[str, Any], ...]

    def same_quality(self, company: str, quality: str) -> Mapping[str, Any] | None:
        for table in self.channels:
            raw_company = table.get("company_id")
            if not isinstance(raw_company, str):
                continue
            if (identity.normalize_enterprise_number(raw_company) == company
                    and table.get("quality") == quality):
                return table
        return None

    def names(self) -> set[str]:
        return {t["name"] for t in self.channels if isinstance(t.get("name"), str)}


def _read_existing(path: Path) -> _Existing:
    if not path.exists():
        return _Existing(())
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InitError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InitError(f"{path} is not valid TOML ({exc}); fix it first "
                        f"(flad check -c {path} --offline lists the problems)") from None
    tables = raw.get("channel", [])
    if not isinstance(tables, list):
        return _Existing(())
    return _Existing(tuple(t for t in tables if isinstance(t, dict)))


def _article(word: str) -> str:
    """ "an employer channel", "a service_provider channel" """
    return "an" if word[:1] in "aeiou" else "a"


def _refusal(req: InitRequest, path: Path, existing: Mapping[str, Any]) -> InitError:
    """Why a second channel for one quality is refused, and what step 3b says to do."""
    name = existing.get("name", "?")
    label = QUALITY_LABELS[req.quality]
    raw_apps = existing.get("application", [])
    apps = [a for a in raw_apps if isinstance(a, dict)] if isinstance(raw_apps, list) else []
    has_fla = any(a.get("name") == FLA_APPLICATION for a in apps)
    details = []
    if "sender_id" in existing:
        details.append(f"sender {existing['sender_id']}")
    sftp = existing.get("sftp")
    if isinstance(sftp, dict) and "username" in sftp:
        details.append(f"user {sftp['username']}")
    shown = f" ({', '.join(details)})" if details else ""
    lines = [
        f"refused: company {req.company_id} already has {_article(req.quality)} "
        f"{req.quality} channel in {path}: {name!r}{shown}.",
        f"The platform allows one SFTP channel per quality (the official guide {GUIDE}, "
        f"{S_STEP3}): the same channel carries every application (DmfA, DIMONA, FLA, ...), "
        "so a second one can be neither created nor used. Nothing was written.",
        f"Follow step 3b instead (guide {S_3B}):",
        *(f"  - {line}" for line in _step_3b_lines(label)),
    ]
    if has_fla:
        lines.append(f"  - channel {name!r} already has an application {FLA_APPLICATION!r} "
                     "in flad's configuration: nothing to add there.")
    else:
        lines += [
            f"  - in {path}, add to channel {name!r} an FLA application:",
            "        [[channel.application]]",
            f'        name = "{FLA_APPLICATION}"',
            '        code = "...."   # the FLA code from the FLA batch manual (not public here)',
        ]
    return InitError("\n".join(lines), EXIT_PROBLEM)


# --------------------------------------------------------------------------- files


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` whatever the umask; never replace an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _ssh_fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


SshPrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def _describe_ssh_key(key: SshPrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"ECDSA {key.curve.name}"
    return "Ed25519"


def _public_line(key: SshPrivateKey, comment: str) -> str:
    """The OpenSSH one-line form Chaman's "Clé SSH publique" field takes."""
    raw = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH)
    return f"{raw.decode('ascii')} {comment}"


def _load_ssh_private(path: Path) -> SshPrivateKey:
    """An existing SSH private key, unencrypted (the service runs unattended)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InitError(f"cannot read SSH private key {path}: {exc.strerror}") from None
    for loader in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
        try:
            key = loader(data, None)
        except TypeError:
            raise InitError(f"SSH private key {path} is encrypted: flad init only uses "
                            "unencrypted keys (kept at mode 0600); add the channel by hand "
                            "with passphrase_file in [channel.sftp]") from None
        except (ValueError, UnsupportedAlgorithm):
            continue
        if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
                      | ec.EllipticCurvePrivateKey):
            return key
        raise InitError(f"SSH private key {path} is of a type SSH cannot use here")
    raise InitError(f"{path} is not an SSH private key in OpenSSH or PEM format")


def _private_mode_problem(path: Path) -> str | None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return (f"{path} is readable by group or others (mode {mode:04o}); fix it with: "
                f"chmod 600 {path}")
    return None


def _ssh_key(req: InitRequest, keys_dir: Path, name: str) -> tuple[SshKeyResult, list[str]]:
    """Generate the channel's SSH key pair, or reuse the one already there: never overwrite."""
    notes: list[str] = []
    comment = f"flad-{name}@{req.company_id}"
    if req.ssh_key is not None:
        path = req.ssh_key.absolute()
        key = _load_ssh_private(path)
        problem = _private_mode_problem(path)
        if problem:
            raise InitError(f"--ssh-key: {problem}")
        line = _public_line(key, comment)
        notes.append(f"SSH key: using the existing channel's key {path} "
                     f"({_describe_ssh_key(key)}); nothing to upload (step 3b).")
        return SshKeyResult(path, None, line, _describe_ssh_key(key), _ssh_fingerprint(line),
                            isinstance(key, rsa.RSAPrivateKey), generated=False), notes

    private_path = keys_dir / f"{name}_{req.key_type}"
    public_path = private_path.with_name(private_path.name + ".pub")
    if private_path.exists() or private_path.is_symlink():
        key = _load_ssh_private(private_path)
        problem = _private_mode_problem(private_path)
        if problem:
            raise InitError(f"the existing SSH private key {problem}")
        line = _public_line(key, comment)
        if public_path.exists():
            written = public_path.read_text(encoding="ascii", errors="replace").split()
            if written[:2] != line.split()[:2]:
                raise InitError(f"{public_path} does not hold the public part of {private_path}; "
                                "flad init never overwrites a key: move one of them away")
            line = " ".join(written)
        else:
            _write_new(public_path, (line + "\n").encode("ascii"), 0o644)
        notes.append(f"SSH key: reusing {private_path} ({_describe_ssh_key(key)}), made by an "
                     "earlier run; it was not changed.")
        return SshKeyResult(private_path, public_path, line, _describe_ssh_key(key),
                            _ssh_fingerprint(line), isinstance(key, rsa.RSAPrivateKey),
                            generated=False), notes
    if public_path.exists() or public_path.is_symlink():
        raise InitError(f"{public_path} exists without its private key {private_path}; flad "
                        "init never overwrites a key: move it away first")

    new_key: SshPrivateKey
    if req.key_type == "rsa":
        new_key = rsa.generate_private_key(public_exponent=65537, key_size=req.rsa_bits)
    else:
        new_key = ed25519.Ed25519PrivateKey.generate()
        notes.append("SSH key: Ed25519 chosen. Public clients report RSA keys with the legacy "
                     "ssh-rsa algorithm for this server; whether it takes Ed25519 keys is not "
                     "documented publicly. Use the default (RSA) if the connection is refused.")
    pem = new_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    line = _public_line(new_key, comment)
    _write_new(private_path, pem, 0o600)
    _write_new(public_path, (line + "\n").encode("ascii"), 0o644)
    return SshKeyResult(private_path, public_path, line, _describe_ssh_key(new_key),
                        _ssh_fingerprint(line), isinstance(new_key, rsa.RSAPrivateKey),
                        generated=True), notes


def _read_passphrase(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise InitError(f"cannot read --passphrase-file {path}: {exc.strerror}") from None


def _load_signer(req: InitRequest, now: datetime) -> tuple[signing.Signer, tuple[str, ...]]:
    """The signer, refused when the key does not match or the certificate is not valid now."""
    passphrase = _read_passphrase(req.passphrase_file)
    source = f"--passphrase-file {req.passphrase_file}" if req.passphrase_file else None
    try:
        if req.pkcs12 is not None:
            signer = signing.load_signer_pkcs12(req.pkcs12, passphrase, source)
        else:
            assert req.certificate is not None and req.signing_key is not None
            signer = signing.load_signer_pem(req.certificate, req.signing_key, passphrase,
                                             source)
    except signing.PassphraseError as exc:
        hint = ("" if req.passphrase_file else
                "; give the file holding its passphrase with --passphrase-file F (mode 0600)")
        raise InitError(f"signing certificate: {exc}{hint}") from None
    except signing.SigningError as exc:
        raise InitError(f"signing certificate: {exc}") from None
    report = signing.check_signer(signer, now=now)
    if report.errors:
        raise InitError("signing certificate: " + "; ".join(report.errors)
                        + ": Chaman needs the certificate that will sign the FS files")
    return signer, report.warnings


def _export_cer(signer: signing.Signer, path: Path) -> bool:
    """Write the certificate's DER (.cer) for Chaman; True when written, False when reused."""
    der = signer.certificate.public_bytes(serialization.Encoding.DER)
    if path.exists() or path.is_symlink():
        if path.read_bytes() == der:
            return False
        raise InitError(f"{path} exists and holds another certificate; flad init never "
                        "overwrites it: move it away first (after a renewal, the new .cer "
                        "is uploaded in Chaman too)")
    _write_new(path, der, 0o644)
    return True


# --------------------------------------------------------------------------- configuration


def _toml(value: str | Path) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    text = str(value)
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _line(key: str, value: str, comment: str) -> str:
    return f"{f'{key} = {value}':<42} # {comment}"


def _daemon_text(state_dir: Path) -> str:
    return "\n".join([
        f"{_HEADER} Every key is documented in",
        "# config.example.toml (flad init --print-example). Secrets are never written here.",
        "",
        "[daemon]",
        _line("state_dir", _toml(state_dir), "journal (SQLite) and spool"),
        _line("log_format", '"auto"', "auto (JSON unless on a terminal) | json | console"),
        _line("log_level", '"info"', "debug | info | warning | error"),
        "",
    ])


def _channel_text(req: InitRequest, name: str, ssh: SshKeyResult, outbox: Path, inbox: Path,
                  known_hosts: Path, now: datetime, code: str | None) -> str:
    """A complete, commented [[channel]] block; `code` None leaves the FLA code to fill in."""
    assert req.sender_id is not None and req.username is not None
    step = "3b (existing channel)" if req.ssh_key is not None else "3a (new channel)"
    lines = [
        "",
        f"# Added by `flad init` on {now.date().isoformat()}: the {req.quality} channel of "
        f"{req.company_id},",
        f'# set up in Chaman as step {step} of "Etablir le canal batch". The platform allows',
        "# one SFTP channel per quality; this one carries every application.",
        "[[channel]]",
        _line("name", _toml(name), "your name for the channel"),
        _line("quality", _toml(req.quality), f'"{QUALITY_LABELS[req.quality]}" in Chaman'),
        _line("company_id", _toml(req.company_id), "enterprise number (BCE/KBO)"),
        _line("sender_id", _toml(req.sender_id), "\"numéro d'expéditeur\" shown by Chaman"),
        _line("outbox", _toml(outbox), "drops go to <outbox>/<test|production>/<app>/"),
        _line("inbox", _toml(inbox), "replies come to <inbox>/<test|production>/"),
        _line("production", "false", "test first (INTEST); true once a test file passed"),
    ]
    if req.quality in identity.MANDATARY_QUALITIES:
        mandates = req.config_path.absolute().parent / f"{name}-mandates.txt"
        lines.append(f"# mandates = {_toml(mandates)}  # employers with an active FLA mandate "
                     "in MAHIS, one enterprise number per line")
    lines += [
        _line("sign_test_files", "false", "INTEST needs no FS signature"),
        "",
        "[channel.sftp]",
        _line("host", _toml(req.host), "the platform's SFTP server"),
        _line("port", str(req.port), "8022 on the platform"),
        _line("username", _toml(req.username), "the user name chosen in Chaman"),
        _line("private_key", _toml(ssh.private_path), f"{ssh.description}, mode 0600"),
        _line("known_hosts", _toml(known_hosts),
              f"fill with: flad trust-host -c {req.config_path.absolute()} {name}"),
    ]
    if ssh.is_rsa:
        lines.append(_line("legacy_ssh_rsa", "true",
                           "the server takes RSA keys with the legacy ssh-rsa signature"))
    lines += [
        "",
        "# The qualified certificate whose .cer was uploaded in Chaman: it signs the FS files.",
        "[channel.signing]",
    ]
    if req.pkcs12 is not None:
        lines.append(_line("pkcs12", _toml(req.pkcs12.absolute()),
                           "certificate and key in one file, mode 0600"))
    else:
        assert req.certificate is not None and req.signing_key is not None
        lines.append(_line("certificate", _toml(req.certificate.absolute()), "PEM certificate"))
        lines.append(_line("private_key", _toml(req.signing_key.absolute()),
                           "PEM private key, mode 0600"))
    if req.passphrase_file is not None:
        lines.append(_line("passphrase_file", _toml(req.passphrase_file.absolute()),
                           "the key's passphrase, mode 0600"))
    lines += [
        "",
        "[[channel.application]]",
        _line("name", _toml(FLA_APPLICATION), f"folder: <outbox>/test/{FLA_APPLICATION}/"),
    ]
    comment = "the FLA code from the FLA batch manual; not public here"
    if code is None:
        lines.append(f'# code = "...."                          # TO FILL IN: {comment}')
    else:
        lines.append(_line("code", _toml(code), comment))
    lines += [
        '# xsd = "/etc/flad/xsd/fla.xsd"          # the official FLA XSD from the portal',
        "",
    ]
    return "\n".join(lines)


def _with_probe_code(block: str) -> str:
    return block.replace('# code = "...."', f'code = "{_PROBE_CODE}"', 1)


def _validate_text(config_path: Path, text: str) -> list[str]:
    """Problems of the configuration `text` would make, checked in a file next to it."""
    fd, probe_name = tempfile.mkstemp(prefix=f".{config_path.name}.", suffix=".init-probe",
                                      dir=config_path.parent)
    probe = Path(probe_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            config_mod.load(probe)
        except config_mod.ConfigError as exc:
            return [p.replace(str(probe.absolute()), str(config_path)) for p in exc.problems]
        return []
    finally:
        probe.unlink(missing_ok=True)


def _append(config_path: Path, block: str, *, prove: bool) -> None:
    """Append `block`; with `prove`, load the result and roll the file back if it fails."""
    original_size = config_path.stat().st_size
    with config_path.open("r+b") as f:
        f.seek(0, os.SEEK_END)
        if original_size and not _ends_with_newline(config_path):
            block = "\n" + block
        f.write(block.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    if not prove:
        return
    try:
        config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        with config_path.open("r+b") as f:
            f.truncate(original_size)
            os.fsync(f.fileno())
        raise InitError("the channel block did not load, so it was taken out again:\n"
                        + "\n".join(f"  {p}" for p in exc.problems)) from None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


# --------------------------------------------------------------------------- init


def init_channel(req: InitRequest, *, now: datetime | None = None) -> InitResult:
    """Do steps 3a (or 3b with --ssh-key) as far as flad can; InitError says why not.

    Order matters: everything that can be refused (answers, the one-channel-per-quality
    rule, the signer) is checked before the first file is written.
    """
    now = now or datetime.now(UTC)
    req = replace(req, company_id=identity.normalize_enterprise_number(req.company_id))
    _check_who(req)
    config_path = req.config_path.absolute()
    existing = _read_existing(config_path)
    same = existing.same_quality(req.company_id, req.quality)
    if same is not None:
        raise _refusal(req, config_path, same)
    _check_request(req)
    name = req.name or f"{req.company_id}-{req.quality}"
    if name in existing.names():
        raise _usage(f"--name {name!r} is already a channel of {config_path}: choose another")
    user = _service_user(req)
    signer, cert_warnings = _load_signer(req, now)

    notes: list[str] = []
    made: list[Path] = []  # what init wrote or reuses of its own: handed over to `user`
    keys_dir = (req.keys_dir or config_path.parent / "keys").absolute()
    if not keys_dir.exists():
        keys_dir.mkdir(parents=True, mode=0o700)
        made.append(keys_dir)
    ssh, ssh_notes = _ssh_key(req, keys_dir, name)
    notes += ssh_notes
    if req.ssh_key is None:
        made += [p for p in (ssh.private_path, ssh.public_path) if p is not None]

    cer_path: Path | None = None
    written = False
    if req.ssh_key is None:
        cer_path = keys_dir / f"{name}.cer"
        written = _export_cer(signer, cer_path)
        made.append(cer_path)
    certificate = CertificateResult(cer_path, signing.describe_certificate(signer.certificate),
                                    cert_warnings, written)

    created = False
    if _made_by_init(config_path):
        made.append(config_path)  # an earlier run's: --owner now hands it over too
    if not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        # 0640: no secret is ever in it (loading refuses one), but it maps the keys and
        # folders; the service's group may read it, the drop group and others may not.
        _write_new(config_path, _daemon_text((req.state_dir or DEFAULT_STATE_DIR).absolute())
                   .encode("utf-8"), 0o640)
        made.append(config_path)
        created = True

    outbox = (req.outbox or DEFAULT_SERVICE_ROOT / name / "outbox").absolute()
    inbox = (req.inbox or DEFAULT_SERVICE_ROOT / name / "inbox").absolute()
    appended = False
    folders: list[Path] = []
    if req.sender_id is not None:
        block = _channel_text(req, name, ssh, outbox, inbox, config_path.parent / "known_hosts",
                              now, req.app_code)
        current = config_path.read_text(encoding="utf-8")
        separator = "" if not current or current.endswith("\n") else "\n"
        probe_block = block if req.app_code is not None else _with_probe_code(block)
        problems = _validate_text(config_path, current + separator + probe_block)
        if problems:
            raise InitError(f"the channel block would not load, so {config_path} was left as "
                            "it was:\n" + "\n".join(f"  {p}" for p in problems))
        _append(config_path, block, prove=req.app_code is not None)
        appended = True
        folders = service_user.make_folders(  # made for `user`, in their parent's group
            service_user.drop_folders(outbox, inbox, FLA_APPLICATION), user)
    if user is not None:
        fresh = {keys_dir} if made and made[0] == keys_dir else set()
        if ssh.generated:
            fresh |= {ssh.private_path, *([ssh.public_path] if ssh.public_path else [])}
        if certificate.written and cer_path is not None:
            fresh.add(cer_path)
        if created:
            fresh.add(config_path)
        for path in service_user.hand_over(made, user):
            if path not in fresh:
                notes.append(f"Handed over to {user.name}: {path} (made by an earlier run).")
    return InitResult(req, name, config_path, created, ssh, certificate, appended, outbox, inbox,
                      tuple(notes), tuple(_read_warnings(req, config_path, user,
                                                         made + folders)),
                      user.name if user is not None else None)


_HEADER = "# flad configuration, created by `flad init`."


def _made_by_init(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline().startswith(_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def _service_user(req: InitRequest) -> service_user.ServiceUser | None:
    if req.owner is None:
        return None
    try:
        return service_user.resolve(req.owner)
    except service_user.OwnerError as exc:
        raise _usage(str(exc)) from None


def _read_warnings(req: InitRequest, config_path: Path,
                   user: service_user.ServiceUser | None, made: list[Path]) -> list[str]:
    """What the service will not be able to read, with the fix; or, for root without
    --owner, that everything written belongs to root, and the chown that gives it away."""
    if user is None:
        if os.geteuid() != 0:
            return []
        return ["flad init ran as root without --owner: what it wrote belongs to root, and a "
                "service that runs as another user cannot read its keys. Give it to that user "
                "(flad in the systemd unit) with: "
                + shlex.join(["chown", "flad", *map(str, made)])
                + " (or use --owner flad next time)"]
    private = [(p, what) for p, what in ((req.signing_key, "signing private key"),
                                         (req.pkcs12, "PKCS#12 file"),
                                         (req.passphrase_file, "passphrase file"),
                                         (req.ssh_key, "SSH private key")) if p is not None]
    public = [(p, what) for p, what in ((req.certificate, "certificate"),
                                        (config_path, "configuration")) if p is not None]
    return service_user.read_problems(user, [(p.absolute(), w) for p, w in private],
                                      [(p.absolute(), w) for p, w in public])


def _summary(result: InitResult) -> str:
    req = result.request
    ssh = result.ssh
    cert = result.certificate
    step = ("step 3b: the existing SFTP channel" if req.ssh_key is not None
            else "step 3a: a new SFTP channel")
    lines = [f"flad init: {req.quality} channel {result.name!r} of {req.company_id} ({step})"]
    if result.config_created:
        lines.append(f"Configuration: created {result.config_path} with a [daemon] section.")
    if ssh.generated:
        lines.append(f"SSH key: generated {ssh.description} key {ssh.private_path} (mode 0600, "
                     "OpenSSH format, no passphrase: keep it on this machine only).")
    lines += [f"{note}" for note in result.notes]
    if result.owner is not None:
        lines.append(f"Owner: what flad init wrote belongs to {result.owner}, the user the "
                     "service runs as (keys 0600, configuration 0640).")
    if ssh.public_path is not None:
        lines.append(f"  Public key for Chaman's \"Clé SSH publique\" field: {ssh.public_path}")
    lines += [f"  {ssh.public_line[:60]}... ({ssh.fingerprint})"]
    info = cert.info
    if cert.cer_path is not None:
        done = "exported" if cert.written else "already there, unchanged"
        lines.append(f"Certificate for Chaman's \"Certificat\" field: {cert.cer_path} (DER, "
                     f"{done})")
    else:
        lines.append("Signing certificate (it must be the one the existing channel uses):")
    lines += [
        f"  subject: {info['subject']}",
        f"  issuer:  {info['issuer']}",
        f"  valid:   {info['not_before']} to {info['not_after']}",
        f"  key:     {info['key']}, SHA-256 fingerprint {info['sha256_fingerprint']}",
    ]
    lines += [f"  warning: {w}" for w in cert.warnings]
    if result.appended:
        lines.append(f"Configuration: channel {result.name!r} appended to {result.config_path} "
                     "(test environment first: production = false); it loads.")
        if req.app_code is None:
            lines.append("  The FLA application code is missing: fill in `code = ...` in its "
                         "[[channel.application]] with the code from the FLA batch manual "
                         "(not public here). Until then `flad check` reports it.")
        run_as = f"sudo -u {result.owner} " if result.owner is not None else ""
        lines.append(f"  Check it with: {run_as}flad check -c {result.config_path} --offline")
    else:
        lines.append("Configuration: no channel block yet. Create the channel in Chaman "
                     "(checklist below), then run flad init again with --sender and "
                     "--username (and --app-code): the keys above are reused.")
    return "\n".join(lines)


def run_init(req: InitRequest, *, out: TextIO | None = None, err: TextIO | None = None,
             now: datetime | None = None) -> int:
    """`flad init` without the questions: do the work, print the summary and the checklist."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        result = init_channel(req, now=now)
    except InitError as exc:
        print(f"flad init: {exc}", file=err)
        return exc.exit_code
    req = result.request  # with the enterprise number normalized
    print(_summary(result), file=out)
    for warning in result.warnings:
        print(f"flad init: warning: {warning}", file=err)
    print(file=out)
    ctx = ChecklistContext(
        config_path=str(result.config_path), channel_name=result.name,
        company_id=req.company_id,
        public_key=str(result.ssh.public_path) if result.ssh.public_path else None,
        cer=str(result.certificate.cer_path) if result.certificate.cer_path else None,
        outbox=str(result.outbox), inbox=str(result.inbox),
        existing_channel=req.ssh_key is not None, configured=result.appended,
        app_code_missing=result.appended and req.app_code is None,
        given_flags=_given_flags(req),
    )
    print(render_checklist(req.quality, checklist(req.quality, ctx)), file=out)
    return EXIT_OK


# --------------------------------------------------------------------------- command line


def example_configuration() -> str:
    """config.example.toml as installed with flad (package data), for --print-example."""
    return (resources.files("flad") / "data" / "config.example.toml").read_text(
        encoding="utf-8")


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


def _sender_problem(value: str) -> str | None:
    if not value or _SENDER.fullmatch(value):
        return None
    return (f"{value!r}: the sender number is the 1 to 6 digits Chaman shows as \"numéro "
            "d'expéditeur\" (blank if the channel is not created yet)")


def _username_problem(value: str) -> str | None:
    if not value:
        return "the user name is needed"
    return None if _USERNAME.fullmatch(value) else "no spaces, no quotes: the name from Chaman"


def _app_code_problem(value: str) -> str | None:
    if not value or _APP_CODE.fullmatch(value):
        return None
    return (f"{value!r}: the application code is 4 characters A-Z or 0-9, as the FLA batch "
            "manual writes it (blank: fill it in later)")


def _signer_problem(certificate: str | None, signing_key: str | None, pkcs12: str | None,
                    passphrase_file: str | None) -> tuple[str, bool] | None:
    """Why the signer does not open, and whether the passphrase is the cause; None if it
    opens. Tried while asking, so that a wrong answer is asked again at once."""
    source = f"passphrase file {passphrase_file}" if passphrase_file else None
    try:
        passphrase = _read_passphrase(_optional_path(passphrase_file))
        if pkcs12 is not None:
            signing.load_signer_pkcs12(Path(pkcs12).expanduser(), passphrase, source)
        elif certificate is not None and signing_key is not None:
            signing.load_signer_pem(Path(certificate).expanduser(),
                                    Path(signing_key).expanduser(), passphrase, source)
        else:
            return None  # an incomplete pair: run_init names the missing flag
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


def _optional_path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def gather(args: argparse.Namespace, *, interactive: bool, ask: Ask = input) -> InitRequest:
    """The answers from the flags, asking on a terminal for those left out.

    Without a terminal nothing is asked: a missing required answer is a usage error that
    names the flag, so that scripts fail clearly instead of hanging on a question.
    """
    def missing(flag: str, why: str) -> InitError:
        return _usage(f"{flag} is required ({why}); without a terminal nothing is asked")

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
                                "created yet): ", _sender_problem) or None
            if sender is not None:
                username = _ask_until(ask, "SFTP user name chosen in Chaman: ",
                                      _username_problem)
        if sender is not None and app_code is None and interactive:
            app_code = _ask_until(ask, "FLA application code from the FLA batch manual (blank: "
                                  "fill in later): ", _app_code_problem) or None
    except EOFError:
        raise _usage("no answer (end of input)") from None
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


def cmd_init(args: argparse.Namespace) -> int:
    """`flad init`: the checklist alone with --explain, otherwise set up one channel."""
    if args.explain is not None:
        print(explain(args.explain))
        return EXIT_OK
    if args.print_example:
        sys.stdout.write(example_configuration())
        return EXIT_OK
    try:
        request = gather(args, interactive=sys.stdin.isatty())
    except InitError as exc:
        print(f"flad init: {exc}", file=sys.stderr)
        return exc.exit_code
    return run_init(request)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `flad init` on the `flad` command's subparsers."""
    p = subparsers.add_parser(
        "init", help="set up a channel: SSH keys, certificate for Chaman, configuration, "
        "checklist",
        description="Set up one SFTP channel as the official guide \"Etablir le canal batch\" "
        "describes: refuse a second channel for a quality the configuration already has "
        "(step 3b applies), generate the SSH key pair, export the signing certificate as a "
        ".cer for Chaman, append a [[channel]] block once --sender and --username are known, "
        "and print the portal checklist for the quality. Questions are asked on a terminal "
        "for answers left out; without one, every required answer is a flag.")
    p.add_argument("--explain", choices=identity.QUALITIES, metavar="QUALITY",
                   help="only print the checklist for QUALITY (one of "
                   f"{', '.join(identity.QUALITIES)}); reads and writes nothing")
    p.add_argument("--print-example", action="store_true",
                   help="only print the example configuration that documents every key with "
                   "its default (config.example.toml); reads and writes nothing")
    p.add_argument("-c", "--config", metavar="CONFIG",
                   help="flad's TOML configuration; created (with [daemon]) when missing")
    p.add_argument("--quality", choices=identity.QUALITIES, help="the channel's quality")
    p.add_argument("--company", metavar="BCE", help="the company's enterprise number")
    p.add_argument("--name", help="channel name (default: <company>-<quality>)")
    p.add_argument("--keys-dir", metavar="DIR",
                   help="where keys and the .cer go (default: keys/ next to the configuration)")
    p.add_argument("--key-type", choices=KEY_TYPES, default="rsa",
                   help="SSH key type (default rsa: RSA 4096, which the platform takes)")
    p.add_argument("--ssh-key", metavar="KEY",
                   help="step 3b: the private key of the SFTP channel that already exists in "
                   "Chaman (nothing is generated)")
    p.add_argument("--certificate", metavar="CERT", help="signing certificate (PEM or DER)")
    p.add_argument("--signing-key", metavar="KEY", help="its private key (PEM)")
    p.add_argument("--pkcs12", metavar="P12", help="or: certificate and key in one .p12/.pfx")
    p.add_argument("--passphrase-file", metavar="F", help="file holding the signing key's "
                   "passphrase")
    p.add_argument("--sender", metavar="N", help="sender number Chaman showed (\"numéro "
                   "d'expéditeur\"); with --username, appends the channel block")
    p.add_argument("--username", metavar="U", help="SFTP user name chosen in Chaman")
    p.add_argument("--app-code", metavar="CODE", help="the FLA application code from the FLA "
                   "batch manual (4 characters); left to fill in when missing")
    p.add_argument("--host", metavar="H", default=DEFAULT_HOST,
                   help=f"SFTP host (default {DEFAULT_HOST})")
    p.add_argument("--port", metavar="P", type=int, default=DEFAULT_PORT,
                   help=f"SFTP port (default {DEFAULT_PORT})")
    p.add_argument("--outbox", metavar="DIR", help="default /srv/flad/<name>/outbox")
    p.add_argument("--inbox", metavar="DIR", help="default /srv/flad/<name>/inbox")
    p.add_argument("--owner", metavar="USER",
                   help="the user the service runs as (flad under systemd): keys, .cer, a new "
                   "configuration and the drop folders are written for that user, and the "
                   "files only named (signing key, passphrase file) are checked for it")
    p.add_argument("--state-dir", metavar="DIR", help="daemon.state_dir when the configuration "
                   f"is created (default {DEFAULT_STATE_DIR})")
    p.set_defaults(func=cmd_init)
