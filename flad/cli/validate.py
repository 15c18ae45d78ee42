"""`flad validate`: check files the way the service would, without sending them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flad.cli import checkup
from flad.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, Subparsers, load_config, with_config


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    all_ok = True
    for name in args.files:
        path = Path(name)
        try:
            verdict = checkup.validate_file(config, path, channel=args.channel, app=args.app)
        except checkup.UsageError as exc:
            print(f"flad: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if verdict.ok:
            extra = "".join(f" (warning: {w})" for w in verdict.warnings)
            print(f"{name}: OK{extra}")
        else:
            all_ok = False
            print(f"{name}: REFUSED: {verdict.reason}")
    return EXIT_OK if all_ok else EXIT_PROBLEM


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("validate", help="check XML files the way the service would",
                       description="Check each file as the service would before sending: "
                       "well-formed, safe, valid against the application's XSD, sent under "
                       "an enterprise number the channel may use. Prints OK or the reasons; "
                       "exit 0 when all are valid.")
    with_config(p)
    p.add_argument("--channel", help="channel name (needed when there are several)")
    p.add_argument("--app", help="application name (guessed from the folder otherwise)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=run)
