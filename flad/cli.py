"""The `flad` command: argument parsing and output; the rules live in the modules."""

from __future__ import annotations

import argparse
import datetime
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from flad import __version__, checkup, logs, setup_assistant, signing, status, xmlcheck
from flad import config as config_mod
from flad.journal import Journal
from flad.sandbox import command as sandbox_command
from flad.statelock import StateLock, StateLocked

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def _config(path: str) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _passphrase(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise SystemExit(f"flad: cannot read passphrase file {path}: {exc.strerror}") from None


# -- validate ----------------------------------------------------------------------

def cmd_validate(args: argparse.Namespace) -> int:
    config = _config(args.config)
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


# -- sign / verify -----------------------------------------------------------------

def cmd_sign(args: argparse.Namespace) -> int:
    loose = signing.loose_private_files(args.pkcs12 or args.key, args.passphrase_file)
    if loose:
        for problem in loose:  # as config loading refuses them: a key is nobody else's
            print(f"flad sign: refused: {problem}", file=sys.stderr)
        return EXIT_PROBLEM
    passphrase = _passphrase(args.passphrase_file)
    source = f"passphrase file {args.passphrase_file}" if args.passphrase_file else None
    try:
        if args.pkcs12:
            signer = signing.load_signer_pkcs12(args.pkcs12, passphrase, source)
        elif args.cert and args.key:
            signer = signing.load_signer_pem(args.cert, args.key, passphrase, source)
        else:
            print("flad sign: give --cert and --key, or --pkcs12", file=sys.stderr)
            return EXIT_USAGE
        data = Path(args.file).read_bytes()
        fs = signing.make_fs(data, signer, args.line_format)
    except signing.SigningError as exc:
        print(f"flad sign: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except OSError as exc:
        print(f"flad sign: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_PROBLEM
    report = signing.check_signer(signer)
    for message in (*report.errors, *report.warnings):
        print(f"flad sign: warning: {message}", file=sys.stderr)
    if args.output and args.output != "-":
        try:
            Path(args.output).write_bytes(fs)
        except OSError as exc:
            print(f"flad sign: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return EXIT_PROBLEM
    else:
        sys.stdout.buffer.write(fs)
        sys.stdout.flush()
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        certs = signing.load_certificates(args.cert)
        data = Path(args.file).read_bytes()
        fs = Path(args.fs).read_bytes()
    except (OSError, signing.SigningError) as exc:
        print(f"flad verify-signature: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if len(certs) == 1:
            result = signing.verify_fs(data, fs, certificate=certs[0])
        else:
            result = signing.verify_fs(data, fs, trusted=certs)
    except signing.SignatureInvalid as exc:
        print(f"{args.file}: signature INVALID: {exc}")
        return EXIT_PROBLEM
    subject = result.signer.subject.rfc4514_string()
    print(f"{args.file}: signature OK ({result.digest_algorithm}, signed by {subject})")
    return EXIT_OK


# -- check -------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    # the findings say all there is; the service's log lines would only interleave
    logs.configure("console", "error")
    findings = checkup.check_all(args.config, offline=args.offline)
    for finding in findings:
        print(finding.line())
    errors = sum(1 for f in findings if f.level == "error")
    warnings = sum(1 for f in findings if f.level == "warning")
    print(f"{errors} error(s), {warnings} warning(s)")
    return EXIT_PROBLEM if errors else EXIT_OK


# -- run / status / resend / trust-host --------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from flad.daemon import Service, StartupError  # not needed by other commands
    from flad.remote import RemoteIncompatible

    config = _config(args.config)
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
            RemoteIncompatible) as exc:
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


def _since(value: str) -> float:
    """'2h', '30m', '7d' or an ISO date/time."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].isdigit():
        return time.time() - int(value[:-1]) * units[value[-1]]
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since takes 30m, 2h, 7d or an ISO date, not {value!r}") from None


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args.config)
    path = config.daemon.state_dir / "journal.sqlite3"
    if not path.exists():
        print("[]" if args.json else "no journal yet: flad has not run with this "
              "configuration")
        return EXIT_OK
    db = Journal(path, readonly=True)
    try:
        if args.unmatched:
            replies = db.replies(unmatched_only=True, channel=args.channel)
            if args.since is not None:
                replies = [r for r in replies if r["at"] >= args.since]
        subs = db.submissions(channel=args.channel, states=args.state or (), since=args.since)
        channels = db.channel_states()
    finally:
        db.close()
    if args.unmatched:
        if args.json:
            print(json.dumps(status.unmatched_json(replies), indent=2))
        else:
            print(status.render_unmatched(replies, {c.name: c.inbox for c in config.channels}))
        return EXIT_OK
    if args.json:
        print(json.dumps(status.as_json(subs), indent=2))
    else:
        print(status.render(subs, channels))
    return EXIT_OK


def cmd_resend(args: argparse.Namespace) -> int:
    config = _config(args.config)
    db = Journal(config.daemon.state_dir / "journal.sqlite3")
    try:
        message = status.resend(config, db, args.id)
    except ValueError as exc:
        print(f"flad resend: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    finally:
        db.close()
    print(message)
    return EXIT_OK


def cmd_replies(args: argparse.Namespace) -> int:
    from flad.channel.replies import ReplyPoller
    from flad.channel.settings import sftp_settings
    from flad.journal import Journal as Db
    from flad.remote import SftpChannel, TransportError

    config = _config(args.config)
    logs.configure(args.log_format or config.daemon.log_format, config.daemon.log_level)
    lock = StateLock(config.daemon.state_dir)
    try:
        lock.acquire("replies")
    except StateLocked as exc:
        print(f"flad replies: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    db = Db(config.daemon.state_dir / "journal.sqlite3")
    code = EXIT_OK
    try:
        for channel in config.channels:
            if args.channel and channel.name != args.channel:
                continue
            transport = SftpChannel(sftp_settings(channel), channel_name=channel.name)
            try:
                poller = ReplyPoller(channel, db, transport,
                                     error_codes=config.daemon.error_codes)
                count = poller.poll()
                db.set_channel_state(channel.name, "connected")
                print(f"{channel.name}: {count} reply set(s) delivered to {channel.inbox}")
                if poller.failures:
                    print(f"{channel.name}: {poller.failures} reply set(s) not delivered "
                          "(reply_delivery_failed or reply_untrusted in the log says why); "
                          "they stay on the server", file=sys.stderr)
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


def cmd_trust_host(args: argparse.Namespace) -> int:
    from flad import remote
    from flad.channel.settings import sftp_settings

    config = _config(args.config)
    channel = config.channel(args.channel)
    if channel is None:
        names = ", ".join(c.name for c in config.channels)
        print(f"flad trust-host: no channel {args.channel!r} (channels: {names})",
              file=sys.stderr)
        return EXIT_USAGE
    s = channel.sftp
    try:
        key = remote.fetch_host_key(s.host, s.port, s.connect_timeout,
                                    sftp_settings(channel).proxy)
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


# -- parser ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flad",
        description="Send payroll and training XML files over the Belgian social-security "
                    "batch channel (SFTP): checked, named, signed, sent once, replies "
                    "brought home.")
    parser.add_argument("--version", action="version", version=f"flad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", required=True, metavar="CONFIG",
                       help="flad's TOML configuration file")

    p = sub.add_parser("validate", help="check XML files the way the service would",
                       description="Check each file as the service would before sending: "
                       "well-formed, safe, valid against the application's XSD, sent under "
                       "an enterprise number the channel may use. Prints OK or the reasons; "
                       "exit 0 when all are valid.")
    with_config(p)
    p.add_argument("--channel", help="channel name (needed when there are several)")
    p.add_argument("--app", help="application name (guessed from the folder otherwise)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("sign", help="write the FS signature of a file",
                       description="Write the FS content for FILE: a detached CMS signature "
                       "(SHA-256), base64, as the platform expects it.")
    p.add_argument("--cert", help="signing certificate (PEM)")
    p.add_argument("--key", help="private key of the certificate (PEM)")
    p.add_argument("--pkcs12", help="certificate and key in one PKCS#12 (.p12/.pfx) file")
    p.add_argument("--passphrase-file", help="file holding the key's passphrase")
    p.add_argument("--line-format", choices=signing.LINE_FORMATS, default="single",
                   help="base64 on one line (default) or 76-character lines separated by CR")
    p.add_argument("-o", "--output", help="where to write the FS (default: standard output)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("verify-signature", help="check an FS signature against a file",
                       description="Check that FS is a valid signature of FILE by CERT (or "
                       "by a certificate issued by one in CERT). Exit 0 when it holds.")
    p.add_argument("--cert", required=True, help="the signer's certificate, or trusted CAs")
    p.add_argument("--fs", required=True, help="the FS signature file")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("check", help="check the configuration, keys, certificates and "
                       "servers", description="List every problem of the set-up at once: "
                       "configuration, file permissions, certificate dates, XSDs; without "
                       "--offline also connect to each channel's server.")
    with_config(p)
    p.add_argument("--offline", action="store_true", help="do not connect to the servers")
    p.set_defaults(func=cmd_check)

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
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="what happened to each file",
                       description="One row per submission from the journal; safe to run "
                       "while the service works.")
    with_config(p)
    p.add_argument("--json", action="store_true", help="a JSON array, for machines")
    p.add_argument("--state", action="append", choices=status.ALL_STATES,
                   help="only these states (repeatable)")
    p.add_argument("--channel", help="only this channel")
    p.add_argument("--since", type=_since, help="only changes since 30m, 2h, 7d or a date")
    p.add_argument("--unmatched", action="store_true",
                   help="list the replies tied to no submission instead (unmatched "
                        "receipts and notifications, other reply types)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("resend", help="send a refused duplicate (or failed file) anyway",
                       description="Put submission ID back in line. A file refused as a "
                       "duplicate is sent even though its content was sent before.")
    with_config(p)
    p.add_argument("id", type=int, metavar="ID", help="submission id (from flad status)")
    p.set_defaults(func=cmd_resend)

    p = sub.add_parser("replies", help="fetch the replies waiting on the servers now",
                       description="List OUT/OUTTEST of each channel and bring every "
                       "complete reply set into the inbox now (the service does this every "
                       "poll_seconds).")
    with_config(p)
    p.add_argument("--channel", help="only this channel")
    p.add_argument("--log-format", choices=config_mod.LOG_FORMATS,
                   help="override daemon.log_format")
    p.set_defaults(func=cmd_replies)

    p = sub.add_parser("trust-host", help="record a channel server's host key",
                       description="Connect to the channel's server, show its host key "
                       "fingerprint and, once confirmed, record it in known_hosts. flad "
                       "never trusts an unknown key by itself.")
    with_config(p)
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("--yes", action="store_true", help="record without asking")
    p.set_defaults(func=cmd_trust_host)

    setup_assistant.add_parser(sub)
    sandbox_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # one-shot commands print their own results; their logs only say what went wrong
    logs.configure("auto", "warning")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `flad status | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
