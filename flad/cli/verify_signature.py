"""`flad verify-signature`: check an FS signature against the file it signs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flad import signing
from flad.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, Subparsers


def run(args: argparse.Namespace) -> int:
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


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("verify-signature", help="check an FS signature against a file",
                       description="Check that FS is a valid signature of FILE by CERT (or "
                       "by a certificate issued by one in CERT). Exit 0 when it holds.")
    p.add_argument("--cert", required=True, help="the signer's certificate, or trusted CAs")
    p.add_argument("--fs", required=True, help="the FS signature file")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=run)
