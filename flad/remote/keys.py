"""Private keys for SSH: one loader for the service, `flad init` and the sandbox.

Errors name the file, never the passphrase nor any key material.
"""

from __future__ import annotations

import io
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from flad.remote.errors import PrivateKeyError


def load_private_key(path: Path, passphrase: bytes | None,
                     passphrase_source: str | None = None) -> paramiko.PKey:
    """Load an Ed25519, ECDSA or RSA private key, OpenSSH or PEM (PKCS#1, SEC1, PKCS#8).

    Errors (PrivateKeyError) name the file and where a wrong passphrase came from
    (`passphrase_source`), never the passphrase nor key material.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PrivateKeyError(
            f"cannot read private key {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    loaded = None
    reason = "not a private key in OpenSSH or PEM format"
    for loader in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
        for password in (passphrase, None) if passphrase else (None,):
            try:
                loaded = loader(data, password)
                break
            except TypeError:
                # "not encrypted but a password was given" (then retry without) or
                # "encrypted but no password given".
                if passphrase is None:
                    reason = "the key is encrypted and no passphrase is configured"
            except ValueError:
                if password is not None:
                    source = f" (read from {passphrase_source})" if passphrase_source else ""
                    reason = f"wrong passphrase{source}, or a damaged key file"
            except Exception:  # the loaders raise many types; hide their text
                reason = "unreadable key file"
        if loaded is not None:
            break
    if loaded is None:
        raise PrivateKeyError(f"cannot load private key {path}: {reason}")

    if isinstance(loaded, rsa.RSAPrivateKey):
        return paramiko.RSAKey(key=loaded)
    if isinstance(loaded, ec.EllipticCurvePrivateKey):
        if loaded.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise PrivateKeyError(
                f"cannot use private key {path}: ECDSA curve {loaded.curve.name} is not "
                "supported by SSH (use nistp256, nistp384 or nistp521)"
            )
        return paramiko.ECDSAKey(vals=(loaded, loaded.public_key()))
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        # paramiko reads Ed25519 keys only from OpenSSH text: re-encode it in memory.
        text = loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode("ascii")
        return paramiko.Ed25519Key.from_private_key(io.StringIO(text))
    raise PrivateKeyError(
        f"cannot use private key {path}: {type(loaded).__name__.lstrip('_')} keys are not "
        "supported (use Ed25519, ECDSA or RSA)"
    )


class LegacyRSAKey(paramiko.RSAKey):
    """An RSA key that can also sign with SHA-1 "ssh-rsa" (paramiko 4+ dropped it)."""

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        if algorithm != "ssh-rsa":
            return super().sign_ssh_data(data, algorithm)
        if not isinstance(self.key, rsa.RSAPrivateKey):
            raise paramiko.SSHException("an RSA private key is needed to sign")
        signature = self.key.sign(data, padding.PKCS1v15(), hashes.SHA1())
        msg = paramiko.Message()
        msg.add_string("ssh-rsa")
        msg.add_string(signature)
        return msg


_PARAMIKO_CIPHERS: tuple[str, ...] = paramiko.Transport._preferred_ciphers  # type: ignore[attr-defined]
_KNOWN_CIPHERS: dict[str, object] = paramiko.Transport._cipher_info  # type: ignore[attr-defined]

