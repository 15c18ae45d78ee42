"""`flad status`: one row per submission from the journal, safe beside the service."""

from __future__ import annotations

import argparse
import datetime
import json
import time

from flad import status
from flad.cli.common import EXIT_OK, EXIT_PROBLEM, Subparsers, load_config, with_config
from flad.config import Config
from flad.journal import Journal, damage_named


def since(value: str) -> float:
    """'2h', '30m', '7d' or an ISO date/time."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].isdigit():
        return time.time() - int(value[:-1]) * units[value[-1]]
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since takes 30m, 2h, 7d or an ISO date, not {value!r}") from None


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    path = config.daemon.state_dir / "journal.sqlite3"
    if not path.exists():
        print("[]" if args.json else "no journal yet: flad has not run with this "
              "configuration")
        return EXIT_OK
    db = Journal(path, readonly=True)
    try:
        with damage_named(path):  # damage deep in the file shows only when rows are read
            if args.unmatched:
                replies = db.replies(unmatched_only=True, channel=args.channel)
                if args.since is not None:
                    replies = [r for r in replies if r["at"] >= args.since]
            subs = db.submissions(channel=args.channel, states=args.state or (),
                                  since=args.since)
            channels = db.channel_states()
            held = db.replies_held(args.channel)
            old_schema = db.needs_upgrade
    finally:
        db.close()
    if args.unmatched:
        if args.json:
            print(json.dumps(status.unmatched_json(replies), indent=2))
        else:
            print(status.render_unmatched(replies, {c.name: c.inbox for c in config.channels}))
        return EXIT_OK
    subs = status.overdue_first(subs)  # a late reply is what an operator must see first
    if args.overdue:
        subs = [s for s in subs if s.overdue]
    if args.json:
        print(json.dumps(status.as_json(subs), indent=2))
    elif args.overdue and not subs:
        print("no submission waits too long for its receipt or notification"
              + (" (the journal predates this check: start the service once)"
                 if old_schema else ""))
    else:
        print(status.render(subs, channels,
                            certificate_notices(config) + status.held_notices(held)))
    if args.overdue and subs:
        return EXIT_PROBLEM  # for monitoring: 1 when something is late
    return EXIT_OK


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("status", help="what happened to each file",
                       description="One row per submission from the journal; safe to run "
                       "while the service works.")
    with_config(p)
    p.add_argument("--json", action="store_true", help="a JSON array, for machines")
    p.add_argument("--state", action="append", choices=status.ALL_STATES,
                   help="only these states (repeatable)")
    p.add_argument("--channel", help="only this channel")
    p.add_argument("--since", type=since, help="only changes since 30m, 2h, 7d or a date")
    p.add_argument("--overdue", action="store_true",
                   help="only the submissions whose receipt or notification is late "
                        "(receipt_overdue_minutes, notification_overdue_hours); exit 1 "
                        "when there is one, 0 when none")
    p.add_argument("--unmatched", action="store_true",
                   help="list the replies tied to no submission instead (unmatched "
                        "receipts and notifications, other reply types)")
    p.set_defaults(func=run)


def certificate_notices(config: Config) -> list[str]:
    """The header lines of `flad status`: certificates near or past their end."""
    from flad import certlife
    from flad.channel.settings import load_signer

    lifetimes = certlife.of_config(config, load_signer)
    return [f"{level.upper()}: {life.text()}"
            for level, life in certlife.notices(lifetimes, config.daemon.cert_warn_days)]
