"""flad.signing with real keys and certificates (tests/certs.py) and, where installed, the
real openssl command line as the independent judge of the FS format."""

from __future__ import annotations

import base64
import hashlib
import itertools
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs7

from flad.signing import (
    CertificateReport,
    SignatureInvalid,
    Signer,
    SigningError,
    check_signer,
    decode_fs,
    describe_certificate,
    encode_fs,
    load_certificates,
    load_signer_pem,
    load_signer_pkcs12,
    make_fs,
    sign_detached,
    verify_fs,
)
from tests.certs import (
    CertSet,
    Issued,
    issue_cert,
    make_cert_set,
    pem_certificates,
    write_private,
    write_signer,
    write_test_signer,
)

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

# CR, LF, CRLF, NUL and non-ASCII bytes: a binary signature must sign them untouched.
DATA = b'<?xml version="1.0"?>\n<FLA>\r\n  <x>caf\xc3\xa9</x>\r<y>\x00</y>\n</FLA>\n'
PASSPHRASE = b"correct horse battery staple"

Options = pkcs7.PKCS7Options


@pytest.fixture(scope="module")
def pki() -> CertSet:
    return make_cert_set()


def signer_of(issued: Issued, pki: CertSet) -> Signer:
    return Signer(issued.certificate, issued.key, (pki.ca.certificate,))


@pytest.fixture(scope="module", params=["rsa", "ec"])
def signer(request: pytest.FixtureRequest, pki: CertSet) -> Signer:
    issued: Issued = getattr(pki, request.param)
    return signer_of(issued, pki)


