"""`flad init`'s work: steps 3a (or 3b) of the guide as far as flad can take them.

Order matters: everything that can be refused (answers, the one-channel-per-quality
rule, the signer) is checked before the first file is written; then the keys, the
`.cer`, the configuration and the drop folders, each handed to the service's user.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from flad import identity, service_user, signing
from flad.init import configfile
from flad.init.certificate import CertificateResult, export_cer, load_signer
from flad.init.existing import read_existing, refusal
from flad.init.guide import FLA_APPLICATION
from flad.init.request import (
    DEFAULT_SERVICE_ROOT,
    DEFAULT_STATE_DIR,
    EXIT_OK,
    InitError,
    InitRequest,
    check_request,
    check_who,
    given_flags,
    usage,
)
from flad.init.sshkey import SshKeyResult, ssh_key
from flad.init.steps import ChecklistContext, checklist, render_checklist

__all__ = ["InitResult", "init_channel", "run_init"]


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


def init_channel(req: InitRequest, *, now: datetime | None = None) -> InitResult:
    """Do steps 3a (or 3b with --ssh-key) as far as flad can; InitError says why not."""
    now = now or datetime.now(UTC)
    req = replace(req, company_id=identity.normalize_enterprise_number(req.company_id))
    check_who(req)
    config_path = req.config_path.absolute()
    existing = read_existing(config_path)
    same = existing.same_quality(req.company_id, req.quality)
    if same is not None:
        raise refusal(req, config_path, same)
    check_request(req)
    name = req.name or f"{req.company_id}-{req.quality}"
    if name in existing.names():
        raise usage(f"--name {name!r} is already a channel of {config_path}: choose another")
    user = _service_user(req)
    signer, cert_warnings = load_signer(req, now)

    notes: list[str] = []
    made: list[Path] = []  # what init wrote or reuses of its own: handed over to `user`
    keys_dir = (req.keys_dir or config_path.parent / "keys").absolute()
    if not keys_dir.exists():
        keys_dir.mkdir(parents=True, mode=0o700)
        made.append(keys_dir)
    ssh, ssh_notes = ssh_key(req, keys_dir, name)
    notes += ssh_notes
    if req.ssh_key is None:
        made += [p for p in (ssh.private_path, ssh.public_path) if p is not None]

    cer_path: Path | None = None
    written = False
    if req.ssh_key is None:
        cer_path = keys_dir / f"{name}.cer"
        written = export_cer(signer, cer_path)
        made.append(cer_path)
    certificate = CertificateResult(cer_path, signing.describe_certificate(signer.certificate),
                                    cert_warnings, written)

    created = False
    if configfile.made_by_init(config_path):
        made.append(config_path)  # an earlier run's: --owner now hands it over too
    if not config_path.exists():
        configfile.create(config_path, (req.state_dir or DEFAULT_STATE_DIR).absolute())
        made.append(config_path)
        created = True

    outbox = (req.outbox or DEFAULT_SERVICE_ROOT / name / "outbox").absolute()
    inbox = (req.inbox or DEFAULT_SERVICE_ROOT / name / "inbox").absolute()
    appended = False
    folders: list[Path] = []
    if req.sender_id is not None:
        configfile.append_channel(config_path, req, name, ssh, outbox, inbox, now)
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


def _service_user(req: InitRequest) -> service_user.ServiceUser | None:
    if req.owner is None:
        return None
    try:
        return service_user.resolve(req.owner)
    except service_user.OwnerError as exc:
        raise usage(str(exc)) from None


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
        given_flags=given_flags(req),
    )
    print(render_checklist(req.quality, checklist(req.quality, ctx)), file=out)
    return EXIT_OK


