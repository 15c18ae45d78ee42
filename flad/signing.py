"""The signature file (FS): detached CMS SignedData over the exact bytes of an FI file.

Signing uses cryptography's PKCS#7 builder (detached, binary, SHA-256, DER), which
gives what the platform expects and what `openssl cms -verify -binary` accepts.
Verification takes the CMS structure apart with asn1crypto (cryptography can build CMS
but cannot read one field by field) and checks every signature with cryptography.

Pure: bytes and values in, bytes and values out. Only the `load_*` functions read the
files an operator names. No message ever carries a passphrase or key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asn1crypto.tsp  # noqa: F401  (registers the ESS signing-certificate attributes)
from asn1crypto import cms
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from flad import keyfiles

__all__ = [
    "LINE_FORMATS",
    "CertificateReport",
    "PassphraseError",
    "SignatureInvalid",
    "Signer",
    "SigningError",
    "VerifiedSignature",
    "check_signer",
    "decode_fs",
    "describe_certificate",
    "encode_fs",
    "load_certificates",
    "load_signer",
    "load_signer_pem",
    "load_signer_pkcs12",
    "loose_private_files",
    "make_fs",
    "sign_detached",
    "verify_fs",
]

StrPath = str | os.PathLike[str]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

#: The FS encodings the platform accepts: one base64 line, or 76-char lines split by CR.
LINE_FORMATS = ("single", "cr76")

# Digests accepted in a signature we verify. SHA-1 is refused (deprecated by the
# platform); anything weaker or unknown is refused as unsupported.
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_DEPRECATED_DIGESTS = frozenset({"sha1", "md5", "md2", "sha224"})

_RSA_SIGNATURES = frozenset(
    {"rsassa_pkcs1v15", "sha1_rsa", "sha224_rsa", "sha256_rsa", "sha384_rsa", "sha512_rsa"}
)
_ECDSA_SIGNATURES = frozenset(
    {"ecdsa", "sha1_ecdsa", "sha224_ecdsa", "sha256_ecdsa", "sha384_ecdsa", "sha512_ecdsa"}
)
# Some signers put id-ecPublicKey where the signature algorithm belongs.
_EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"


class SigningError(Exception):
    """The signer cannot be loaded or cannot sign. One line; never a secret in it."""


class PassphraseError(SigningError):
    """The key is protected and the passphrase is missing or wrong: ask for it again."""


def _passphrase_hint(source: str | None) -> str:
    return f" (read from {source})" if source else ""


class SignatureInvalid(Exception):
    """A signature file does not prove that the data comes, unchanged, from the signer."""


@dataclass(frozen=True)
class Signer:
    """A signing certificate with its private key and the chain sent along with it."""

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class VerifiedSignature:
    """What a successful verification proved: who signed, with what, and when (claimed)."""

    signer: x509.Certificate
    digest_algorithm: str
    signing_time: datetime | None


@dataclass(frozen=True)
class CertificateReport:
    """Problems found with a signer: errors stop sending, warnings only need attention."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing prevents signing."""
        return not self.errors


# --------------------------------------------------------------------------- loading


