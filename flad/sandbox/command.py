"""``flad sandbox``: run the local stand-in for the platform in the foreground.

Registered in flad's command line by ``add_parser(subparsers)``; also runnable alone as
``python -m flad.sandbox.command ...`` (same flags). It prints the host key like
``ssh-keygen -l``, then one ready line once it accepts connections, and exits 0 on
SIGTERM or SIGINT after closing every session and joining every thread.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

from flad import durable
from flad.sandbox.credentials import describe_host_key
from flad.sandbox.service import SandboxError, start_sandbox

__all__ = ["add_parser", "cmd_sandbox", "configure_parser", "main"]

EXIT_OK, EXIT_PROBLEM = 0, 1
_DESCRIPTION = (
    "Run a local stand-in for the social-security SFTP batch channel: an SFTP server "
    "(public-key login, folders IN, OUT, INTEST, OUTTEST under ROOT) and a transfer point "
    "that answers every GO with an ACRF receipt, then a NOTIFICATION, signed with the "
    "sandbox's "
    "own certificate (ROOT/sandbox-cert.pem: name it as the channel's reply_trust). "
    "For tests and demos only: it is not the platform."
)


#: --xsd words: the stand-in FLA schema shipped with flad, and no schema at all
STANDIN = "standin"
NO_SCHEMA = "none"


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the sandbox's flags to ``parser`` (shared by the subcommand and ``main``)."""
    parser.add_argument("--root", required=True, metavar="DIR",
                        help="folder served over SFTP; keys and state go to DIR/.sandbox/")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8022,
                        help="port to listen on, 0 for any free port (default 8022)")
    parser.add_argument("--authorized-key", required=True, metavar="PUB",
                        help="file of OpenSSH public key lines allowed to log in")
    parser.add_argument("--username", help="the only user name accepted (default: any)")
    parser.add_argument("--client-cert", required=True, metavar="CERT",
                        help="certificate the FS files sent to IN must verify with")
    parser.add_argument("--notify-delay", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between a positive receipt and its notification (default 5)")
    parser.add_argument("--xsd", action="append", metavar="[CODE=]XSD",
                        help="also check the data against this XSD; CODE=XSD for the files "
                        "of one application code only (e.g. DMFA=DmfAOriginal_20223.xsd, "
                        "DIMN=Dimona_20231.xsd); repeat for several. 'standin' names the "
                        "stand-in FLA schema shipped with flad, the default for every code "
                        "without an XSD of its own; 'none' checks well-formedness only")
    parser.add_argument("--sender-id", metavar="N",
                        help="the only sender number accepted (default: any)")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="write the ready line to PATH once connections are accepted")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"),
                        help="what the sandbox logs on standard error (default info)")
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``sandbox`` on flad's subcommands (``subparsers`` from add_subparsers)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox", help="run a local stand-in for the platform (tests, demos)",
        description=_DESCRIPTION)
    configure_parser(parser)
    parser.set_defaults(func=cmd_sandbox)
    return parser


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("flad.sandbox")
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    # paramiko reports every dropped connection with a traceback; the sandbox logs one line.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean stop, 1 when the sandbox cannot start."""
    _configure_logging(args.log_level)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for wanted in (signal.SIGTERM, signal.SIGINT):
            previous[wanted] = signal.signal(wanted, _on_signal)
    ready_file = Path(args.ready_file) if args.ready_file else None
    try:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
        try:
            sandbox = start_sandbox(
                args.root,
                authorized_keys=args.authorized_key,
                client_cert=args.client_cert,
                host=args.host,
                port=args.port,
                username=args.username,
                notify_delay=args.notify_delay,
                xsd=_schema_path(next((x for x in args.xsd or () if not _per_code(x)),
                                      STANDIN)),
                xsds=_per_code_schemas(args.xsd or ()),
                sender_id=args.sender_id,
            )
        except SandboxError as exc:
            print(f"flad sandbox: {exc}", file=sys.stderr)
            return EXIT_PROBLEM
        try:
            print(f"host key: {describe_host_key(sandbox.host_key)}")
            print(f"known_hosts entry: {sandbox.known_hosts_path}")
            print(f"reply certificate (reply_trust): {sandbox.cert_path}")
            if ready_file is not None:  # first, so that it exists once the line is read
                durable.write_file(ready_file, (sandbox.ready_line + "\n").encode(), 0o644)
            print(sandbox.ready_line, flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            sandbox.stop()
            if ready_file is not None:
                ready_file.unlink(missing_ok=True)
        print("sandbox stopped", flush=True)
        return EXIT_OK
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flad.sandbox.command``: the same command without the rest of flad."""
    parser = configure_parser(
        argparse.ArgumentParser(prog="flad sandbox", description=_DESCRIPTION)
    )
    return cmd_sandbox(parser.parse_args(argv))



def _schema_path(value: str) -> str | None:
    """A --xsd value as a path: 'standin' is the schema shipped with flad, 'none' none."""
    if value == NO_SCHEMA:
        return None
    if value == STANDIN:
        return str(resources.files("flad") / "data" / "standin-fla.xsd")
    return value


def _per_code_schemas(values: Sequence[str]) -> dict[str, str]:
    schemas: dict[str, str] = {}
    for value in values:
        pair = _per_code(value)
        if pair is not None and (path := _schema_path(pair[1])) is not None:
            schemas[pair[0]] = path
    return schemas


def _per_code(value: str) -> tuple[str, str] | None:
    """``DMFA=path`` -> ("DMFA", "path"); None for a plain path (every code)."""
    code, sep, path = value.partition("=")
    if sep and len(code) == 4 and code.isascii() and code.isalnum() and code.isupper():
        return code, path
    return None


if __name__ == "__main__":
    sys.exit(main())
