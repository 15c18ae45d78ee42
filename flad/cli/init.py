"""`flad init`: set up one channel, or print the guide's checklist (`--explain`).

The work is in flad.init; this module owns the flags and decides whether questions
may be asked (only on a terminal).
"""

from __future__ import annotations

import argparse
import sys

from flad import identity
from flad import init as setup
from flad.cli.common import EXIT_OK, Subparsers


def run(args: argparse.Namespace) -> int:
    """`flad init`: the checklist alone with --explain, otherwise set up one channel."""
    if args.explain is not None:
        print(setup.explain(args.explain))
        return EXIT_OK
    if args.print_example:
        sys.stdout.write(setup.example_configuration())
        return EXIT_OK
    try:
        request = setup.gather(args, interactive=sys.stdin.isatty())
    except setup.InitError as exc:
        print(f"flad init: {exc}", file=sys.stderr)
        return exc.exit_code
    return setup.run_init(request)


def add_parser(subparsers: Subparsers) -> None:
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
    p.add_argument("--key-type", choices=setup.KEY_TYPES, default="rsa",
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
    p.add_argument("--host", metavar="H", default=setup.DEFAULT_HOST,
                   help=f"SFTP host (default {setup.DEFAULT_HOST})")
    p.add_argument("--port", metavar="P", type=int, default=setup.DEFAULT_PORT,
                   help=f"SFTP port (default {setup.DEFAULT_PORT})")
    p.add_argument("--outbox", metavar="DIR", help="default /srv/flad/<name>/outbox")
    p.add_argument("--inbox", metavar="DIR", help="default /srv/flad/<name>/inbox")
    p.add_argument("--owner", metavar="USER",
                   help="the user the service runs as (flad under systemd): keys, .cer, a new "
                   "configuration and the drop folders are written for that user, and the "
                   "files only named (signing key, passphrase file) are checked for it")
    p.add_argument("--state-dir", metavar="DIR", help="daemon.state_dir when the configuration "
                   f"is created (default {setup.DEFAULT_STATE_DIR})")
    p.set_defaults(func=run)
