"""`flad run`: the service in the foreground, or with `--once` one pass and an exit code."""

from __future__ import annotations

import argparse
import sqlite3
import sys

from flad import config as config_mod
from flad import logs, signing, xmlcheck
from flad.cli.common import EXIT_USAGE, Subparsers, load_config, with_config
from flad.journal import JournalUnreadable
from flad.statelock import StateLocked


def run(args: argparse.Namespace) -> int:
    from flad.daemon import Service, StartupError  # not needed by other commands
    from flad.remote import RemoteIncompatible

    config = load_config(args.config)
    logs.configure(args.log_format or config.daemon.log_format, config.daemon.log_level)
    try:
        if args.wait_replies and not args.once:
            print("flad run: --wait-replies goes with --once (the service always polls)",
                  file=sys.stderr)
            return EXIT_USAGE
        service = Service(config, once=args.once, max_wait=args.max_wait,
                          wait_replies=args.wait_replies)
        return service.run()
    except StateLocked as exc:
        logs.get().error("state_folder_locked", error=str(exc))
        print(f"flad run: {exc}", file=sys.stderr)
        return EXIT_USAGE  # 2: this run did not start at all
    except (signing.SigningError, xmlcheck.XmlRejected, StartupError,
            RemoteIncompatible, JournalUnreadable) as exc:
        logs.get().error("startup_failed", error=str(exc))
        print(f"flad run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, sqlite3.Error) as exc:
        where = config.daemon.state_dir
        path = getattr(exc, "filename", None)
        logs.get().error("startup_failed", error=str(exc), state_dir=str(where), path=path)
        what = f"{path}" if path else f"the state folder {where}"
        print(f"flad run: cannot use {what}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="run the service (in the foreground, as systemd does)",
                       description="Watch the outboxes and send every file dropped there. "
                       "With --once: send what is there now and exit (0 when every file "
                       "ended sent or rejected, 1 otherwise; with --wait-replies, 0 only "
                       "when every file sent has a positive receipt).")
    with_config(p)
    p.add_argument("--once", action="store_true", help="send what is there now, then exit")
    p.add_argument("--max-wait", type=float, default=60.0, metavar="SECONDS",
                   help="with --once: how long to retry an unreachable server (default 60)")
    p.add_argument("--wait-replies", type=float, default=0.0, metavar="SECONDS",
                   help="with --once: after sending, poll the replies until every file "
                   "sent in this run has its receipt, for at most SECONDS; exit 1 when one "
                   "is missing or negative")
    p.add_argument("--log-format", choices=config_mod.LOG_FORMATS,
                   help="override daemon.log_format")
    p.set_defaults(func=run)