def _read(path: StrPath, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SigningError(f"cannot read {what} file {os.fspath(path)}: {reason}") from None


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    return _public_der(cert.public_key()) == _public_der(key.public_key())


def _check_key_type(key: object, path: StrPath) -> PrivateKey:
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    kind = type(key).__name__.removesuffix("PrivateKey") or "unknown"
    raise SigningError(
        f"key file {os.fspath(path)} holds a {kind} key; only RSA and EC keys can sign"
    )


def _parse_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM (any number), DER (one) or PKCS#7 (a .p7b bundle)."""
    if b"-----BEGIN PKCS7-----" in data:
        return pkcs7.load_pem_pkcs7_certificates(data)
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        return pkcs7.load_der_pkcs7_certificates(data)


def load_certificates(path: StrPath) -> list[x509.Certificate]:
    """All certificates in a PEM file (or the one in a DER file), e.g. for reply trust."""
    data = _read(path, "certificate")
    try:
        certs = _parse_certificates(data)
    except (ValueError, UnsupportedAlgorithm):
        certs = []
    if not certs:
        raise SigningError(f"no certificate found in {os.fspath(path)} (expected PEM or DER)")
    return certs


def _load_private_key(path: StrPath, passphrase: bytes | None,
                      passphrase_source: str | None = None) -> PrivateKey:
    data = _read(path, "key")
    shown = os.fspath(path)
    pem = b"-----BEGIN" in data
    encrypted = b"ENCRYPTED" in data if pem else None
    load = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    try:
        try:
            key = load(data, passphrase or None)
        except TypeError:
            if not passphrase:
                raise PassphraseError(
                    f"key file {shown} is encrypted and no passphrase was given"
                ) from None
            # A passphrase for a key that has none: harmless, use the key as it is.
            key = load(data, None)
    except SigningError:
        raise
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            reason = f"wrong passphrase{_passphrase_hint(passphrase_source)}, or a damaged key"
            raise PassphraseError(f"cannot load key file {shown}: {reason}") from None
        elif pem:
            reason = "no readable private key in it"
        else:
            reason = ("not a PEM or DER private key, or wrong passphrase"
                      f"{_passphrase_hint(passphrase_source)}")
        raise SigningError(f"cannot load key file {shown}: {reason}") from None
    return _check_key_type(key, path)


def loose_private_files(key: StrPath | None, passphrase_file: StrPath | None) -> list[str]:
    """Problems of the private files `flad sign` was given (key or PKCS#12, passphrase
    file): open to group or others, or owned by another user, each with its fix.

    `flad sign` refuses them as configuration loading does: a signing key others can read
    is a qualified certificate anyone on the machine can use. Missing files are left to
    the loaders, which say they cannot be read.
    """
    problems = []
    for raw, what in ((key, "key file"), (passphrase_file, "passphrase file")):
        if raw is None or not os.path.lexists(raw):
            continue
        problem = keyfiles.private_file_problem(Path(raw), what)
        if problem is not None:
            problems.append(problem)
    return problems


def load_signer_pem(
    cert_path: StrPath, key_path: StrPath, passphrase: bytes | None = None,
    passphrase_source: str | None = None,
) -> Signer:
    """A signer from a PEM certificate file (signer cert + optional chain) and a key file.

    The certificate that matches the key is the signer's, whatever its place in the file;
    the other certificates of the file become the chain included in each signature.
    `passphrase_source` (a file name, a credential) is named when the passphrase is wrong.
    """
    key = _load_private_key(key_path, passphrase, passphrase_source)
    certs = load_certificates(cert_path)
    for index, cert in enumerate(certs):
        if _key_matches(cert, key):
            chain = tuple(certs[:index] + certs[index + 1 :])
            return Signer(certificate=cert, private_key=key, chain=chain)
    raise SigningError(
        f"the private key in {os.fspath(key_path)} does not match "
        f"the certificate in {os.fspath(cert_path)}"
    )


def _looks_like_pkcs12(data: bytes) -> bool:
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        return bool(pfx["version"].native == "v3")
    except (ValueError, TypeError, KeyError):
        return False


def load_signer_pkcs12(p12_path: StrPath, passphrase: bytes | None = None,
                       passphrase_source: str | None = None) -> Signer:
    """A signer from a PKCS#12 (.p12/.pfx) file holding key, certificate and chain;
    `passphrase_source` is named when the passphrase is wrong."""
    data = _read(p12_path, "PKCS#12")
    shown = os.fspath(p12_path)
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, passphrase or None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if not _looks_like_pkcs12(data):
            raise SigningError(f"cannot open PKCS#12 file {shown}: not a PKCS#12 file"
                               ) from None
        if passphrase:
            reason = f"wrong passphrase{_passphrase_hint(passphrase_source)}, or a damaged file"
        else:
            reason = "it is protected and no passphrase was given"
        raise PassphraseError(f"cannot open PKCS#12 file {shown}: {reason}") from None
    if key is None:
        raise SigningError(f"PKCS#12 file {shown} holds no private key")
    private_key = _check_key_type(key, p12_path)
    candidates = ([cert] if cert is not None else []) + list(extra)
    for cand in candidates:
        if _key_matches(cand, private_key):
            chain = tuple(c for c in candidates if c is not cand)
            return Signer(certificate=cand, private_key=private_key, chain=chain)
    if not candidates:
        raise SigningError(f"PKCS#12 file {shown} holds no certificate")
    raise SigningError(f"the private key in PKCS#12 file {shown} matches none of its certificates")


def load_signer(certificate: StrPath | None, private_key: StrPath | None,
                pkcs12_path: StrPath | None, passphrase: bytes | None = None,
                passphrase_source: str | None = None) -> Signer:
    """The signer from one PKCS#12 file, or else from a PEM certificate and its key.

    The one place that chooses between the two forms: the service (`[channel.signing]`),
    `flad sign` and `flad init` all come here, so they accept the same files.
    """
    if pkcs12_path is not None:
        return load_signer_pkcs12(pkcs12_path, passphrase, passphrase_source)
    if certificate is None or private_key is None:
        raise SigningError("a signer needs a certificate and its private key, "
                           "or one PKCS#12 file")
    return load_signer_pem(certificate, private_key, passphrase, passphrase_source)


# --------------------------------------------------------------------------- signing


def sign_detached(data: bytes, signer: Signer) -> bytes:
    """Detached CMS SignedData (DER) over the exact bytes of `data`, SHA-256.

    Binary mode: no MIME canonicalisation, so CR/LF in the FI file are signed as they are.
    The signer certificate (and its chain) travel in the signature.
    """
    if not _key_matches(signer.certificate, signer.private_key):
        raise SigningError("the private key does not match the signer certificate")
    builder = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(bytes(data))
        .add_signer(signer.certificate, signer.private_key, hashes.SHA256())
    )
    for cert in signer.chain:
        builder = builder.add_certificate(cert)
    try:
        return builder.sign(
            serialization.Encoding.DER,
            [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError(f"cannot sign: {type(exc).__name__}") from None


def encode_fs(der: bytes, line_format: str = "single") -> bytes:
    """Base64 text of a DER signature, as the platform reads an FS file (no PEM armour).

    "single": one line, no trailing newline. "cr76": 76-character lines separated by a
    single CR (0x0D), none after the last line.
    """
    text = base64.b64encode(der)
    if line_format == "single":
        return text
    if line_format == "cr76":
        return b"\r".join(text[i : i + 76] for i in range(0, len(text), 76))
    raise ValueError(f"unknown FS line format {line_format!r}; use one of {LINE_FORMATS}")


def make_fs(data: bytes, signer: Signer, line_format: str = "single") -> bytes:
    """The content of the FS file that goes with an FI file holding `data`."""
    return encode_fs(sign_detached(data, signer), line_format)


_BASE64_TEXT = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=- \t\r\n\v\f"
)


def decode_fs(fs: bytes) -> bytes:
    """DER bytes of an FS file, however its base64 lines are cut.

    Accepts one line or lines split by CR, LF or CRLF, surrounding whitespace and PEM
    armour lines. A file that is plainly raw DER (starts with a SEQUENCE and holds bytes
    no base64 text can) is returned as it is: the encoding of reply FS files is not
    public, and verification refuses anything that is not CMS anyway.
    """
    if not fs.strip():
        raise SignatureInvalid("signature file is empty")
    if fs[:1] == b"\x30" and not set(fs) <= _BASE64_TEXT:
        return bytes(fs)
    lines = (line.strip() for line in fs.strip().splitlines())
    text = b"".join(b"".join(line.split()) for line in lines if not line.startswith(b"-----"))
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("signature file is not valid base64") from None
    if not der:
        raise SignatureInvalid("signature file is empty")
    return der


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class _Candidate:
    cert: x509.Certificate
    asn1: Any  # asn1crypto.x509.Certificate


def _candidates(
    signed_data: Any, certificate: x509.Certificate | None, trusted: Sequence[x509.Certificate]
) -> list[_Candidate]:
    """Certificates that may be the signer's: those in the CMS, then those given to us."""
    found: list[_Candidate] = []
    for choice in signed_data["certificates"] or ():
        if choice.name != "certificate":
            continue
        der = choice.chosen.dump()
        found.append(_Candidate(x509.load_der_x509_certificate(der), choice.chosen))
    for cert in ([certificate] if certificate is not None else []) + list(trusted):
        der = cert.public_bytes(serialization.Encoding.DER)
        found.append(_Candidate(cert, asn1_x509.Certificate.load(der)))
    return found


def _subject_key_id(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _find_signer(sid: Any, candidates: list[_Candidate]) -> x509.Certificate:
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"]
        serial = sid.chosen["serial_number"].native
        for cand in candidates:
            if cand.asn1.serial_number == serial and cand.asn1.issuer == issuer:
                return cand.cert
        where = f"issuer {issuer.human_friendly}, serial {serial:X}"
    else:
        ski = bytes(sid.chosen.native)
        for cand in candidates:
            if _subject_key_id(cand.cert) == ski:
                return cand.cert
        where = f"key identifier {ski.hex()}"
    raise SignatureInvalid(f"signer certificate ({where}) is not in the signature")


def _digest_name(algorithm: Any, what: str) -> str:
    name = str(algorithm["algorithm"].native)
    if name in _DIGESTS:
        return name
    if name in _DEPRECATED_DIGESTS:
        raise SignatureInvalid(f"{what} {name} is deprecated; refused")
    raise SignatureInvalid(f"unsupported {what} {name}")


def _signed_attributes(signed_attrs: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for attr in signed_attrs:
        name = str(attr["type"].native)
        if name in attrs:
            raise SignatureInvalid(f"signed attribute {name} appears twice")
        values = attr["values"]
        if len(values) != 1:
            raise SignatureInvalid(f"signed attribute {name} must have exactly one value")
        attrs[name] = values[0]
    return attrs


def _check_signing_certificate(attrs: dict[str, Any], signer: x509.Certificate) -> None:
    """CAdES binds the signer certificate by hash (ESS signing-certificate attributes)."""
    der = signer.public_bytes(serialization.Encoding.DER)
    if "signing_certificate_v2" in attrs:
        first = attrs["signing_certificate_v2"]["certs"][0]
        name = str(first["hash_algorithm"]["algorithm"].native)
        if name not in hashlib.algorithms_available:
            raise SignatureInvalid(f"unsupported signing-certificate hash {name}")
        expected = hashlib.new(name, der).digest()
    elif "signing_certificate" in attrs:
        first = attrs["signing_certificate"]["certs"][0]
        expected = hashlib.sha1(der).digest()
    else:
        return
    if not hmac.compare_digest(bytes(first["cert_hash"].native), expected):
        raise SignatureInvalid("signing-certificate attribute names another certificate")


def _check_signature(
    signer_info: Any, signer: x509.Certificate, digest: str, signed: bytes | memoryview
) -> None:
    """The signature value over `signed`, with the algorithm the SignerInfo states."""
    algorithm = signer_info["signature_algorithm"]
    name = str(algorithm["algorithm"].native)
    oid = str(algorithm["algorithm"].dotted)
    signature = bytes(signer_info["signature"].native)
    public_key = signer.public_key()
    stated = name.rsplit("_", 1)[0] if name.endswith(("_rsa", "_ecdsa")) else None
    if stated is not None and stated != digest:
        raise SignatureInvalid(f"signature algorithm {name} does not match digest {digest}")
    hash_algorithm = _DIGESTS[digest]()
    try:
        if name in _RSA_SIGNATURES:
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise SignatureInvalid(f"signature algorithm {name} needs an RSA certificate")
            public_key.verify(signature, *_message(signed, padding.PKCS1v15(), hash_algorithm))
        elif name == "rsassa_pss":
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise SignatureInvalid("RSA-PSS signature needs an RSA certificate")
            params = algorithm["parameters"]
            pss_hash = _DIGESTS[_digest_name(params["hash_algorithm"], "PSS hash")]()
            mgf = params["mask_gen_algorithm"]
            if mgf["algorithm"].native != "mgf1":
                raise SignatureInvalid(f"unsupported PSS mask generation {mgf['algorithm'].native}")
            mgf_hash = _DIGESTS[_digest_name(mgf["parameters"], "PSS MGF1 hash")]()
            pss = padding.PSS(mgf=padding.MGF1(mgf_hash), salt_length=params["salt_length"].native)
            public_key.verify(signature, *_message(signed, pss, pss_hash))
        elif name in _ECDSA_SIGNATURES or oid == _EC_PUBLIC_KEY_OID:
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise SignatureInvalid(f"signature algorithm {name} needs an EC certificate")
            message, chosen = _prehashed(signed, hash_algorithm)
            public_key.verify(signature, message, ec.ECDSA(chosen))
        else:
            raise SignatureInvalid(f"unsupported signature algorithm {name}")
    except InvalidSignature:
        raise SignatureInvalid("signature does not verify with the signer's public key") from None


def _prehashed(signed: bytes | memoryview, algorithm: hashes.HashAlgorithm
               ) -> tuple[bytes, hashes.HashAlgorithm | Prehashed]:
    """Bytes go to the key as they are; a view of a mapped file is hashed here first
    (the keys take bytes, and a copy of a large reply is what the view avoids)."""
    if isinstance(signed, bytes):
        return signed, algorithm
    return hashlib.new(algorithm.name.replace("-", "_"), signed).digest(), Prehashed(algorithm)


def _message(signed: bytes | memoryview, pad: padding.AsymmetricPadding,
             algorithm: hashes.HashAlgorithm
             ) -> tuple[bytes, padding.AsymmetricPadding, hashes.HashAlgorithm | Prehashed]:
    message, chosen = _prehashed(signed, algorithm)
    return message, pad, chosen


def _is_trusted(signer: x509.Certificate, trusted: Sequence[x509.Certificate]) -> bool:
    for anchor in trusted:
        if signer == anchor:
            return True
        try:
            signer.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return True
    return False


def _verify_signer_info(
    data: bytes | memoryview,
    signer_info: Any,
    candidates: list[_Candidate],
    content_type: str,
    certificate: x509.Certificate | None,
    trusted: Sequence[x509.Certificate],
) -> VerifiedSignature:
    signer = _find_signer(signer_info["sid"], candidates)
    if certificate is not None and signer != certificate:
        raise SignatureInvalid(
            f"signed by {signer.subject.rfc4514_string()} (serial {signer.serial_number:X}), "
            "not by the expected certificate"
        )
    digest = _digest_name(signer_info["digest_algorithm"], "digest algorithm")
    signing_time: datetime | None = None
    signed_attrs = signer_info["signed_attrs"]
    if len(signed_attrs):
        attrs = _signed_attributes(signed_attrs)
        if "message_digest" not in attrs:
            raise SignatureInvalid("signed attributes lack the message digest")
        actual = hashlib.new(digest, data).digest()
        if not hmac.compare_digest(bytes(attrs["message_digest"].native), actual):
            raise SignatureInvalid("message digest mismatch: the data is not what was signed")
        if "content_type" in attrs and str(attrs["content_type"].native) != content_type:
            raise SignatureInvalid("content-type attribute does not match the content type")
        if "signing_time" in attrs:
            value = attrs["signing_time"].native
            if isinstance(value, datetime):
                signing_time = value if value.tzinfo else value.replace(tzinfo=UTC)
        _check_signing_certificate(attrs, signer)
        # The signature covers the attributes' DER as a SET, not their [0] IMPLICIT tag.
        encoded = signed_attrs.dump()
        signed: bytes | memoryview = b"\x31" + encoded[1:]
    else:
        signed = data
    _check_signature(signer_info, signer, digest, signed)
    if trusted and not _is_trusted(signer, trusted):
        raise SignatureInvalid(
            f"signer {signer.subject.rfc4514_string()} is not trusted: "
            "neither a trusted certificate nor issued by one"
        )
    return VerifiedSignature(signer=signer, digest_algorithm=digest, signing_time=signing_time)


def verify_fs(
    data: bytes | memoryview,
    fs: bytes,
    *,
    certificate: x509.Certificate | None = None,
    trusted: Sequence[x509.Certificate] = (),
) -> VerifiedSignature:
    """Check that the FS file `fs` is a valid detached signature of `data`.

    `data` may be a view of a mapped file: a large reply is checked without a copy.

    `certificate`: the signer must be exactly this certificate. `trusted`: the signer
    must be one of these or be directly issued by one. Unsigned attributes (CAdES-T
    timestamps) are ignored. Every SignerInfo must verify; the first one is returned.
    Raises SignatureInvalid with a one-line reason.
    """
    der = decode_fs(fs)
    try:
        info = cms.ContentInfo.load(der, strict=True)
        content_type = info["content_type"].native
    except (ValueError, TypeError, KeyError):
        raise SignatureInvalid("not a CMS structure") from None
    if content_type != "signed_data":
        raise SignatureInvalid(f"not a CMS SignedData (content type {content_type})")
    try:
        signed_data = info["content"]
        encap = signed_data["encap_content_info"]
        if encap["content"].native is not None:
            raise SignatureInvalid("content embedded: a detached signature is expected")
        signer_infos = list(signed_data["signer_infos"])
        if not signer_infos:
            raise SignatureInvalid("the signature has no signer")
        candidates = _candidates(signed_data, certificate, trusted)
        econtent_type = str(encap["content_type"].native)
        results = [
            _verify_signer_info(data, si, candidates, econtent_type, certificate, trusted)
            for si in signer_infos
        ]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise SignatureInvalid(f"malformed CMS SignedData ({type(exc).__name__})") from None
    return results[0]


# --------------------------------------------------------------------------- checking


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_signer(
    signer: Signer, *, now: datetime | None = None, warn_days: int = 30
) -> CertificateReport:
    """What would stop (errors) or soon stop (warnings) this signer from signing."""
    now = _utc(now) if now is not None else datetime.now(UTC)
    cert = signer.certificate
    errors: list[str] = []
    warnings: list[str] = []
    if not _key_matches(cert, signer.private_key):
        errors.append("private key does not match the certificate")
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if now < not_before:
        errors.append(f"certificate not yet valid: valid from {not_before.isoformat()}")
    if now > not_after:
        errors.append(f"certificate expired on {not_after.date().isoformat()}")
    else:
        days_left = (not_after.date() - now.date()).days
        if days_left < warn_days:
            when = "today" if days_left == 0 else f"in {days_left} days"
            warnings.append(
                f"certificate expires on {not_after.date().isoformat()} ({when}); renew it"
            )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if not (usage.digital_signature or usage.content_commitment):
            warnings.append(
                "certificate key usage allows neither digital signature nor non-repudiation"
            )
    return CertificateReport(errors=tuple(errors), warnings=tuple(warnings))


def _describe_key(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


def describe_certificate(cert: x509.Certificate) -> dict[str, str]:
    """The facts an operator checks before trusting a certificate (for init and check)."""
    fingerprint = cert.fingerprint(hashes.SHA256()).hex().upper()
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:X}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256_fingerprint": ":".join(
            fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2)
        ),
        "key": _describe_key(cert),
    }
