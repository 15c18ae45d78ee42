"""The sandbox (flad.sandbox) over the wire: a plain paramiko SFTP client, real keys, real
certificates (tests/certs.py), real folders. Nothing of flad's shell is involved: the
sandbox must work for any client that speaks the protocol."""

from __future__ import annotations

import datetime
import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from lxml import etree

from flad import signing
from flad.sandbox import Sandbox, SandboxError, start_sandbox
from flad.sandbox.transfer_point import (
    ERR_BAD_NAME,
    ERR_BAD_SIGNATURE,
    ERR_DUPLICATE,
    ERR_MISSING_FS,
    ERR_MISSING_PART,
    ERR_NOT_WELL_FORMED,
    ERR_WRONG_SENDER,
    ERR_XSD_INVALID,
)
from tests.certs import SignerFiles, write_test_signer

DATA = Path(__file__).resolve().parent.parent / "flad" / "data"
XSD = DATA / "standin-fla.xsd"
SENDER = "006400"
TODAY = datetime.date.today().strftime("%Y%m%d")
TIMEOUT = 10.0

NS = "urn:flad:standin:fla:1"
FLA_WITH_ANOMALIES = f"""<?xml version="1.0" encoding="UTF-8"?>
<FLADeclaration xmlns="{NS}">
  <SenderId>0123456749</SenderId>
  <EmployerId>0123456749</EmployerId>
  <Training><WorkerINSS>85073003328</WorkerINSS><TrainingDate>2026-03-16</TrainingDate>
    <Hours>7.5</Hours></Training>
  <Training><WorkerINSS>90042512375</WorkerINSS><TrainingDate>2026-03-17</TrainingDate>
    <Hours>3.25</Hours><Anomaly>B:FLA-00012:Hours</Anomaly></Training>
  <Training><WorkerINSS>90042512375</WorkerINSS><TrainingDate>2026-03-18</TrainingDate>
    <Hours>1</Hours><Anomaly>W:FLA-00100</Anomaly></Training>
</FLADeclaration>
""".encode()
SAMPLE = (DATA / "sample-fla.xml").read_bytes()


# -- keys and certificates ---------------------------------------------------------------


@dataclass(frozen=True)
class ClientKey:
    key: paramiko.PKey
    public_line: str


def _client_key(kind: str = "ed25519") -> ClientKey:
    key: paramiko.PKey
    if kind == "ed25519":
        text = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        key = paramiko.Ed25519Key.from_private_key(io.StringIO(text.decode()))
    elif kind == "ecdsa":
        private = ec.generate_private_key(ec.SECP256R1())
        key = paramiko.ECDSAKey(vals=(private, private.public_key()))
    else:
        key = _LegacyRSAClientKey(key=rsa.generate_private_key(65537, 2048))
    return ClientKey(key, f"{key.get_name()} {key.get_base64()} test@flad")


class _LegacyRSAClientKey(paramiko.RSAKey):
    """Signs with SHA-1 "ssh-rsa" when asked (paramiko 4+ no longer can); records what it used."""

    used: list[str]

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        self.__dict__.setdefault("used", []).append(algorithm or "")
        if algorithm != "ssh-rsa":
            return super().sign_ssh_data(data, algorithm)
        private = self.key
        assert isinstance(private, rsa.RSAPrivateKey)
        msg = paramiko.Message()
        msg.add_string("ssh-rsa")
        msg.add_string(private.sign(data, padding.PKCS1v15(), hashes.SHA1()))
        return msg


class _LegacyClientTransport(paramiko.Transport):
    """A client that prefers the legacy "ssh-rsa" algorithm, as flad does for the platform."""

    @property
    def preferred_pubkeys(self) -> tuple[str, ...]:
        return ("ssh-rsa", *super().preferred_pubkeys)


@pytest.fixture(scope="module")
def client() -> ClientKey:
    return _client_key("ed25519")


@pytest.fixture(scope="module")
def signer_files(tmp_path_factory: pytest.TempPathFactory) -> SignerFiles:
    return write_test_signer(tmp_path_factory.mktemp("client-signer"))


@pytest.fixture(scope="module")
def signer(signer_files: SignerFiles) -> signing.Signer:
    return signing.load_signer_pem(signer_files.cert_path, signer_files.key_path)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> signing.Signer:
    files = write_test_signer(tmp_path_factory.mktemp("stranger"), kind="ec")
    return signing.load_signer_pem(files.cert_path, files.key_path)


# -- sandbox and client ------------------------------------------------------------------


def _sandbox_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.is_alive()
        and (
            t.name.startswith("sandbox-")
            or isinstance(t, paramiko.SFTPServer)
            or (isinstance(t, paramiko.Transport) and t.server_mode)
        )
    ]


