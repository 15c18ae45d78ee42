"""The configuration `flad init` writes: a `[daemon]` section for a new file, then one
commented `[[channel]]` block, appended only once the whole result is known to load.

The TOML is made by tomlkit, which writes values correctly quoted and keeps the comments
that explain each key; the result is proved by `config.loads` on the text that would be
written, before the file changes, so a block that would not load leaves the file as it
was. The file is only ever appended to: what a person wrote in it stays byte for byte.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from flad import config as config_mod
from flad import identity
from flad.init.files import write_new
from flad.init.guide import FLA_APPLICATION, QUALITY_LABELS
from flad.init.request import InitError, InitRequest
from flad.init.sshkey import SshKeyResult

__all__ = ["HEADER", "append_channel", "channel_block", "create", "made_by_init"]

HEADER = "# flad configuration, created by `flad init`."
_COMMENT_COLUMN = 42  # where the comments of one block line up
_PROBE_CODE = "ZZZZ"  # stands in for a missing --app-code while the block is checked


def _set(table: Any, key: str, value: Any, comment: str | None = None) -> None:
    """`key = value` with its comment lined up at _COMMENT_COLUMN."""
    item = tomlkit.item(value)
    if comment is not None:
        item.comment(comment)
        used = len(key) + 3 + len(item.as_string())
        item.trivia.comment_ws = " " * max(1, _COMMENT_COLUMN - used)
    table.add(key, item)


def _daemon_text(state_dir: Path) -> str:
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"{HEADER[2:]} Every key is documented in"))
    doc.add(tomlkit.comment("config.example.toml (flad init --print-example). Secrets are "
                            "never written here."))
    doc.add(tomlkit.nl())
    daemon = tomlkit.table()
    _set(daemon, "state_dir", str(state_dir), "journal (SQLite) and spool")
    _set(daemon, "log_format", "auto", "auto (JSON unless on a terminal) | json | console")
    _set(daemon, "log_level", "info", "debug | info | warning | error")
    doc.add("daemon", daemon)
    return tomlkit.dumps(doc)


def create(config_path: Path, state_dir: Path) -> None:
    """A new configuration with its `[daemon]` section, mode 0640.

    0640: no secret is ever in it (loading refuses one), but it maps the keys and folders;
    the service's group may read it, the drop group and others may not.
    """
    config_path.parent.mkdir(parents=True, exist_ok=True)
    write_new(config_path, _daemon_text(state_dir).encode("utf-8"), 0o640)


def made_by_init(path: Path) -> bool:
    """Whether `path` is a configuration an earlier `flad init` created."""
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline().startswith(HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def channel_block(req: InitRequest, name: str, ssh: SshKeyResult, outbox: Path, inbox: Path,
                  known_hosts: Path, now: datetime, code: str | None) -> str:
    """A complete, commented [[channel]] block; `code` None leaves the FLA code to fill in."""
    assert req.sender_id is not None and req.username is not None
    step = "3b (existing channel)" if req.ssh_key is not None else "3a (new channel)"
    doc = tomlkit.document()
    doc.add(tomlkit.nl())
    doc.add(tomlkit.comment(f"Added by `flad init` on {now.date().isoformat()}: the "
                            f"{req.quality} channel of {req.company_id},"))
    doc.add(tomlkit.comment(f'set up in Chaman as step {step} of "Etablir le canal batch". '
                            "The platform allows"))
    doc.add(tomlkit.comment("one SFTP channel per quality; this one carries every "
                            "application."))
    channel = tomlkit.table()
    _set(channel, "name", name, "your name for the channel")
    _set(channel, "quality", req.quality, f'"{QUALITY_LABELS[req.quality]}" in Chaman')
    _set(channel, "company_id", req.company_id, "enterprise number (BCE/KBO)")
    _set(channel, "sender_id", req.sender_id, "\"numéro d'expéditeur\" shown by Chaman")
    _set(channel, "outbox", str(outbox), "drops go to <outbox>/<test|production>/<app>/")
    _set(channel, "inbox", str(inbox), "replies come to <inbox>/<test|production>/")
    _set(channel, "production", False, "test first (INTEST); true once a test file passed")
    if req.quality in identity.MANDATARY_QUALITIES:
        mandates = req.config_path.absolute().parent / f"{name}-mandates.txt"
        channel.add(tomlkit.comment(f"mandates = {tomlkit.item(str(mandates)).as_string()}  "
                                    "# employers with an active FLA mandate in MAHIS, one "
                                    "enterprise number per line"))
    _set(channel, "sign_test_files", False, "INTEST needs no FS signature")

    sftp = tomlkit.table()
    _set(sftp, "host", req.host, "the platform's SFTP server")
    _set(sftp, "port", req.port, "8022 on the platform")
    _set(sftp, "username", req.username, "the user name chosen in Chaman")
    _set(sftp, "private_key", str(ssh.private_path), f"{ssh.description}, mode 0600")
    _set(sftp, "known_hosts", str(known_hosts),
         f"fill with: flad trust-host -c {req.config_path.absolute()} {name}")
    if ssh.is_rsa:
        _set(sftp, "legacy_ssh_rsa", True,
             "the server takes RSA keys with the legacy ssh-rsa signature")
    channel.add("sftp", sftp)

    signing_table = tomlkit.table()
    signing_table.comment("the qualified certificate whose .cer was uploaded in Chaman: it "
                          "signs the FS files")
    if req.pkcs12 is not None:
        _set(signing_table, "pkcs12", str(req.pkcs12.absolute()),
             "certificate and key in one file, mode 0600")
    else:
        assert req.certificate is not None and req.signing_key is not None
        _set(signing_table, "certificate", str(req.certificate.absolute()), "PEM certificate")
        _set(signing_table, "private_key", str(req.signing_key.absolute()),
             "PEM private key, mode 0600")
    if req.passphrase_file is not None:
        _set(signing_table, "passphrase_file", str(req.passphrase_file.absolute()),
             "the key's passphrase, mode 0600")
    channel.add("signing", signing_table)

    app: Table = tomlkit.table()
    _set(app, "name", FLA_APPLICATION, f"folder: <outbox>/test/{FLA_APPLICATION}/")
    comment = "the FLA code from the FLA batch manual; not public here"
    if code is None:
        app.add(tomlkit.comment(f'code = "...."{" " * 26}# TO FILL IN: {comment}'))
    else:
        _set(app, "code", code, comment)
    app.add(tomlkit.comment('xsd = "/etc/flad/xsd/fla.xsd"          # the official FLA XSD '
                            "from the portal"))
    applications = tomlkit.aot()
    applications.append(app)
    channel.add("application", applications)

    channels = tomlkit.aot()
    channels.append(channel)
    doc.add("channel", channels)
    return tomlkit.dumps(doc)


def append_channel(config_path: Path, req: InitRequest, name: str, ssh: SshKeyResult,
                   outbox: Path, inbox: Path, now: datetime) -> None:
    """Append the channel's block once the configuration it makes is known to load.

    Without --app-code the block is proved with a stand-in code: the file then lacks
    only the code, which the summary and `flad check` ask for.
    """
    known_hosts = config_path.parent / "known_hosts"
    block = channel_block(req, name, ssh, outbox, inbox, known_hosts, now, req.app_code)
    proof = channel_block(req, name, ssh, outbox, inbox, known_hosts, now,
                          req.app_code or _PROBE_CODE)
    current = config_path.read_text(encoding="utf-8")
    separator = "" if not current or current.endswith("\n") else "\n"
    try:
        config_mod.loads(current + separator + proof, config_path)
    except config_mod.ConfigError as exc:
        raise InitError(f"the channel block would not load, so {config_path} was left as it "
                        "was:\n" + "\n".join(f"  {p}" for p in exc.problems)) from None
    with config_path.open("ab") as f:
        f.write((separator + block).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