def build(
    data: bytes,
    issued: Issued,
    *options: pkcs7.PKCS7Options,
    digest: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
    rsa_padding: padding.PSS | None = None,
) -> bytes:
    """A CMS signature made straight with cryptography, for the variants flad never makes."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data)
    builder = builder.add_signer(
        issued.certificate, issued.key, digest or hashes.SHA256(), rsa_padding=rsa_padding
    )
    return builder.sign(serialization.Encoding.DER, list(options))


def fs_of(der: bytes) -> bytes:
    return base64.b64encode(der)


def signer_info(der: bytes) -> cms.SignerInfo:
    return cms.ContentInfo.load(der)["content"]["signer_infos"][0]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("line_format", ["single", "cr76"])
def test_round_trip(signer: Signer, pki: CertSet, line_format: str) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    fs = make_fs(DATA, signer, line_format)
    result = verify_fs(DATA, fs, certificate=signer.certificate, trusted=[pki.ca.certificate])
    assert result.signer == signer.certificate
    assert result.digest_algorithm == "sha256"
    assert result.signing_time is not None
    assert before - timedelta(seconds=1) <= result.signing_time <= datetime.now(UTC)


def test_signature_is_detached_binary_sha256_with_certificates(signer: Signer) -> None:
    der = sign_detached(DATA, signer)
    info = cms.ContentInfo.load(der)
    assert info["content_type"].native == "signed_data"
    signed = info["content"]
    assert signed["encap_content_info"]["content"].native is None
    certs = [c.chosen.dump() for c in signed["certificates"]]
    assert signer.certificate.public_bytes(serialization.Encoding.DER) in certs
    assert signer.chain[0].public_bytes(serialization.Encoding.DER) in certs
    si = signed["signer_infos"][0]
    assert si["digest_algorithm"]["algorithm"].native == "sha256"
    attrs = {a["type"].native: a["values"][0].native for a in si["signed_attrs"]}
    # Binary: the digest is over the exact bytes, CR/LF untouched.
    assert attrs["message_digest"] == hashlib.sha256(DATA).digest()


def test_single_line_format(signer: Signer) -> None:
    fs = make_fs(DATA, signer, "single")
    assert b"\r" not in fs and b"\n" not in fs and b"-----" not in fs
    assert fs == fs.strip()
    assert base64.b64decode(fs, validate=True)[:1] == b"\x30"


def test_cr76_format(signer: Signer) -> None:
    fs = make_fs(DATA, signer, "cr76")
    assert b"\n" not in fs and b"-----" not in fs
    assert not fs.endswith(b"\r") and not fs.startswith(b"\r")
    lines = fs.split(b"\r")
    assert len(lines) > 2
    assert all(len(line) == 76 for line in lines[:-1])
    assert 0 < len(lines[-1]) <= 76
    assert b"".join(lines) == encode_fs(decode_fs(fs), "single")


def test_cr76_exact_multiple_has_no_empty_line() -> None:
    der = bytes(range(256))[: 57 * 2]  # 114 bytes -> 152 base64 chars = 2 full lines
    assert encode_fs(der, "cr76").split(b"\r") == [
        base64.b64encode(der)[:76],
        base64.b64encode(der)[76:],
    ]


def test_unknown_line_format() -> None:
    with pytest.raises(ValueError, match="line format"):
        encode_fs(b"0", "lf64")


def test_empty_data_can_be_signed(signer: Signer) -> None:
    assert verify_fs(b"", make_fs(b"", signer)).signer == signer.certificate


# --------------------------------------------------------------------------- decode_fs


def test_decode_tolerates_line_ends_armour_and_whitespace(signer: Signer) -> None:
    der = sign_detached(DATA, signer)
    text = base64.b64encode(der)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    variants = [
        text,
        b"\n".join(lines),
        b"\r\n".join(lines) + b"\r\n",
        b"\r".join(lines),
        b"  \n" + text + b"\n\n",
        b"-----BEGIN PKCS7-----\n" + b"\n".join(lines) + b"\n-----END PKCS7-----\n",
        b"-----BEGIN CMS-----\r\n" + b"\r\n".join(lines) + b"\r\n-----END CMS-----",
        encode_fs(der, "cr76"),
    ]
    for variant in variants:
        assert decode_fs(variant) == der
        verify_fs(DATA, variant)


def test_decode_accepts_raw_der(signer: Signer) -> None:
    der = sign_detached(DATA, signer)
    assert decode_fs(der) == der


@pytest.mark.parametrize("fs", [b"", b"  \r\n", b"not base64 at all!", b"QUJD*", b"QUJDRA="])
def test_decode_refuses_what_is_not_base64(fs: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        decode_fs(fs)


# --------------------------------------------------------------------------- refusals


def test_tampered_data(signer: Signer) -> None:
    fs = make_fs(DATA, signer)
    for changed in (DATA + b" ", DATA[:-1], DATA.replace(b"\r\n", b"\n"), b""):
        with pytest.raises(SignatureInvalid, match="digest mismatch"):
            verify_fs(changed, fs)


def test_tampered_signature_value(signer: Signer) -> None:
    der = sign_detached(DATA, signer)
    value = bytes(signer_info(der)["signature"].native)
    broken = der.replace(value, value[:-8] + bytes(b ^ 0xFF for b in value[-8:]))
    assert broken != der
    with pytest.raises(SignatureInvalid, match="signature"):
        verify_fs(DATA, fs_of(broken))


def test_wrong_certificate(pki: CertSet) -> None:
    fs = make_fs(DATA, signer_of(pki.rsa, pki))
    with pytest.raises(SignatureInvalid, match="not by the expected certificate"):
        verify_fs(DATA, fs, certificate=pki.ec.certificate)
    # The same subject and key re-issued is still another certificate.
    twin = issue_cert(pki.ca, "flad test signer RSA", key=pki.rsa.key)
    with pytest.raises(SignatureInvalid, match="not by the expected certificate"):
        verify_fs(DATA, fs, certificate=twin.certificate)


def test_trust(pki: CertSet, signer: Signer) -> None:
    fs = make_fs(DATA, signer)
    assert verify_fs(DATA, fs, trusted=[pki.ca.certificate]).signer == signer.certificate
    assert verify_fs(DATA, fs, trusted=[pki.other_ca.certificate, pki.ca.certificate])
    assert verify_fs(DATA, fs, trusted=[signer.certificate])  # pinned directly
    with pytest.raises(SignatureInvalid, match="not trusted"):
        verify_fs(DATA, fs, trusted=[pki.other_ca.certificate])
    other = pki.ec if signer.certificate == pki.rsa.certificate else pki.rsa
    with pytest.raises(SignatureInvalid, match="not trusted"):
        verify_fs(DATA, fs, trusted=[other.certificate])  # a sibling is no issuer


def test_forged_issuer_name_is_not_trusted(pki: CertSet) -> None:
    # A CA with the same name as the trusted one, but another key.
    from tests.certs import make_ca

    impostor = make_ca("flad test CA")
    forged = issue_cert(impostor, "flad test signer RSA")
    fs = make_fs(DATA, Signer(forged.certificate, forged.key))
    with pytest.raises(SignatureInvalid, match="not trusted"):
        verify_fs(DATA, fs, trusted=[pki.ca.certificate])


def test_content_embedded_is_refused(pki: CertSet) -> None:
    der = build(DATA, pki.rsa, Options.Binary)
    with pytest.raises(SignatureInvalid, match="content embedded"):
        verify_fs(DATA, fs_of(der))


def test_not_signed_data(pki: CertSet) -> None:
    enveloped = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(DATA)
        .add_recipient(pki.rsa.certificate)
        .encrypt(serialization.Encoding.DER, [Options.Binary])
    )
    with pytest.raises(SignatureInvalid, match="not a CMS SignedData"):
        verify_fs(DATA, fs_of(enveloped))
    cert_der = pki.rsa.certificate.public_bytes(serialization.Encoding.DER)
    with pytest.raises(SignatureInvalid, match="not a CMS"):
        verify_fs(DATA, fs_of(cert_der))
    with pytest.raises(SignatureInvalid):
        verify_fs(DATA, fs_of(b"\x30\x03\x02\x01\x01"))


def test_truncated_signature(signer: Signer) -> None:
    der = sign_detached(DATA, signer)
    with pytest.raises(SignatureInvalid):
        verify_fs(DATA, fs_of(der[:-20]))


def test_signer_certificate_missing(pki: CertSet) -> None:
    der = build(DATA, pki.rsa, Options.DetachedSignature, Options.Binary, Options.NoCerts)
    with pytest.raises(SignatureInvalid, match="not in the signature"):
        verify_fs(DATA, fs_of(der))
    # Known from elsewhere: the expected certificate, or a pinned trusted one, fills the gap.
    assert verify_fs(DATA, fs_of(der), certificate=pki.rsa.certificate)
    assert verify_fs(DATA, fs_of(der), trusted=[pki.rsa.certificate])


# --------------------------------------------------------------------------- variants


@pytest.mark.parametrize(
    ("digest", "name"), [(hashes.SHA384(), "sha384"), (hashes.SHA512(), "sha512")]
)
def test_stronger_digests_accepted(
    pki: CertSet, digest: hashes.SHA384 | hashes.SHA512, name: str
) -> None:
    for issued in (pki.rsa, pki.ec):
        der = build(DATA, issued, Options.DetachedSignature, Options.Binary, digest=digest)
        assert verify_fs(DATA, fs_of(der)).digest_algorithm == name


def test_rsa_pss(pki: CertSet) -> None:
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    der = build(DATA, pki.rsa, Options.DetachedSignature, Options.Binary, rsa_padding=pss)
    assert signer_info(der)["signature_algorithm"]["algorithm"].native == "rsassa_pss"
    assert verify_fs(DATA, fs_of(der), certificate=pki.rsa.certificate)
    with pytest.raises(SignatureInvalid):
        verify_fs(DATA + b"x", fs_of(der))


def test_no_signed_attributes(signer: Signer) -> None:
    issued = Issued(signer.certificate, signer.private_key)
    der = build(DATA, issued, Options.DetachedSignature, Options.Binary, Options.NoAttributes)
    assert len(signer_info(der)["signed_attrs"]) == 0
    result = verify_fs(DATA, fs_of(der))
    assert result.signer == signer.certificate and result.signing_time is None
    with pytest.raises(SignatureInvalid, match="signature does not verify"):
        verify_fs(DATA + b"x", fs_of(der))


def add_unsigned_timestamp(der: bytes, token: bytes) -> bytes:
    """The shape of CAdES-T: a signature-time-stamp token as an unsigned attribute."""
    info = cms.ContentInfo.load(der)
    si = info["content"]["signer_infos"][0]
    si["unsigned_attrs"] = cms.CMSAttributes(
        [
            cms.CMSAttribute(
                {"type": "signature_time_stamp_token", "values": [cms.ContentInfo.load(token)]}
            )
        ]
    )
    out: bytes = info.dump(force=True)
    return out


def test_unsigned_attributes_are_tolerated(pki: CertSet, signer: Signer) -> None:
    der = sign_detached(DATA, signer)
    token = sign_detached(hashlib.sha256(DATA).digest(), signer_of(pki.ec, pki))
    cades_t = add_unsigned_timestamp(der, token)
    assert len(signer_info(cades_t)["unsigned_attrs"]) == 1
    result = verify_fs(DATA, encode_fs(cades_t, "cr76"), trusted=[pki.ca.certificate])
    assert result.signer == signer.certificate
    with pytest.raises(SignatureInvalid, match="digest mismatch"):
        verify_fs(DATA + b"x", fs_of(cades_t))


# --------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def files(pki: CertSet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Signer files on disk: plain and passphrase-protected, PEM and PKCS#12."""
    root = tmp_path_factory.mktemp("keys")
    plain = write_signer(root, pki.rsa, stem="plain", chain=[pki.ca.certificate])
    locked = write_signer(
        root, pki.ec, stem="locked", passphrase=PASSPHRASE, chain=[pki.ca.certificate]
    )
    return {
        "cert": plain.cert_path,
        "key": plain.key_path,
        "p12": plain.p12_path,
        "chain": plain.chain_path,
        "locked_cert": locked.cert_path,
        "locked_key": locked.key_path,
        "locked_p12": locked.p12_path,
    }


