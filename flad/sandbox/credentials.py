"""The sandbox's own keys, and the client keys it lets in.

Two identities are generated on first start under ``ROOT/.sandbox/`` and reused after,
so that a client which trusted them once keeps trusting them across restarts:

- the SSH host key (Ed25519), which the client pins in its known_hosts;
- the reply-signing certificate (self-signed, ECC P-256), published as
  ``ROOT/sandbox-cert.pem`` so that the client can name it as the trust for the FS
  files of replies. It says in its subject that it is a sandbox, not the platform.

Private files are written with mode 0600, through a temporary name and a rename, so a
crash never leaves half a key behind.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paramiko
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from flad import durable, signing
from flad.remote.knownhosts import fingerprint

__all__ = [
    "HOST_KEY_NAME",
    "PUBLISHED_CERT_NAME",
    "STATE_DIR_NAME",
    "SandboxKeyError",
    "describe_host_key",
    "load_authorized_keys",
    "load_or_create_host_key",
    "load_or_create_reply_signer",
]

STATE_DIR_NAME = ".sandbox"
HOST_KEY_NAME = "ssh_host_ed25519_key"
PUBLISHED_CERT_NAME = "sandbox-cert.pem"
_REPLY_KEY_NAME = "reply-key.pem"
_REPLY_CERT_NAME = "reply-cert.pem"
_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    }
)


class SandboxKeyError(Exception):
    """A key or certificate file the sandbox cannot use; the text names the file."""


def state_dir(root: Path) -> Path:
    """``ROOT/.sandbox``, private to the sandbox (hidden from SFTP clients)."""
    path = root / STATE_DIR_NAME
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def load_or_create_host_key(root: Path) -> paramiko.Ed25519Key:
    """The sandbox's SSH host key, made on first start and reused after."""
    path = state_dir(root) / HOST_KEY_NAME
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        durable.write_file(path, pem, 0o600)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        durable.write_file(path.with_name(HOST_KEY_NAME + ".pub"),
                           public + b" flad-sandbox\n", 0o644)
    try:
        return paramiko.Ed25519Key(filename=str(path))
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise SandboxKeyError(f"cannot load the sandbox host key {path}: {exc}") from None


def describe_host_key(key: paramiko.PKey) -> str:
    """The key as ``ssh-keygen -l`` prints it: ``256 SHA256:... flad-sandbox (ED25519)``."""
    kind = key.get_name().removeprefix("ssh-").split("-")[0].upper()
    return f"{key.get_bits()} {fingerprint(key)} flad-sandbox ({kind})"


def load_authorized_keys(source: str | os.PathLike[str] | Sequence[str]) -> list[paramiko.PKey]:
    """Public keys from OpenSSH lines (``type base64 [comment]``, options allowed first).

    ``source`` is a file path, or the lines themselves as a list. Blank lines and
    ``#`` comments are skipped; any other line that holds no usable key is an error
    naming its line number, so that a typo never silently locks everyone out.
    """
    if isinstance(source, str | os.PathLike):
        where = os.fspath(source)
        try:
            lines = Path(source).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SandboxKeyError(f"cannot read authorized keys {where}: {reason}") from None
    else:
        where, lines = "the authorized key lines", list(source)
    keys: list[paramiko.PKey] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        index = next((i for i, f in enumerate(fields) if f in _KEY_TYPES), None)
        if index is None or index + 1 >= len(fields):
            raise SandboxKeyError(
                f"{where} line {number}: no public key of a supported type "
                f"({', '.join(sorted(_KEY_TYPES))})"
            )
        try:
            blob = base64.b64decode(fields[index + 1], validate=True)
            key = paramiko.PKey.from_type_string(fields[index], blob)
        except (binascii.Error, ValueError, paramiko.SSHException) as exc:
            raise SandboxKeyError(f"{where} line {number}: unreadable public key ({exc})") from None
        keys.append(key)
    if not keys:
        raise SandboxKeyError(f"{where} holds no public key: nobody could log in")
    return keys


def _new_reply_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "flad sandbox (NOT the platform)"),
            x509.NameAttribute(NameOID.COMMON_NAME, "flad sandbox transfer point"),
        ]
    )
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def load_or_create_reply_signer(root: Path) -> tuple[signing.Signer, Path]:
    """The certificate that signs replies, and where it is published for clients."""
    private = state_dir(root)
    key_path, cert_path = private / _REPLY_KEY_NAME, private / _REPLY_CERT_NAME
    if not (key_path.exists() and cert_path.exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        durable.write_file(key_path, key_pem, 0o600)
        cert = _new_reply_certificate(key)
        durable.write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    try:
        signer = signing.load_signer(cert_path, key_path, None)
    except signing.SigningError as exc:
        raise SandboxKeyError(f"cannot load the sandbox reply signer: {exc}") from None
    published = root / PUBLISHED_CERT_NAME
    pem = signer.certificate.public_bytes(serialization.Encoding.PEM)
    if not published.exists() or published.read_bytes() != pem:
        durable.write_file(published, pem, 0o644)
    return signer, published
