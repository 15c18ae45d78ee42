"""`flad sign`: write the FS signature of a file by hand, as the service would sign it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flad import secrets, signing
from flad.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, Subparsers


def run(args: argparse.Namespace) -> int:
    loose = signing.loose_private_files(args.pkcs12 or args.key, args.passphrase_file)
    if loose:
        for problem in loose:  # as config loading refuses them: a key is nobody else's
            print(f"flad sign: refused: {problem}", file=sys.stderr)
        return EXIT_PROBLEM
    try:
        passphrase = (secrets.read_secret_file(args.passphrase_file)
                      if args.passphrase_file else None)
    except secrets.SecretError as exc:
        raise SystemExit(f"flad: {exc}") from None
    source = f"passphrase file {args.passphrase_file}" if args.passphrase_file else None
    if not args.pkcs12 and not (args.cert and args.key):
        print("flad sign: give --cert and --key, or --pkcs12", file=sys.stderr)
        return EXIT_USAGE
    try:
        signer = signing.load_signer(args.cert, args.key, args.pkcs12, passphrase, source)
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


def add_parser(sub: Subparsers) -> None:
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
    p.set_defaults(func=run)