def test_files_are_private(files: dict[str, Path]) -> None:
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_load_pem(files: dict[str, Path], pki: CertSet) -> None:
    signer = load_signer_pem(files["cert"], files["key"])
    assert signer.certificate == pki.rsa.certificate
    assert signer.chain == (pki.ca.certificate,)
    verify_fs(DATA, make_fs(DATA, signer), trusted=[pki.ca.certificate])
    # A passphrase for a key that has none does no harm.
    assert (
        load_signer_pem(files["cert"], files["key"], PASSPHRASE).certificate == signer.certificate
    )


def test_load_pem_with_passphrase(files: dict[str, Path], pki: CertSet) -> None:
    signer = load_signer_pem(str(files["locked_cert"]), str(files["locked_key"]), PASSPHRASE)
    assert signer.certificate == pki.ec.certificate
    verify_fs(DATA, make_fs(DATA, signer), certificate=pki.ec.certificate)


def test_load_pem_chain_first(tmp_path: Path, pki: CertSet, files: dict[str, Path]) -> None:
    both = write_private(
        tmp_path / "both.pem", pem_certificates([pki.ca.certificate, pki.rsa.certificate])
    )
    signer = load_signer_pem(both, files["key"])
    assert signer.certificate == pki.rsa.certificate
    assert signer.chain == (pki.ca.certificate,)


