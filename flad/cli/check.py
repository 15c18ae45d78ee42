"""`flad check`: every problem of the set-up in one list (the findings come from checkup)."""

from __future__ import annotations

import argparse

from flad import logs
from flad.cli import checkup
from flad.cli.common import EXIT_OK, EXIT_PROBLEM, Subparsers, with_config


def run(args: argparse.Namespace) -> int:
    # the findings say all there is; the service's log lines would only interleave
    logs.configure("console", "error")
    findings = checkup.check_all(args.config, offline=args.offline)
    for finding in findings:
        print(finding.line())
    errors = sum(1 for f in findings if f.level == "error")
    warnings = sum(1 for f in findings if f.level == "warning")
    print(f"{errors} error(s), {warnings} warning(s)")
    return EXIT_PROBLEM if errors else EXIT_OK


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("check", help="check the configuration, keys, certificates and "
                       "servers", description="List every problem of the set-up at once: "
                       "configuration, file permissions, certificate dates, XSDs; without "
                       "--offline also connect to each channel's server.")
    with_config(p)
    p.add_argument("--offline", action="store_true", help="do not connect to the servers")
    p.set_defaults(func=run)
