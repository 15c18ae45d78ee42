"""Real test certificates, made with cryptography, for the signing tests and for any test
that needs a signer on disk (config, pipeline, sandbox).

Nothing here is mocked: the CA really issues the certificates, keys are real RSA 2048 /
ECC P-256 keys, and the files are the PEM and PKCS#12 files an operator would hold.
Private files are written with mode 0600, as an operator should keep them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyKind = Literal["rsa", "ec"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key (a CA or an end entity)."""

    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)


@dataclass(frozen=True)
class SignerFiles:
    """Where `write_signer` put one signer's files, and how to open them."""

    cert_path: Path  # PEM: the signer certificate first, then its chain
    key_path: Path  # PEM private key (PKCS#8), encrypted when passphrase is set
    p12_path: Path  # PKCS#12 with key, certificate and chain
    chain_path: Path  # PEM: the chain alone (the CA), usable as a trust file
    passphrase: bytes | None
    issued: Issued


@dataclass(frozen=True)
class CertSet:
    """A small PKI: one CA, signers under it, and an unrelated CA for trust tests."""

    ca: Issued
    rsa: Issued  # RSA 2048, valid for a year
    ec: Issued  # ECC P-256, valid for a year
    expired: Issued  # RSA, expired 5 days before `now`
    expiring: Issued  # RSA, expires 10 days after `now`
    other_ca: Issued  # a CA that issued none of the above
    now: datetime


def new_key(kind: KeyKind = "rsa") -> PrivateKey:
    """A fresh private key: RSA 2048 or ECC P-256."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "flad tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(
    common_name: str = "flad test CA",
    *,
    kind: KeyKind = "rsa",
    now: datetime | None = None,
) -> Issued:
    """A self-signed CA valid from a day before `now` for ten years."""
    now = now or datetime.now(UTC)
    key = new_key(kind)
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_cert(
    ca: Issued,
    common_name: str,
    *,
    kind: KeyKind = "rsa",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key: PrivateKey | None = None,
    now: datetime | None = None,
) -> Issued:
    """An end-entity signing certificate issued by `ca` (default: valid for one year)."""
    now = now or datetime.now(UTC)
    not_before = not_before or now - timedelta(days=1)
    not_after = not_after or now + timedelta(days=365)
    key = key or new_key(kind)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
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
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_cert_set(now: datetime | None = None) -> CertSet:
    """The whole test PKI in one call (a few RSA keys: a fraction of a second)."""
    now = now or datetime.now(UTC)
    ca = make_ca("flad test CA", now=now)
    return CertSet(
        ca=ca,
        rsa=issue_cert(ca, "flad test signer RSA", kind="rsa", now=now),
        ec=issue_cert(ca, "flad test signer ECC", kind="ec", now=now),
        expired=issue_cert(
            ca,
            "flad test signer expired",
            not_before=now - timedelta(days=400),
            not_after=now - timedelta(days=5),
        ),
        expiring=issue_cert(
            ca,
            "flad test signer expiring",
            not_before=now - timedelta(days=355),
            not_after=now + timedelta(days=10),
        ),
        other_ca=make_ca("flad unrelated CA", now=now),
        now=now,
    )


def write_private(path: Path, data: bytes) -> Path:
    """Write a file readable by its owner only (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def pem_certificates(certs: Sequence[x509.Certificate]) -> bytes:
    """Concatenated PEM certificates."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write_signer(
    directory: Path,
    issued: Issued,
    *,
    stem: str = "signer",
    passphrase: bytes | None = None,
    chain: Sequence[x509.Certificate] = (),
) -> SignerFiles:
    """Write `issued` as PEM key + cert and as PKCS#12, optionally passphrase-protected."""
    directory.mkdir(parents=True, exist_ok=True)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    key_pem = issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    p12 = pkcs12.serialize_key_and_certificates(
        stem.encode(), issued.key, issued.certificate, list(chain) or None, encryption
    )
    return SignerFiles(
        cert_path=write_private(
            directory / f"{stem}.crt.pem", pem_certificates([issued.certificate, *chain])
        ),
        key_path=write_private(directory / f"{stem}.key.pem", key_pem),
        p12_path=write_private(directory / f"{stem}.p12", p12),
        chain_path=write_private(directory / f"{stem}.chain.pem", pem_certificates(chain)),
        passphrase=passphrase,
        issued=issued,
    )


def write_test_signer(
    directory: Path, *, kind: KeyKind = "rsa", passphrase: bytes | None = None
) -> SignerFiles:
    """One call for tests that just need a signer on disk: a new CA and a signer under it."""
    ca = make_ca()
    return write_signer(
        directory,
        issue_cert(ca, f"flad test signer {kind}", kind=kind),
        passphrase=passphrase,
        chain=[ca.certificate],
    )