def test_load_pem_cert_and_key_in_one_file(tmp_path: Path, files: dict[str, Path]) -> None:
    combined = write_private(
        tmp_path / "combined.pem", files["cert"].read_bytes() + files["key"].read_bytes()
    )
    assert load_signer_pem(combined, combined).certificate == load_certificates(files["cert"])[0]


def test_load_der_certificate_and_key(tmp_path: Path, pki: CertSet) -> None:
    cert = write_private(
        tmp_path / "c.der", pki.ec.certificate.public_bytes(serialization.Encoding.DER)
    )
    key = write_private(
        tmp_path / "k.der",
        pki.ec.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    assert load_signer_pem(cert, key).certificate == pki.ec.certificate


def test_wrong_passphrase_names_file_not_secret(files: dict[str, Path]) -> None:
    wrong = b"Tr0ub4dor&3-not-the-one"
    with pytest.raises(SigningError) as pem_error:
        load_signer_pem(files["locked_cert"], files["locked_key"], wrong)
    with pytest.raises(SigningError) as p12_error:
        load_signer_pkcs12(files["locked_p12"], wrong)
    for error, path in ((pem_error, files["locked_key"]), (p12_error, files["locked_p12"])):
        message = str(error.value)
        assert str(path) in message
        assert "passphrase" in message
        assert "\n" not in message
        for secret in (wrong, PASSPHRASE):
            assert secret.decode() not in message
            assert secret.decode() not in repr(error.value)
        assert error.value.__cause__ is None and error.value.__suppress_context__


def test_missing_passphrase(files: dict[str, Path]) -> None:
    with pytest.raises(SigningError, match="no passphrase") as error:
        load_signer_pem(files["locked_cert"], files["locked_key"])
    assert str(files["locked_key"]) in str(error.value)
    with pytest.raises(SigningError, match="no passphrase"):
        load_signer_pkcs12(files["locked_p12"])


def test_key_not_matching_certificate(files: dict[str, Path]) -> None:
    with pytest.raises(SigningError, match="does not match") as error:
        load_signer_pem(files["cert"], files["locked_key"], PASSPHRASE)
    assert str(files["cert"]) in str(error.value)
    assert str(files["locked_key"]) in str(error.value)


def test_unreadable_files(tmp_path: Path, files: dict[str, Path]) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(SigningError, match=r"cannot read key file .*missing\.pem"):
        load_signer_pem(files["cert"], missing)
    with pytest.raises(SigningError, match=r"cannot read certificate file .*missing\.pem"):
        load_signer_pem(missing, files["key"])
    with pytest.raises(SigningError, match=r"cannot read PKCS#12 file .*missing\.pem"):
        load_signer_pkcs12(missing)
    garbage = write_private(tmp_path / "garbage", b"this is not a key")
    with pytest.raises(SigningError, match="garbage"):
        load_signer_pem(files["cert"], garbage)
    with pytest.raises(SigningError, match="not a PKCS#12 file"):
        load_signer_pkcs12(garbage)
    with pytest.raises(SigningError, match="no certificate"):
        load_signer_pem(garbage, files["key"])
    with pytest.raises(SigningError, match="no readable private key"):
        load_signer_pem(files["cert"], files["cert"])


def test_load_pkcs12(files: dict[str, Path], pki: CertSet) -> None:
    plain = load_signer_pkcs12(files["p12"])
    assert plain.certificate == pki.rsa.certificate
    assert plain.chain == (pki.ca.certificate,)
    locked = load_signer_pkcs12(files["locked_p12"], PASSPHRASE)
    assert locked.certificate == pki.ec.certificate
    for signer in (plain, locked):
        verify_fs(DATA, make_fs(DATA, signer, "cr76"), trusted=[pki.ca.certificate])


def test_signer_repr_hides_key(pki: CertSet) -> None:
    signer = signer_of(pki.rsa, pki)
    assert "private_key" not in repr(signer)
    pem = pki.rsa.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert pem.decode() not in repr(signer)


def test_sign_with_mismatched_signer(pki: CertSet) -> None:
    with pytest.raises(SigningError, match="does not match"):
        sign_detached(DATA, Signer(pki.rsa.certificate, pki.ec.key))


def test_load_certificates(tmp_path: Path, pki: CertSet, files: dict[str, Path]) -> None:
    assert load_certificates(files["cert"]) == [pki.rsa.certificate, pki.ca.certificate]
    der = write_private(
        tmp_path / "one.der", pki.ca.certificate.public_bytes(serialization.Encoding.DER)
    )
    assert load_certificates(der) == [pki.ca.certificate]
    with pytest.raises(SigningError, match=r"no certificate found in .*key\.pem"):
        load_certificates(files["key"])


def test_write_test_signer(tmp_path: Path) -> None:
    written = write_test_signer(tmp_path / "ecc", kind="ec", passphrase=PASSPHRASE)
    signer = load_signer_pkcs12(written.p12_path, PASSPHRASE)
    trust = load_certificates(written.chain_path)
    assert verify_fs(DATA, make_fs(DATA, signer), trusted=trust).signer == signer.certificate


# --------------------------------------------------------------------------- certificate checks


def test_check_signer_ok(pki: CertSet) -> None:
    report = check_signer(signer_of(pki.rsa, pki), now=pki.now)
    assert report == CertificateReport(errors=(), warnings=())
    assert report.ok


def test_check_signer_expired(pki: CertSet) -> None:
    report = check_signer(signer_of(pki.expired, pki), now=pki.now)
    day = pki.expired.certificate.not_valid_after_utc.date().isoformat()
    assert report.errors == (f"certificate expired on {day}",)
    assert not report.ok


def test_check_signer_expiring(pki: CertSet) -> None:
    report = check_signer(signer_of(pki.expiring, pki), now=pki.now)
    day = pki.expiring.certificate.not_valid_after_utc.date().isoformat()
    assert report.errors == ()
    assert len(report.warnings) == 1
    assert day in report.warnings[0] and "10 days" in report.warnings[0]
    assert check_signer(signer_of(pki.expiring, pki), now=pki.now, warn_days=7).warnings == ()


def test_check_signer_not_yet_valid_and_mismatch(pki: CertSet) -> None:
    early = pki.now - timedelta(days=30)
    report = check_signer(Signer(pki.rsa.certificate, pki.ec.key), now=early.replace(tzinfo=None))
    assert "private key does not match the certificate" in report.errors
    assert any(e.startswith("certificate not yet valid") for e in report.errors)


def test_describe_certificate(pki: CertSet) -> None:
    cert = pki.ec.certificate
    info = describe_certificate(cert)
    assert info["subject"] == "CN=flad test signer ECC,O=flad tests,C=BE"
    assert info["issuer"] == "CN=flad test CA,O=flad tests,C=BE"
    assert int(info["serial"], 16) == cert.serial_number
    assert datetime.fromisoformat(info["not_after"]) == cert.not_valid_after_utc
    assert datetime.fromisoformat(info["not_before"]) == cert.not_valid_before_utc
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    assert info["sha256_fingerprint"].replace(":", "").lower() == fingerprint
    assert info["key"] == "EC secp256r1"


# --------------------------------------------------------------------------- openssl


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


@needs_openssl
@pytest.mark.parametrize("line_format", ["single", "cr76"])
def test_openssl_verifies_flad_signature(tmp_path: Path, signer: Signer, line_format: str) -> None:
    fi = tmp_path / "FI.TEST.006400.20260731.00001.T.1.1"
    fi.write_bytes(DATA)
    fs = make_fs(DATA, signer, line_format)
    der = tmp_path / "FS.der"
    der.write_bytes(base64.b64decode(fs.replace(b"\r", b""), validate=True))
    ok = openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", der, "-content", fi,
        "-noverify", "-out", "/dev/null",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    modified = tmp_path / "FI.modified"
    modified.write_bytes(DATA.replace(b"caf", b"cab"))
    bad = openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", der, "-content", modified,
        "-noverify", "-out", "/dev/null",
    )  # fmt: skip
    assert bad.returncode != 0
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", der)
    assert printed.returncode == 0, printed.stderr
    assert "eContent: <ABSENT>" in printed.stdout
    lines = printed.stdout.splitlines()
    # The line after "digestAlgorithms:" (SignedData) and "digestAlgorithm:" (SignerInfo).
    digests = [
        after.strip()
        for line, after in itertools.pairwise(lines)
        if line.strip() in ("digestAlgorithms:", "digestAlgorithm:")
    ]
    assert digests == ["algorithm: sha256 (2.16.840.1.101.3.4.2.1)"] * 2


