"""`flad replies`: bring the reply sets waiting on the servers home now, then exit."""

from __future__ import annotations

import argparse
import sys

from flad import config as config_mod
from flad import logs, signing
from flad.cli import askservice
from flad.cli.common import EXIT_OK, EXIT_PROBLEM, Subparsers, load_config, with_config
from flad.statelock import StateLock, StateLocked


def run(args: argparse.Namespace) -> int:
    from flad.channel.replies import ReplyPoller
    from flad.journal import Journal
    from flad.remote import SftpChannel, TransportError
    from flad.servicecalls import replies_report

    config = load_config(args.config)
    logs.configure(args.log_format or config.daemon.log_format, config.daemon.log_level)
    lock = StateLock(config.daemon.state_dir)
    try:
        lock.acquire("replies")
    except StateLocked as exc:  # the service runs: it does it, between its batches
        return askservice.ask(config.daemon.state_dir,
                              {"command": "replies", "channel": args.channel},
                              "replies", exc)
    db = Journal(config.daemon.state_dir / "journal.sqlite3")
    code = EXIT_OK
    try:
        for channel in config.channels:
            if args.channel and channel.name != args.channel:
                continue
            transport = SftpChannel(channel.sftp, channel_name=channel.name,
                                    config_path=config.path)
            try:
                poller = ReplyPoller(channel, db, transport,
                                     error_codes=config.daemon.error_codes,
                                     min_free_bytes=config.daemon.min_free_bytes,
                                     state_dir=config.daemon.state_dir)
                count = poller.poll()
                db.set_channel_state(channel.name, "connected")
                report = replies_report(channel.name, str(channel.inbox), count,
                                        poller.failures, poller.held)
                for line in report.out:
                    print(line)
                for line in report.err:
                    print(line, file=sys.stderr)
                if report.code:
                    code = EXIT_PROBLEM
            except (TransportError, signing.SigningError) as exc:
                print(f"{channel.name}: {exc}", file=sys.stderr)
                code = EXIT_PROBLEM
            finally:
                transport.close()
    finally:
        db.close()
        lock.release()
    return code


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("replies", help="fetch the replies waiting on the servers now",
                       description="List OUT/OUTTEST of each channel and bring every "
                       "complete reply set into the inbox now (the service does this every "
                       "poll_seconds). Beside the running service, the service does it and "
                       "this prints its answer.")
    with_config(p)
    p.add_argument("--channel", help="only this channel")
    p.add_argument("--log-format", choices=config_mod.LOG_FORMATS,
                   help="override daemon.log_format")
    p.set_defaults(func=run)
