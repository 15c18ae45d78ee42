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
                print(f"{channel.name}: {count} reply set(s) delivered to {channel.inbox}")
                if poller.failures:
                    print(f"{channel.name}: {poller.failures} reply set(s) not delivered "
                          "(reply_delivery_failed or reply_untrusted in the log says why); "
                          "they stay on the server", file=sys.stderr)
                    code = EXIT_PROBLEM
                if poller.held:
                    print(f"{channel.name}: {poller.held} reply set(s) left on the server by "
                          "max_reply_bytes or min_free_bytes (reply_too_large or "
                          "reply_space_low in the log, flad status lists them)",
                          file=sys.stderr)
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