@needs_openssl
def test_openssl_verifies_with_chain_to_ca(tmp_path: Path, signer: Signer, pki: CertSet) -> None:
    fi = tmp_path / "FI"
    fi.write_bytes(DATA)
    der = tmp_path / "FS.der"
    der.write_bytes(sign_detached(DATA, signer))
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pem_certificates([pki.ca.certificate]))
    ok = openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", der, "-content", fi,
        "-CAfile", ca, "-purpose", "any", "-out", "/dev/null",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr


@needs_openssl
def test_openssl_accepts_cades_t_shape(tmp_path: Path, pki: CertSet, signer: Signer) -> None:
    token = sign_detached(b"token", signer_of(pki.ec, pki))
    (tmp_path / "FS.der").write_bytes(add_unsigned_timestamp(sign_detached(DATA, signer), token))
    (tmp_path / "FI").write_bytes(DATA)
    ok = openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "FS.der",
        "-content", tmp_path / "FI", "-noverify", "-out", "/dev/null",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr


@pytest.fixture
def openssl_files(tmp_path: Path, pki: CertSet) -> dict[str, Path]:
    (tmp_path / "FI").write_bytes(DATA)
    rsa = write_signer(tmp_path, pki.rsa, stem="rsa")
    ecc = write_signer(tmp_path, pki.ec, stem="ecc")
    return {
        "FI": tmp_path / "FI",
        "rsa_cert": rsa.cert_path,
        "rsa_key": rsa.key_path,
        "ec_cert": ecc.cert_path,
        "ec_key": ecc.key_path,
        "out": tmp_path / "FS.der",
    }