@pytest.fixture
def make_sandbox(
    tmp_path: Path, client: ClientKey, signer_files: SignerFiles
) -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes with test timing (fast polling); all are stopped and checked after."""
    started: list[Sandbox] = []

    def make(root: Path | None = None, **options: Any) -> Sandbox:
        pub = tmp_path / "authorized.pub"
        pub.write_text(client.public_line + "\n")
        settings: dict[str, Any] = {
            "authorized_keys": pub,
            "client_cert": signer_files.cert_path,
            "notify_delay": 0.2,
            "poll_interval": 0.05,
            "settle_seconds": 0.1,
        }
        settings.update(options)
        sandbox = start_sandbox(root or tmp_path / "root", **settings)
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()
    assert _sandbox_threads() == []


@contextmanager
def sftp_session(
    sandbox: Sandbox,
    key: paramiko.PKey,
    username: str = "flad",
    transport_class: type[paramiko.Transport] = paramiko.Transport,
) -> Iterator[paramiko.SFTPClient]:
    transport = transport_class((sandbox.host, sandbox.port))
    try:
        transport.start_client(timeout=TIMEOUT)
        assert transport.get_remote_server_key().fingerprint == sandbox.host_key_fingerprint
        transport.auth_publickey(username, key)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        with sftp:
            yield sftp
    finally:
        transport.close()


def names(
    seq: str,
    *,
    env: str = "T",
    sender: str = SENDER,
    appl: str = "FLA1",
    parts: int = 1,
) -> tuple[list[str], list[str], str]:
    """FI names, FS names and GO name of one submission."""
    key = f"{appl}.{sender}.{TODAY}.{seq}.{env}"
    fi = [f"FI.{key}.{parts}.{i}" for i in range(1, parts + 1)]
    return fi, [f"FS.{n[3:]}" for n in fi], f"GO.{key}.{parts}"


def put(sftp: paramiko.SFTPClient, path: str, data: bytes) -> None:
    with sftp.open(path, "wb") as handle:
        handle.write(data)


def send(
    sftp: paramiko.SFTPClient,
    folder: str,
    files: Sequence[tuple[str, bytes]],
    go: str,
) -> None:
    """Data files first, then the GO: the order the platform expects."""
    for name, data in files:
        put(sftp, f"/{folder}/{name}", data)
    put(sftp, f"/{folder}/{go}", b"")


@dataclass(frozen=True)
class Reply:
    fo: Path
    fs: Path
    go: Path
    tree: etree._Element

    def text(self, path: str) -> str:
        found = self.tree.find(path)
        assert found is not None, path
        return found.text or ""


def wait_replies(folder: Path, appl: str, count: int = 1, timeout: float = TIMEOUT) -> list[Reply]:
    """The complete reply sets (GO present) of ``appl`` in ``folder``, oldest first."""
    deadline = time.monotonic() + timeout
    while True:
        gos = sorted(folder.glob(f"GO.{appl}.*"))
        if len(gos) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(gos) >= count, f"{count} {appl} expected in {folder}, found {len(gos)}"
    replies = []
    for go in gos:
        fo = go.with_name("FO" + go.name[2:])
        fs = go.with_name("FS" + go.name[2:])
        replies.append(Reply(fo, fs, go, etree.fromstring(fo.read_bytes())))
    return replies


# -- SFTP server ---------------------------------------------------------------------------


def test_file_operations_a_client_needs(
    make_sandbox: Callable[..., Sandbox], client: ClientKey
) -> None:
    sandbox = make_sandbox()
    with sftp_session(sandbox, client.key) as sftp:
        assert sftp.normalize(".") == "/"
        assert {"IN", "OUT", "INTEST", "OUTTEST"} <= set(sftp.listdir("/"))
        sftp.put(str(DATA / "sample-fla.xml"), "/INTEST/upload.tmp")  # put() stats after
        assert sftp.stat("/INTEST/upload.tmp").st_size == len(SAMPLE)
        sftp.rename("/INTEST/upload.tmp", "/INTEST/upload.xml")
        with sftp.open("/INTEST/upload.xml", "rb") as handle:
            assert handle.stat().st_size == len(SAMPLE)
            assert handle.read() == SAMPLE
        attrs = {a.filename: a for a in sftp.listdir_attr("/INTEST")}
        assert attrs["upload.xml"].st_size == len(SAMPLE)
        put(sftp, "/INTEST/other", b"x")
        with pytest.raises(OSError):
            sftp.rename("/INTEST/other", "/INTEST/upload.xml")  # SFTP rename never replaces
        sftp.posix_rename("/INTEST/other", "/INTEST/upload.xml")
        assert sftp.lstat("/INTEST/upload.xml").st_size == 1
        sftp.mkdir("/INTEST/sub")
        sftp.rmdir("/INTEST/sub")
        sftp.remove("/INTEST/upload.xml")
        assert sftp.listdir("/INTEST") == []
        with pytest.raises(FileNotFoundError):
            sftp.stat("/INTEST/upload.xml")
        with pytest.raises(PermissionError):
            sftp.rmdir("/IN")  # the platform's folders stay


def test_paths_are_confined_to_the_root(
    make_sandbox: Callable[..., Sandbox], client: ClientKey, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    sandbox = make_sandbox(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    os.symlink(outside, root / "escape")
    os.symlink(outside / "secret", root / "INTEST" / "link")
    with sftp_session(sandbox, client.key) as sftp:
        listing = sftp.listdir("/")
        assert sftp.listdir("/..") == listing
        assert sftp.listdir("../../..") == listing
        assert ".sandbox" not in listing
        with sftp.open("../x", "w") as handle:  # confined: lands in the root
            handle.write(b"confined")
        assert (root / "x").read_bytes() == b"confined"
        assert not (tmp_path / "x").exists()
        sftp.rename("/x", "/../../y")
        assert (root / "y").exists() and not (tmp_path / "y").exists()
        with pytest.raises(FileNotFoundError):
            sftp.stat("/etc/passwd")
        with pytest.raises(FileNotFoundError):
            sftp.open("/../../../../etc/passwd")
        for escape in ("/escape", "/escape/secret", "/INTEST/link"):
            with pytest.raises(PermissionError):
                sftp.stat(escape)
        with pytest.raises(PermissionError):
            sftp.listdir("/escape")
        with pytest.raises(PermissionError):
            sftp.open("/INTEST/link", "w")
        assert sftp.lstat("/escape").st_mode is not None  # the link itself may be seen
        for private in ("/.sandbox", "/.sandbox/ssh_host_ed25519_key", "/x/../.sandbox/state.json"):
            with pytest.raises(PermissionError):
                sftp.stat(private)
        with pytest.raises(PermissionError):
            sftp.listdir("/.sandbox")
        with pytest.raises(PermissionError):
            sftp.open("/.sandbox/reply-key.pem")
    assert (outside / "secret").read_text() == "secret"


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa", "rsa-legacy"])
def test_key_types_log_in(make_sandbox: Callable[..., Sandbox], tmp_path: Path, kind: str) -> None:
    user = _client_key(kind.removesuffix("-legacy"))
    (tmp_path / "keys.pub").write_text(f"# the client\n\n{user.public_line}\n")
    sandbox = make_sandbox(authorized_keys=tmp_path / "keys.pub", username="EXP_TEST")
    transport = _LegacyClientTransport if kind == "rsa-legacy" else paramiko.Transport
    with sftp_session(sandbox, user.key, "EXP_TEST", transport) as sftp:
        assert "IN" in sftp.listdir("/")
    if kind.startswith("rsa"):
        used = user.key.__dict__["used"]
        assert used == (["ssh-rsa"] if kind == "rsa-legacy" else ["rsa-sha2-512"])


def test_wrong_key_or_user_is_refused(
    make_sandbox: Callable[..., Sandbox], client: ClientKey
) -> None:
    sandbox = make_sandbox(username="EXP_TEST")
    with (
        pytest.raises(paramiko.AuthenticationException),
        sftp_session(sandbox, _client_key().key, "EXP_TEST"),
    ):
        pass
    with (
        pytest.raises(paramiko.AuthenticationException),
        sftp_session(sandbox, client.key, "someone-else"),
    ):
        pass
    with sftp_session(sandbox, client.key, "EXP_TEST") as sftp:
        assert sftp.listdir("/IN") == []


def test_host_key_and_reply_certificate_survive_a_restart(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    first = make_sandbox()
    fingerprint, cert = first.host_key_fingerprint, first.cert_path.read_bytes()
    first.stop()
    second = make_sandbox()
    assert second.host_key_fingerprint == fingerprint
    assert second.cert_path == tmp_path / "root" / "sandbox-cert.pem"
    assert second.cert_path.read_bytes() == cert
    assert fingerprint.startswith("SHA256:") and fingerprint in second.ready_line
    assert f"]:{second.port} ssh-ed25519 " in second.known_hosts_path.read_text()


def test_unusable_settings_are_one_clear_error(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    (tmp_path / "bad.pub").write_text("ssh-ed25519 not-base64!\n")
    with pytest.raises(SandboxError, match="line 1"):
        make_sandbox(authorized_keys=tmp_path / "bad.pub")
    with pytest.raises(SandboxError, match="sender"):
        make_sandbox(sender_id="12345678")


# -- transfer point ------------------------------------------------------------------------


def test_positive_receipt_then_notification_with_anomalies(
    make_sandbox: Callable[..., Sandbox], client: ClientKey, signer: signing.Signer
) -> None:
    sandbox = make_sandbox(sender_id=6400, xsd=XSD)
    root = sandbox.root
    fi, fs, go = names("00001", env="R")
    with sftp_session(sandbox, client.key) as sftp:
        send(sftp, "IN", [(fi[0], FLA_WITH_ANOMALIES),
                          (fs[0], signing.make_fs(FLA_WITH_ANOMALIES, signer, "cr76"))], go)
        (acrf,) = wait_replies(root / "OUT", "ACRF")
        assert acrf.text("Form/ReceptionResult/ResultCode") == "1"
        assert acrf.tree.find("Form/ReceptionResult/ErrorID") is None
        assert acrf.text("Form/FileReference/FileName") == go
        assert acrf.text("Form/Identification") == "ACRF001"
        assert acrf.text("Form/TypeForm") == "FA"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", acrf.text("Form/FormCreationDate"))
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", acrf.text("Form/FormCreationHour"))
        reference = acrf.text("Form/FileReference/ReferenceNbr")
        assert re.fullmatch(r"[0-9A-Z]{13}", reference)
        assert acrf.fo.name == f"FO.ACRF.999999.{TODAY}.00001.R"
        trust = signing.load_certificates(sandbox.cert_path)
        signing.verify_fs(acrf.fo.read_bytes(), acrf.fs.read_bytes(), trusted=trust)
        deadline = time.monotonic() + TIMEOUT  # they leave just after the receipt is out
        while sftp.listdir("/IN") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sftp.listdir("/IN") == []  # processed files leave IN

        (noti,) = wait_replies(root / "OUT", "NOTI")
        assert noti.fo.name == f"FO.NOTI.999999.{TODAY}.00002.R"
        signing.verify_fs(noti.fo.read_bytes(), noti.fs.read_bytes(), trusted=trust)
        assert noti.tree.tag == "NOTIFICATION"
        forms = noti.tree.findall("Form")  # one form per declaration
        assert [f.findtext("Identification") for f in forms] == ["NOTI001"] * 3
        assert [f.findtext("TypeForm") for f in forms] == ["FA"] * 3
        assert {f.findtext("FileReference/FileName") for f in forms} == {go}
        assert {f.findtext("FileReference/ReferenceNbr") for f in forms} == {reference}
        assert {f.findtext("FileReference/ReferenceOrigin") for f in forms} == {"2"}
        assert all(f.find("HandledReference/ReferenceNbr") is not None for f in forms)
        assert [f.findtext("HandlingResult/ResultCode") for f in forms] == ["1", "0", "1"]
        assert forms[0].find("HandlingResult/AnomalyReport") is None
        reports = [
            [(r.findtext("ErrorID"), r.findtext("AnomalyClass"), r.findtext("TagName"),
              r.findtext("Value"), r.findtext("Path/INSS"),
              r.findtext("AnomalyLocation/Location"), bool(r.findtext("AnomalyLabel")))
             for r in f.findall("HandlingResult/AnomalyReport")]
            for f in forms[1:]
        ]
        assert reports == [
            [("FLA-00012", "B", "Hours", "3.25", "90042512375",
              "/FLADeclaration/Training[2]/Hours", True)],
            [("FLA-00100", "W", None, None, "90042512375", "/FLADeclaration/Training[3]",
              True)],
        ]
    processed = list((root / ".sandbox" / "processed").rglob("*.R*"))
    assert sorted(p.name for p in processed) == sorted([fi[0], fs[0], go])


def test_go_is_published_after_its_data(
    make_sandbox: Callable[..., Sandbox], client: ClientKey
) -> None:
    sandbox = make_sandbox()
    with sftp_session(sandbox, client.key) as sftp:
        for seq in ("00001", "00002"):
            fi, _, go = names(seq)
            send(sftp, "INTEST", [(fi[0], b"<Other/>")], go)
        wait_replies(sandbox.root / "OUTTEST", "NOTI", count=2)
    # the last GO is on disk a moment before the sandbox records it as published
    deadline = time.monotonic() + TIMEOUT
    while len(sandbox.published) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    published = sandbox.published
    assert len(published) == 12  # 2 x (ACRF + NOTI) x (FO, FS, GO)
    for index, path in enumerate(published):
        if path.name.startswith("GO."):
            stem = path.name[2:]
            before = {p.name for p in published[:index]}
            assert {"FO" + stem, "FS" + stem} <= before
            mtime = path.stat().st_mtime_ns
            assert path.with_name("FO" + stem).stat().st_mtime_ns <= mtime
            assert path.with_name("FS" + stem).stat().st_mtime_ns <= mtime
    (noti, _) = wait_replies(sandbox.root / "OUTTEST", "NOTI", count=2)
    # A file that is not the stand-in layout: one declaration, no anomaly.
    forms = noti.tree.findall("Form")
    assert [f.findtext("HandlingResult/ResultCode") for f in forms] == ["1"]
    assert noti.tree.find("Form/HandlingResult/AnomalyReport") is None


def _case_files(
    case: str, signer: signing.Signer, stranger: signing.Signer, tmp_root: Path
) -> tuple[str, list[tuple[str, bytes]], str]:
    """(folder, files, GO name) of a submission that fails in the way ``case`` says."""
    fi, _, go = names("00003", env="T")
    rfi, rfs, rgo = names("00003", env="R")
    if case == "bad GO name":
        return "INTEST", [(fi[0], SAMPLE)], go.replace("FLA1", "fla1")
    if case == "bad part name":
        return "INTEST", [(fi[0] + "0", SAMPLE)], go
    if case == "environment of the other folder":
        return "INTEST", [(rfi[0], SAMPLE)], rgo
    if case == "S set in INTEST":
        sfi, _, sgo = names("00003", env="S")
        return "INTEST", [(sfi[0], SAMPLE)], sgo
    if case == "T set in INTEST-S":
        return "INTEST-S", [(fi[0], SAMPLE)], go
    if case == "sequence zero":
        zfi, _, zgo = names("00000")
        return "INTEST", [(zfi[0], SAMPLE)], zgo
    if case == "sequence of 4 characters":
        return "INTEST", [(fi[0], SAMPLE)], go.replace(".00003.", ".0003.")
    if case == "sequence with a lowercase letter":
        return "INTEST", [(fi[0], SAMPLE)], go.replace(".00003.", ".0000a.")
    if case == "ten parts":
        tfi, _, tgo = names("00003", parts=10)
        return "INTEST", [(n, SAMPLE) for n in tfi], tgo
    if case == "zero parts":
        return "INTEST", [(fi[0], SAMPLE)], go[:-1] + "0"
    if case == "date later than today":
        tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).strftime("%Y%m%d")
        return "INTEST", [(fi[0].replace(TODAY, tomorrow), SAMPLE)], go.replace(TODAY, tomorrow)
    if case == "date of 7 digits":
        return "INTEST", [(fi[0], SAMPLE)], go.replace(TODAY, TODAY[:7])
    if case == "no such date":
        return "INTEST", [(fi[0], SAMPLE)], go.replace(TODAY, TODAY[:4] + "0231")
    if case == "environment X":
        return "INTEST", [(fi[0], SAMPLE)], go.replace(".T.1", ".X.1")
    if case == "missing part":
        fi2, _, go2 = names("00003", parts=2)
        return "INTEST", [(fi2[0], SAMPLE)], go2
    if case == "symlinked part":
        os.symlink(DATA / "sample-fla.xml", tmp_root / "INTEST" / fi[0])
        return "INTEST", [], go
    if case == "wrong sender":
        wfi, _, wgo = names("00003", sender="001234")
        return "INTEST", [(wfi[0], SAMPLE)], wgo
    if case == "missing FS in production":
        return "IN", [(rfi[0], SAMPLE)], rgo
    if case == "bad signature":
        return "IN", [(rfi[0], SAMPLE), (rfs[0], signing.make_fs(SAMPLE, stranger))], rgo
    if case == "signature of other data":
        return "IN", [(rfi[0], SAMPLE), (rfs[0], signing.make_fs(SAMPLE + b" ", signer))], rgo
    if case == "XSD invalid":
        return "INTEST", [(fi[0], SAMPLE.replace(b"<Hours>7.5", b"<Hours>many"))], go
    if case == "not well-formed":
        return "INTEST", [(fi[0], b"<FLADeclaration><Training>")], go
    raise AssertionError(case)


# cases whose GO name itself breaks a rule of the error list
GO_NAME_CASES = frozenset({
    "sequence zero", "sequence of 4 characters", "sequence with a lowercase letter",
    "ten parts", "zero parts", "date later than today", "date of 7 digits", "no such date",
    "environment X"})


@pytest.mark.parametrize(
    ("case", "error_id"),
    [
        ("bad GO name", ERR_BAD_NAME),
        ("bad part name", ERR_BAD_NAME),
        ("environment of the other folder", "ACRF-118"),
        ("S set in INTEST", "ACRF-257"),
        ("T set in INTEST-S", "ACRF-119"),
        ("sequence zero", "ACRF-127"),
        ("sequence of 4 characters", "ACRF-112"),
        ("sequence with a lowercase letter", "ACRF-367"),
        ("ten parts", "ACRF-114"),
        ("zero parts", "ACRF-116"),
        ("date later than today", "ACRF-111"),
        ("date of 7 digits", "ACRF-109"),
        ("no such date", "ACRF-110"),
        ("environment X", "ACRF-117"),
        ("missing part", ERR_MISSING_PART),
        ("symlinked part", ERR_MISSING_PART),
        ("wrong sender", ERR_WRONG_SENDER),
        ("missing FS in production", ERR_MISSING_FS),
        ("bad signature", ERR_BAD_SIGNATURE),
        ("signature of other data", ERR_BAD_SIGNATURE),
        ("XSD invalid", ERR_XSD_INVALID),
        ("not well-formed", ERR_NOT_WELL_FORMED),
    ],
)
def test_negative_receipts(
    make_sandbox: Callable[..., Sandbox],
    client: ClientKey,
    signer: signing.Signer,
    stranger: signing.Signer,
    case: str,
    error_id: str,
) -> None:
    sandbox = make_sandbox(sender_id=SENDER, xsd=XSD, notify_delay=0.0)
    folder, files, go = _case_files(case, signer, stranger, sandbox.root)
    out = sandbox.root / {"IN": "OUT", "INTEST": "OUTTEST", "INTEST-S": "OUTTEST-S"}[folder]
    with sftp_session(sandbox, client.key) as sftp:
        send(sftp, folder, files, go)
        (acrf,) = wait_replies(out, "ACRF")
        assert acrf.text("Form/ReceptionResult/ResultCode") == "0"
        assert acrf.text("Form/ReceptionResult/ErrorID") == error_id
        # the schema has no place for a text: the code alone, as the platform sends it
        assert acrf.tree.find("Form/ReceptionResult/ErrorDescription") is None
        assert len(acrf.tree.findall("Form/ReceptionResult/ErrorID")) == 1
        assert acrf.text("Form/FileReference/FileName") == go
        time.sleep(0.2)  # a NOTI would be there by now (notify_delay 0)
        assert list(out.glob("*.NOTI.*")) == []
        left = sftp.listdir(f"/{folder}")
        # A GO the grammar refuses names no set: the data that came with it stays.
        refused_go = case == "bad GO name" or case in GO_NAME_CASES
        assert sorted(left) == (sorted(name for name, _ in files) if refused_go else [])


def test_an_xsd_per_application_code(
    make_sandbox: Callable[..., Sandbox], client: ClientKey
) -> None:
    # --xsd DMFA=...: the DMFA sets are checked against it, other codes are not
    sandbox = make_sandbox(xsds={"DMFA": XSD}, notify_delay=0.0)
    broken = SAMPLE.replace(b"<Hours>7.5", b"<Hours>many")
    fi, _, go = names("00001")
    dfi, _, dgo = names("00002", appl="DMFA")
    with sftp_session(sandbox, client.key) as sftp:
        send(sftp, "INTEST", [(fi[0], broken)], go)
        send(sftp, "INTEST", [(dfi[0], broken)], dgo)
        by_go = {r.text("Form/FileReference/FileName"): r
                 for r in wait_replies(sandbox.root / "OUTTEST", "ACRF", count=2)}
    assert by_go[go].text("Form/ReceptionResult/ResultCode") == "1"
    assert by_go[dgo].text("Form/ReceptionResult/ResultCode") == "0"
    assert by_go[dgo].text("Form/ReceptionResult/ErrorID") == ERR_XSD_INVALID == "ACRF-312"


def test_parts_are_joined_in_order(
    make_sandbox: Callable[..., Sandbox], client: ClientKey, signer: signing.Signer
) -> None:
    sandbox = make_sandbox(xsd=XSD)
    fi, fs, go = names("00006", env="R", parts=2)
    halves = (SAMPLE[:100], SAMPLE[100:])
    files = [(fi[i], halves[i]) for i in range(2)]
    files += [(fs[i], signing.make_fs(halves[i], signer)) for i in range(2)]
    with sftp_session(sandbox, client.key) as sftp:
        send(sftp, "IN", files, go)
        (acrf,) = wait_replies(sandbox.root / "OUT", "ACRF")
        assert acrf.text("Form/ReceptionResult/ResultCode") == "1"
        assert acrf.text("Form/FileReference/FileName") == go
        (noti,) = wait_replies(sandbox.root / "OUT", "NOTI")
        assert noti.text("Form/FileReference/FileName") == go
        assert len(noti.tree.findall("Form")) == 2  # the sample's two Trainings


def test_pending_notification_survives_a_restart(
    make_sandbox: Callable[..., Sandbox], client: ClientKey
) -> None:
    sandbox = make_sandbox(notify_delay=0.6)
    fi, _, go = names("00007")
    with sftp_session(sandbox, client.key) as sftp:
        send(sftp, "INTEST", [(fi[0], SAMPLE)], go)
        wait_replies(sandbox.root / "OUTTEST", "ACRF")
    sandbox.stop()
    assert list((sandbox.root / "OUTTEST").glob("*.NOTI.*")) == []
    again = make_sandbox(notify_delay=0.6)
    (noti,) = wait_replies(again.root / "OUTTEST", "NOTI")
    assert noti.text("Form/FileReference/FileName") == go
    assert noti.fo.name == f"FO.NOTI.999999.{TODAY}.00002.T"  # the counter survived too


def test_sequence_used_twice_is_refused(
    make_sandbox: Callable[..., Sandbox], client: ClientKey
) -> None:
    sandbox = make_sandbox()
    fi, _, go = names("00004")
    with sftp_session(sandbox, client.key) as sftp:
        send(sftp, "INTEST", [(fi[0], SAMPLE)], go)
        wait_replies(sandbox.root / "OUTTEST", "ACRF")
        send(sftp, "INTEST", [(fi[0], SAMPLE)], go)
        first, second = wait_replies(sandbox.root / "OUTTEST", "ACRF", count=2)
    assert first.text("Form/ReceptionResult/ResultCode") == "1"
    assert second.text("Form/ReceptionResult/ErrorID") == ERR_DUPLICATE


def test_td_cancels_without_receipt(
    make_sandbox: Callable[..., Sandbox], client: ClientKey
) -> None:
    sandbox = make_sandbox()
    fi, _, go = names("00005")
    with sftp_session(sandbox, client.key) as sftp:
        put(sftp, f"/INTEST/{fi[0]}", SAMPLE)
        put(sftp, "/INTEST/TD" + go[2:], b"")
        deadline = time.monotonic() + TIMEOUT
        while sftp.listdir("/INTEST") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sftp.listdir("/INTEST") == []
        time.sleep(0.2)
        assert sftp.listdir("/OUTTEST") == []


# -- the command ---------------------------------------------------------------------------


def test_subcommand_registers_on_flads_parser(tmp_path: Path) -> None:
    import argparse

    import flad.sandbox

    parser = argparse.ArgumentParser(prog="flad")
    flad.sandbox.command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["sandbox", "--root", str(tmp_path), "--authorized-key", "k.pub", "--client-cert", "c.pem"]
    )
    assert args.func is flad.sandbox.command.cmd_sandbox
    assert (args.host, args.port, args.notify_delay) == ("127.0.0.1", 8022, 5.0)
    assert (args.xsd, args.sender_id, args.username, args.ready_file) == (None, None, None, None)


def test_command_runs_until_sigterm(
    tmp_path: Path, client: ClientKey, signer_files: SignerFiles
) -> None:
    pub = tmp_path / "client.pub"
    pub.write_text(client.public_line + "\n")
    ready_file = tmp_path / "ready"
    process = subprocess.Popen(
        [sys.executable, "-m", "flad.sandbox.command", "--root", str(tmp_path / "root"),
         "--port", "0", "--authorized-key", str(pub), "--client-cert", str(signer_files.cert_path),
         "--ready-file", str(ready_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        output: queue.Queue[str] = queue.Queue()

        def read_lines() -> None:
            for line in process.stdout or ():
                output.put(line)

        reader = threading.Thread(target=read_lines, daemon=True)
        reader.start()
        lines: list[str] = []
        while not (lines and lines[-1].startswith("sandbox listening on ")):
            try:
                lines.append(output.get(timeout=20).rstrip("\n"))
            except queue.Empty:
                pytest.fail(f"no ready line: {lines} (exit code {process.poll()})")
        ready_line = r"sandbox listening on 127\.0\.0\.1:(\d+), host key (SHA256:\S+)"
        match = re.fullmatch(ready_line, lines[-1])
        assert match is not None
        assert any(line.startswith("host key: 256 SHA256:") for line in lines)
        assert ready_file.read_text().strip() == lines[-1]
        port, fingerprint = int(match[1]), match[2]
        transport = paramiko.Transport(("127.0.0.1", port))
        try:
            transport.connect(username="flad", pkey=client.key)
            assert transport.get_remote_server_key().fingerprint == fingerprint
            sftp = paramiko.SFTPClient.from_transport(transport)
            assert sftp is not None
            assert "INTEST" in sftp.listdir("/")
            process.send_signal(signal.SIGTERM)  # with a session still open
            assert process.wait(timeout=15) == 0
        finally:
            transport.close()
        reader.join(5)
        assert lines[-1] != "sandbox stopped"
        assert output.get(timeout=1).strip() == "sandbox stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not ready_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)


# -- the official layouts ------------------------------------------------------------------

PLATFORM_XSD = Path(__file__).resolve().parent.parent.parent / "shared" / "platform" / "xsd"
DIMONA_FORMS = b"""<?xml version="1.0" encoding="UTF-8"?>
<?flad-sandbox fileref="no" result="2"?>
<Dimona>
  <Form><Identification>DIMONA</Identification><FormCreationDate>2026-11-27</FormCreationDate>
    <FormCreationHour>09:00:00.001</FormCreationHour><AttestationStatus>0</AttestationStatus>
    <TypeForm>SU</TypeForm><Reference><ReferenceType>1</ReferenceType>
    <ReferenceOrigin>1</ReferenceOrigin><ReferenceNbr>OWN-1</ReferenceNbr></Reference></Form>
  <Form><Identification>DIMONA</Identification><FormCreationDate>2026-11-27</FormCreationDate>
    <FormCreationHour>09:00:00.002</FormCreationHour><AttestationStatus>0</AttestationStatus>
    <TypeForm>SU</TypeForm></Form>
