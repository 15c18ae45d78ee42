"""The signing certificate: opened as the service opens it, refused when it cannot sign,
and exported as the DER `.cer` Chaman's "Certificat" field takes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from flad import secrets, signing
from flad.init.files import write_new
from flad.init.request import InitError, InitRequest

__all__ = ["CertificateResult", "export_cer", "load_signer", "read_passphrase"]


@dataclass(frozen=True)
class CertificateResult:
    cer_path: Path | None  # None in step 3b: the existing channel keeps its certificate
    info: dict[str, str]
    warnings: tuple[str, ...]
    written: bool


def read_passphrase(path: Path | None) -> bytes | None:
    """The passphrase in --passphrase-file, or None when none was given."""
    if path is None:
        return None
    try:
        return secrets.read_secret_file(path, "--passphrase-file")
    except secrets.SecretError as exc:
        raise InitError(str(exc)) from None


def load_signer(req: InitRequest, now: datetime) -> tuple[signing.Signer, tuple[str, ...]]:
    """The signer, refused when the key does not match or the certificate is not valid now."""
    passphrase = read_passphrase(req.passphrase_file)
    source = f"--passphrase-file {req.passphrase_file}" if req.passphrase_file else None
    try:
        signer = signing.load_signer(req.certificate, req.signing_key, req.pkcs12, passphrase,
                                     source)
    except signing.PassphraseError as exc:
        hint = ("" if req.passphrase_file else
                "; give the file holding its passphrase with --passphrase-file F (mode 0600)")
        raise InitError(f"signing certificate: {exc}{hint}") from None
    except signing.SigningError as exc:
        raise InitError(f"signing certificate: {exc}") from None
    report = signing.check_signer(signer, now=now)
    if report.errors:
        raise InitError("signing certificate: " + "; ".join(report.errors)
                        + ": Chaman needs the certificate that will sign the FS files")
    return signer, report.warnings


def export_cer(signer: signing.Signer, path: Path) -> bool:
    """Write the certificate's DER (.cer) for Chaman; True when written, False when reused."""
    der = signer.certificate.public_bytes(serialization.Encoding.DER)
    if path.exists() or path.is_symlink():
        if path.read_bytes() == der:
            return False
        raise InitError(f"{path} exists and holds another certificate; flad init never "
                        "overwrites it: move it away first (after a renewal, the new .cer "
                        "is uploaded in Chaman too)")
    write_new(path, der, 0o644)
    return True