OPENSSL_VARIANTS = {
    "rsa": ("rsa", []),
    "ec": ("ec", []),
    "nosmimecap": ("rsa", ["-nosmimecap"]),
    "noattr": ("rsa", ["-noattr"]),
    "noattr-ec": ("ec", ["-noattr"]),
    "keyid": ("rsa", ["-keyid"]),
    "cades": ("rsa", ["-cades"]),
    "pss": ("rsa", ["-keyopt", "rsa_padding_mode:pss"]),
    "sha512": ("ec", ["-md", "sha512"]),
}


@needs_openssl
@pytest.mark.parametrize("variant", sorted(OPENSSL_VARIANTS))
def test_flad_verifies_openssl_signature(
    openssl_files: dict[str, Path], pki: CertSet, variant: str
) -> None:
    kind, extra = OPENSSL_VARIANTS[variant]
    issued = pki.rsa if kind == "rsa" else pki.ec
    made = openssl(
        "cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER",
        "-signer", openssl_files[f"{kind}_cert"], "-inkey", openssl_files[f"{kind}_key"],
        "-in", openssl_files["FI"], "-out", openssl_files["out"], *extra,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    der = openssl_files["out"].read_bytes()
    result = verify_fs(
        DATA, encode_fs(der, "cr76"), certificate=issued.certificate, trusted=[pki.ca.certificate]
    )
    assert result.signer == issued.certificate
    assert result.digest_algorithm == ("sha512" if variant == "sha512" else "sha256")
    with pytest.raises(SignatureInvalid):
        verify_fs(DATA + b"\n", fs_of(der))


@needs_openssl
def test_cades_signing_certificate_binds_the_certificate(
    openssl_files: dict[str, Path], pki: CertSet
) -> None:
    """CAdES names the signer certificate by hash: a re-issued twin (same key, so same
    key identifier) swapped into the signature must not pass as the signer."""
    made = openssl(
        "cms", "-sign", "-binary", "-cades", "-keyid", "-md", "sha256", "-outform", "DER",
        "-signer", openssl_files["rsa_cert"], "-inkey", openssl_files["rsa_key"],
        "-in", openssl_files["FI"], "-out", openssl_files["out"],
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    der = openssl_files["out"].read_bytes()
    attrs = {a["type"].native for a in signer_info(der)["signed_attrs"]}
    assert "signing_certificate_v2" in attrs
    assert signer_info(der)["sid"].name == "subject_key_identifier"
    assert verify_fs(DATA, fs_of(der)).signer == pki.rsa.certificate
    twin = issue_cert(pki.ca, "flad test signer RSA twin", key=pki.rsa.key)
    info = cms.ContentInfo.load(der)
    info["content"]["certificates"] = cms.CertificateSet(
        [cms.CertificateChoices.load(twin.certificate.public_bytes(serialization.Encoding.DER))]
    )
    swapped: bytes = info.dump(force=True)
    with pytest.raises(SignatureInvalid, match="signing-certificate attribute"):
        verify_fs(DATA, fs_of(swapped))


@needs_openssl
def test_openssl_embedded_content_is_refused(openssl_files: dict[str, Path]) -> None:
    made = openssl(
        "cms", "-sign", "-binary", "-nodetach", "-md", "sha256", "-outform", "DER",
        "-signer", openssl_files["rsa_cert"], "-inkey", openssl_files["rsa_key"],
        "-in", openssl_files["FI"], "-out", openssl_files["out"],
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    with pytest.raises(SignatureInvalid, match="content embedded"):
        verify_fs(DATA, fs_of(openssl_files["out"].read_bytes()))


@needs_openssl
def test_openssl_sha1_signature_is_refused(openssl_files: dict[str, Path]) -> None:
    made = openssl(
        "cms", "-sign", "-binary", "-md", "sha1", "-outform", "DER",
        "-signer", openssl_files["rsa_cert"], "-inkey", openssl_files["rsa_key"],
        "-in", openssl_files["FI"], "-out", openssl_files["out"],
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"this openssl refuses to make SHA-1 signatures: {made.stderr.strip()}")
    with pytest.raises(SignatureInvalid, match="sha1 is deprecated"):
        verify_fs(DATA, fs_of(openssl_files["out"].read_bytes()))
