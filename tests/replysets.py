"""Reply sets as the platform leaves them in OUT/OUTTEST, for the tests."""

from __future__ import annotations

from flad.config import load
from flad.daemon import sftp_settings
from flad.journal import Journal
from flad.remote import SftpChannel
from flad.replies import ReplyPoller
from tests.harness import Install
from tests.sshd import SshServer

DATE = "20261127"


def acrf(file_name: str, *, ok: bool = True, reference: str = "0380579A83Q1Z",
         error: str = "ACRF-129") -> bytes:
    result = ("<ResultCode>1</ResultCode>" if ok else
              f"<ResultCode>0</ResultCode><ErrorID>{error}</ErrorID>"
              "<ErrorDescription>missing part</ErrorDescription>")
    return (f"<ACRF><Form><Identification>ACRF001</Identification>"
            f"<FormCreationDate>2026-11-27</FormCreationDate><AttestationStatus>0"
            f"</AttestationStatus><TypeForm>FA</TypeForm><FileReference><FileName>{file_name}"
            f"</FileName><ReferenceOrigin>2</ReferenceOrigin><ReferenceNbr>{reference}"
            f"</ReferenceNbr></FileReference><ReceptionResult>{result}</ReceptionResult>"
            f"</Form></ACRF>").encode()


def noti(reference: str, anomalies: list[tuple[str, str]]) -> bytes:
    reports = "".join(
        f"<AnomalyReport><ErrorID>{eid}</ErrorID><AnomalyClass>{cls}</AnomalyClass>"
        f"<Path>/FLADeclaration/Training[1]/Hours</Path><Description>too many hours"
        f"</Description></AnomalyReport>" for cls, eid in anomalies)
    blocking = any(cls == "B" for cls, _ in anomalies)
    return (f"<NOTI><Form><Identification>NOTI001</Identification><Reference>"
            f"<ReferenceType>1</ReferenceType><ReferenceNbr>{reference}</ReferenceNbr>"
            f"</Reference><HandlingResult><ResultCode>{0 if blocking else 1}</ResultCode>"
            f"</HandlingResult><Declaration><DeclarationNbr>1</DeclarationNbr>"
            f"<HandlingResult><ResultCode>{0 if blocking else 1}</ResultCode></HandlingResult>"
            f"{reports}</Declaration></Form></NOTI>").encode()


def put_set(sshd: SshServer, app: str, seq: int, body: bytes, *, folder: str = "OUTTEST",
            env: str = "T", go: bool = True, fs: bytes | None = b"") -> list[str]:
    base = f"{app}.999999.{DATE}.{seq:05d}.{env}"
    names = [f"FO.{base}"]
    (sshd.root / folder / f"FO.{base}").write_bytes(body)
    if fs is not None:
        (sshd.root / folder / f"FS.{base}").write_bytes(fs)
        names.append(f"FS.{base}")
    if go:
        (sshd.root / folder / f"GO.{base}").write_bytes(b"")
        names.append(f"GO.{base}")
    return names


def poll(inst: Install) -> int:
    cfg = load(inst.config_path)
    db = Journal(cfg.daemon.state_dir / "journal.sqlite3")
    transport = SftpChannel(sftp_settings(cfg.channels[0]))
    try:
        return ReplyPoller(cfg.channels[0], db, transport).poll()
    finally:
        transport.close()
        db.close()