</Dimona>
"""


def _with_pi(data: bytes, pi: str) -> bytes:
    return data.replace(b"?>\n", f"?>\n<?flad-sandbox {pi}?>\n".encode(), 1)


def _schema(name: str) -> etree.XMLSchema:
    path = PLATFORM_XSD / name
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    return etree.XMLSchema(etree.parse(str(path)))


def test_replies_follow_the_official_schemas(
    make_sandbox: Callable[..., Sandbox], client: ClientKey
) -> None:
    """Everything the sandbox writes validates against ../shared/platform/xsd, except the
    results 3 and 4 that the glossary defines and NOTIFICATION_20223.xsd does not allow."""
    receipts = [_schema("ACRF_20231.xsd"), _schema("ACRF_20223.xsd")]
    notifications = _schema("NOTIFICATION_20223.xsd")
    sandbox = make_sandbox(notify_delay=0.0)
    files = [
        FLA_WITH_ANOMALIES,
        _with_pi(SAMPLE, 'provisional="yes" receipt="PA"'),
        DIMONA_FORMS,
        _with_pi(SAMPLE, 'result="4"'),
        b"<FLADeclaration><Training>",  # a negative receipt
        b"<Other/>",
    ]
    with sftp_session(sandbox, client.key) as sftp:
        for seq, data in enumerate(files, start=1):
            fi, _, go = names(f"{seq:05d}")
            send(sftp, "INTEST", [(fi[0], data)], go)
        acrfs = wait_replies(sandbox.root / "OUTTEST", "ACRF", count=len(files))
        notis = wait_replies(sandbox.root / "OUTTEST", "NOTI", count=len(files))
    for reply in acrfs:
        for schema in receipts:
            assert schema.validate(reply.tree), (reply.fo.name, schema.error_log)
    assert [r.text("Form/TypeForm") for r in acrfs] == ["FA", "PA", "FA", "FA", "FA", "FA"]
    assert [r.text("Form/ReceptionResult/ResultCode") for r in acrfs].count("0") == 1
    results = []
    for reply in notis:
        results.append([f.findtext("HandlingResult/ResultCode")
                        for f in reply.tree.findall("Form")])
        valid = notifications.validate(reply.tree)
        errors = [e.message for e in notifications.error_log]
        if {"3", "4"} & set(results[-1]):
            assert not valid and errors and all("ResultCode" in m and "maxInclusive" in m
                                                for m in errors), errors
        else:
            assert valid, (reply.fo.name, errors)
    # 3 forms; provisional then final (2 forms each); 2 forms of result 2; result 4; one
    assert sorted(map(tuple, results)) == sorted(
        [("1", "0", "1"), ("3", "3"), ("1", "1"), ("2", "2"), ("4", "4"), ("1",)])


def test_provisional_answer_comes_before_the_final_one(
    make_sandbox: Callable[..., Sandbox], client: ClientKey
) -> None:
    sandbox = make_sandbox(notify_delay=0.2)
    fi, _, go = names("00001")
    with sftp_session(sandbox, client.key) as sftp:
        send(sftp, "INTEST", [(fi[0], _with_pi(SAMPLE, 'provisional="yes"'))], go)
        first, second = wait_replies(sandbox.root / "OUTTEST", "NOTI", count=2)
    assert [f.findtext("TypeForm") for f in first.tree.findall("Form")] == ["PA", "PA"]
    assert [f.findtext("HandlingResult/ResultCode")
            for f in first.tree.findall("Form")] == ["3", "3"]
    assert [f.findtext("TypeForm") for f in second.tree.findall("Form")] == ["FA", "FA"]
    assert [f.findtext("HandlingResult/ResultCode")
            for f in second.tree.findall("Form")] == ["1", "1"]
    assert first.fo.name < second.fo.name


def test_a_notification_without_file_reference_names_the_sent_forms(
    make_sandbox: Callable[..., Sandbox], client: ClientKey
) -> None:
    sandbox = make_sandbox(notify_delay=0.0)
    fi, _, go = names("00001")
    with sftp_session(sandbox, client.key) as sftp:
        send(sftp, "INTEST", [(fi[0], DIMONA_FORMS)], go)
        (noti,) = wait_replies(sandbox.root / "OUTTEST", "NOTI")
    forms = noti.tree.findall("Form")
    assert [f.find("FileReference") for f in forms] == [None, None]
    assert [(f.findtext("HandledOriginalForm/Identification"),
             f.findtext("HandledOriginalForm/FormCreationHour"),
             f.findtext("Reference/ReferenceNbr")) for f in forms] == [
        ("DIMONA", "09:00:00.001", "OWN-1"), ("DIMONA", "09:00:00.002", None)]
    assert [f.findtext("HandlingResult/ResultCode") for f in forms] == ["2", "2"]


def test_reply_numbering_survives_a_restart_of_the_same_root(
    make_sandbox: Callable[..., Sandbox], client: ClientKey, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    sandbox = make_sandbox(root=root, notify_delay=0.0)
    fi, _, go = names("00001")
    with sftp_session(sandbox, client.key) as sftp:
        send(sftp, "INTEST", [(fi[0], SAMPLE)], go)
        wait_replies(root / "OUTTEST", "NOTI")
    sandbox.stop()
    for path in (root / "OUTTEST").iterdir():
        path.unlink()  # a client took them
    again = make_sandbox(root=root, notify_delay=0.0)
    fi, _, go = names("00002")
    with sftp_session(again, client.key) as sftp:
        send(sftp, "INTEST", [(fi[0], SAMPLE)], go)
        (acrf,) = wait_replies(root / "OUTTEST", "ACRF")
    assert acrf.fo.name == f"FO.ACRF.999999.{TODAY}.00003.T"  # never 00001 again


def test_xsd_option_per_application_code() -> None:
    from flad.sandbox.command import _per_code

    assert _per_code("DMFA=/etc/xsd/DmfAOriginal_20223.xsd") == (
        "DMFA", "/etc/xsd/DmfAOriginal_20223.xsd")
    assert _per_code("DIMN=Dimona_20231.xsd") == ("DIMN", "Dimona_20231.xsd")
    assert _per_code("/srv/a=b/standin.xsd") is None  # a path with '=': every code
    assert _per_code("standin-fla.xsd") is None
