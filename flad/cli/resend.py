"""`flad resend`: put a refused duplicate (or a failed file) back in line."""

from __future__ import annotations

import argparse
import sys

from flad import status
from flad.cli import askservice
from flad.cli.common import EXIT_OK, EXIT_PROBLEM, Subparsers, load_config, with_config
from flad.journal import Journal
from flad.statelock import StateLock, StateLocked


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    lock = StateLock(config.daemon.state_dir)
    try:
        lock.acquire("resend")
    except StateLocked as exc:  # the service runs: it puts the file back in line itself
        return askservice.ask(config.daemon.state_dir, {"command": "resend", "id": args.id},
                              "resend", exc)
    try:
        db = Journal(config.daemon.state_dir / "journal.sqlite3")
        try:
            message = status.resend(config, db, args.id)
        except ValueError as exc:
            print(f"flad resend: {exc}", file=sys.stderr)
            return EXIT_PROBLEM
        finally:
            db.close()
    finally:
        lock.release()
    print(message)
    return EXIT_OK


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("resend", help="send a refused duplicate (or failed file) anyway",
                       description="Put submission ID back in line. A file refused as a "
                       "duplicate is sent even though its content was sent before.")
    with_config(p)
    p.add_argument("id", type=int, metavar="ID", help="submission id (from flad status)")
    p.set_defaults(func=run)
