"""The channel's SSH key pair: generated once, reused after, never overwritten.

Chaman's "Clé SSH publique" field takes the public key as one OpenSSH line; the private
key stays on this machine, unencrypted at mode 0600 since the service runs unattended.
Existing keys are read by the service's own loader (flad.remote.keys), so a key
`flad init` accepts is one the service can use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from flad.init.files import private_mode_problem, write_new
from flad.init.request import InitError, InitRequest
from flad.remote.errors import PrivateKeyError
from flad.remote.keys import load_private_key
from flad.remote.knownhosts import fingerprint

__all__ = ["SshKeyResult", "ssh_key"]


@dataclass(frozen=True)
class SshKeyResult:
    private_path: Path
    public_path: Path | None  # None: an existing key (--ssh-key) whose .pub flad did not write
    public_line: str
    description: str  # "RSA 4096", "Ed25519"
    fingerprint: str  # as `ssh-keygen -l` prints it
    is_rsa: bool
    generated: bool


def _load(path: Path) -> paramiko.PKey:
    """An existing private key, through the service's loader; no passphrase (unattended)."""
    try:
        return load_private_key(path, None)
    except PrivateKeyError as exc:
        raise InitError(f"SSH key: {exc} (flad init uses keys without a passphrase, kept at mode "
                        "0600; a protected key is added by hand, with passphrase_file in "
                        "[channel.sftp])") from None


def _describe(key: paramiko.PKey) -> str:
    if isinstance(key, paramiko.RSAKey):
        return f"RSA {key.get_bits()}"
    if isinstance(key, paramiko.ECDSAKey):
        return f"ECDSA {key.get_name().rsplit('-', 1)[-1]}"
    return "Ed25519"


def _result(key: paramiko.PKey, private_path: Path, public_path: Path | None, line: str,
            generated: bool) -> SshKeyResult:
    return SshKeyResult(private_path, public_path, line, _describe(key), fingerprint(key),
                        isinstance(key, paramiko.RSAKey), generated)


def _public_line(key: paramiko.PKey, comment: str) -> str:
    """The OpenSSH one-line form Chaman's "Clé SSH publique" field takes."""
    return f"{key.get_name()} {key.get_base64()} {comment}"


def ssh_key(req: InitRequest, keys_dir: Path, name: str) -> tuple[SshKeyResult, list[str]]:
    """Generate the channel's SSH key pair, or reuse the one already there: never overwrite."""
    notes: list[str] = []
    comment = f"flad-{name}@{req.company_id}"
    if req.ssh_key is not None:
        path = req.ssh_key.absolute()
        key = _load(path)
        problem = private_mode_problem(path)
        if problem:
            raise InitError(f"--ssh-key: {problem}")
        notes.append(f"SSH key: using the existing channel's key {path} "
                     f"({_describe(key)}); nothing to upload (step 3b).")
        return _result(key, path, None, _public_line(key, comment), generated=False), notes

    private_path = keys_dir / f"{name}_{req.key_type}"
    public_path = private_path.with_name(private_path.name + ".pub")
    if private_path.exists() or private_path.is_symlink():
        key = _load(private_path)
        problem = private_mode_problem(private_path)
        if problem:
            raise InitError(f"the existing SSH private key {problem}")
        line = _public_line(key, comment)
        if public_path.exists():
            written = public_path.read_text(encoding="ascii", errors="replace").split()
            if written[:2] != line.split()[:2]:
                raise InitError(f"{public_path} does not hold the public part of {private_path}; "
                                "flad init never overwrites a key: move one of them away")
            line = " ".join(written)
        else:
            write_new(public_path, (line + "\n").encode("ascii"), 0o644)
        notes.append(f"SSH key: reusing {private_path} ({_describe(key)}), made by an "
                     "earlier run; it was not changed.")
        return _result(key, private_path, public_path, line, generated=False), notes
    if public_path.exists() or public_path.is_symlink():
        raise InitError(f"{public_path} exists without its private key {private_path}; flad "
                        "init never overwrites a key: move it away first")

    new_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if req.key_type == "rsa":
        new_key = rsa.generate_private_key(public_exponent=65537, key_size=req.rsa_bits)
    else:
        new_key = ed25519.Ed25519PrivateKey.generate()
        notes.append("SSH key: Ed25519 chosen. Public clients report RSA keys with the legacy "
                     "ssh-rsa algorithm for this server; whether it takes Ed25519 keys is not "
                     "documented publicly. Use the default (RSA) if the connection is refused.")
    pem = new_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    write_new(private_path, pem, 0o600)
    key = _load(private_path)  # as the service will read it
    line = _public_line(key, comment)
    write_new(public_path, (line + "\n").encode("ascii"), 0o644)
    return _result(key, private_path, public_path, line, generated=True), notes
