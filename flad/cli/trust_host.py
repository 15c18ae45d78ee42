"""`flad trust-host`: show a channel server's host key and, once a person agrees, record it.

flad never trusts an unknown host key by itself; this is the one way a key gets into
known_hosts, after its fingerprint was compared with the published one.
"""

from __future__ import annotations

import argparse
import sys

from flad.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, Subparsers, load_config, with_config


def run(args: argparse.Namespace) -> int:
    from flad import remote
    from flad.remote.knownhosts import known_keys

    config = load_config(args.config)
    channel = config.channel(args.channel)
    if channel is None:
        names = ", ".join(c.name for c in config.channels)
        print(f"flad trust-host: no channel {args.channel!r} (channels: {names})",
              file=sys.stderr)
        return EXIT_USAGE
    s = channel.sftp
    try:
        trusted = known_keys(s.known_hosts, s.host, s.port).trusted
        key = remote.fetch_host_key(s.host, s.port, s.connect_timeout,
                                    channel.sftp.proxy,
                                    sorted({k.get_name() for k in trusted}) or None)
    except remote.TransportError as exc:
        print(f"flad trust-host: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    print(f"{s.host}:{s.port} presents a {key.get_name()} key, fingerprint "
          f"{remote.fingerprint(key)}")
    if not args.yes:
        if not sys.stdin.isatty():
            print("compare it with the fingerprint your administrator published, then run "
                  "again with --yes", file=sys.stderr)
            return EXIT_PROBLEM
        if input("Trust this key? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not recorded")
            return EXIT_PROBLEM
    try:
        remote.add_known_host(s.known_hosts, s.host, s.port, key)
    except remote.HostKeyMismatch as exc:
        print(f"flad trust-host: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except OSError as exc:
        print(f"flad trust-host: cannot write {s.known_hosts}: {exc.strerror}",
              file=sys.stderr)
        return EXIT_PROBLEM
    print(f"recorded in {s.known_hosts}")
    return EXIT_OK


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("trust-host", help="record a channel server's host key",
                       description="Connect to the channel's server, show its host key "
                       "fingerprint and, once confirmed, record it in known_hosts. flad "
                       "never trusts an unknown key by itself.")
    with_config(p)
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("--yes", action="store_true", help="record without asking")
    p.set_defaults(func=run)
