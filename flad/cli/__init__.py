"""The `flad` command: one small module per subcommand, each owning its flags and output.

The rules live in the modules below `flad.cli`; a command module only parses, calls and
prints. `main` and `build_parser` are here; `flad sandbox` registers itself from
`flad.sandbox.command`, so the sandbox stays runnable on its own.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from flad import __version__, filemodes, logs
from flad.cli import (
    check,
    init,
    replies,
    resend,
    run,
    sign,
    status,
    trust_host,
    validate,
    verify_signature,
)
from flad.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from flad.journal import JournalTooNew, JournalUnreadable
from flad.sandbox import command as sandbox_command

__all__ = ["EXIT_OK", "EXIT_PROBLEM", "EXIT_USAGE", "build_parser", "main"]

#: The commands that write flad's state: they run with flad's own umask (0077).
UMASK_COMMANDS = frozenset({"run", "replies", "resend"})

#: In the order `flad --help` lists them.
COMMANDS = (validate, sign, verify_signature, check, run, status, resend, replies, trust_host,
            init)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flad",
        description="Send payroll and training XML files over the Belgian social-security "
                    "batch channel (SFTP): checked, named, signed, sent once, replies "
                    "brought home.")
    parser.add_argument("--version", action="version", version=f"flad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    sandbox_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # one-shot commands print their own results; their logs only say what went wrong
    logs.configure("auto", "warning")
    # the commands that write the state folder and the shared folders do it as the
    # permission model says (flad/filemodes.py), under systemd or not
    old_umask = os.umask(filemodes.UMASK) if args.command in UMASK_COMMANDS else None
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except JournalTooNew as exc:  # any command: the journal is a newer flad's
        logs.get().error("journal_too_new", error=str(exc))
        print(f"flad: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JournalUnreadable as exc:  # any command: one line, never a traceback
        logs.get().error("journal_unreadable", path=str(exc.path), error=str(exc))
        print(f"flad {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `flad status | head`
        sys.stderr.close()
        return EXIT_OK
    finally:
        if old_umask is not None:  # for a caller in the same process (tests)
            os.umask(old_umask)
