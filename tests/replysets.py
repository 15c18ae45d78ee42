"""Reply sets as the platform leaves them in OUT/OUTTEST, for the tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flad.channel.replies import ReplyPoller
from flad.config import load
from flad.journal import Journal
from flad.remote import SftpChannel
from tests.harness import Install
from tests.sshd import SshServer

DATE = "20261127"
#: the platform's own files (official XSDs, examples, glossaries), when present
PLATFORM = Path(__file__).resolve().parent.parent.parent / "shared" / "platform"


def platform_file(relative: str) -> Path:
    """A file of ../shared/platform, or the test is skipped when that folder is absent."""
    path = PLATFORM / relative
    if not path.is_file():
        pytest.skip(f"{relative} of ../shared/platform is not here")
    return path


def from_example(name: str, file_name: str | None = None) -> bytes:
    """A documentation example reply, its FileReference/FileName set to `file_name`."""
    data = platform_file(f"examples/{name}").read_bytes()
    if file_name is not None:
        data = re.sub(rb"<FileName>[^<]*</FileName>", f"<FileName>{file_name}</FileName>"
                      .encode(), data, count=1)
    return data


def acrf(file_name: str, *, ok: bool = True, reference: str = "0380579A83Q1Z",
         error: str = "ACRF-129", errors: tuple[str, ...] | None = None,
         type_form: str = "FA") -> bytes:
    """A receipt as ACRF_20231.xsd defines it (FA, as other clients' captured ones)."""
    codes = errors if errors is not None else (() if ok else (error,))
    result = (f"<ResultCode>{0 if codes or not ok else 1}</ResultCode>"
              + "".join(f"<ErrorID>{c}</ErrorID>" for c in codes))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ACRF><Form>'
            f"<Identification>ACRF001</Identification>"
            f"<FormCreationDate>2026-11-27</FormCreationDate>"
            f"<FormCreationHour>10:15:00.123</FormCreationHour>"
            f"<AttestationStatus>0</AttestationStatus><TypeForm>{type_form}</TypeForm>"
            f"<FileReference><FileName>{file_name}</FileName>"
            f"<ReferenceOrigin>2</ReferenceOrigin><ReferenceNbr>{reference}</ReferenceNbr>"
            f"</FileReference><ReceptionResult>{result}</ReceptionResult>"
            f"</Form></ACRF>").encode()


def anomaly(error_id: str, cls: str, *, label: str | None = "Ongeldig",
            tag: str | None = "Hours", value: str | None = "25",
            inss: str | None = "85073003328", line: int | None = 12) -> str:
    """One AnomalyReport, its zones in the schema's order."""
    parts = [f"<ErrorID>{error_id}</ErrorID>"]
    if tag is not None:
        parts.append(f"<TagName>{tag}</TagName>")
    if value is not None:
        parts.append(f"<Value>{value}</Value>")
    parts.append(f"<AnomalyClass>{cls}</AnomalyClass>")
    if label is not None:
        parts.append(f"<AnomalyLabel>{label}</AnomalyLabel>")
    if line is not None:
        parts.append(f"<AnomalyLocation><LineNbr>{line}</LineNbr><ColumnNbr>7</ColumnNbr>"
                     f"</AnomalyLocation>")
    if inss is not None:
        parts.append(f"<Path><NOSSRegistrationNbr>199999934</NOSSRegistrationNbr>"
                     f"<INSS>{inss}</INSS></Path>")
    return "<AnomalyReport>" + "".join(parts) + "</AnomalyReport>"


def noti_form(*, file_name: str | None = None, ticket: str | None = "380000B5WX004",
              result: int = 1, type_form: str = "FA", anomalies: tuple[str, ...] = (),
              handled: tuple[str, str, str] | None = None,
              declarant: str | None = None) -> str:
    """One Form of a NOTIFICATION (NOTIFICATION_20223.xsd), as the platform orders it."""
    parts = ["<Identification>NOTI001</Identification>",
             "<FormCreationDate>2026-11-28</FormCreationDate>",
             "<FormCreationHour>16:00:41.628</FormCreationHour>",
             "<AttestationStatus>0</AttestationStatus>", f"<TypeForm>{type_form}</TypeForm>"]
    if file_name is not None:
        parts.append(f"<FileReference><FileName>{file_name}</FileName>"
                     f"<ReferenceOrigin>2</ReferenceOrigin>"
                     + (f"<ReferenceNbr>{ticket}</ReferenceNbr>" if ticket else "")
                     + "</FileReference>")
    if handled is not None:
        parts.append(f"<HandledOriginalForm><Identification>{handled[0]}</Identification>"
                     f"<FormCreationDate>{handled[1]}</FormCreationDate>"
                     f"<FormCreationHour>{handled[2]}</FormCreationHour>"
                     f"</HandledOriginalForm>")
    if declarant is not None:
        parts.append(f"<Reference><ReferenceType>1</ReferenceType><ReferenceOrigin>1"
                     f"</ReferenceOrigin><ReferenceNbr>{declarant}</ReferenceNbr></Reference>")
    parts.append("<EmployerId><NOSSRegistrationNbr>199999934</NOSSRegistrationNbr>"
                 "<CompanyID>0123456749</CompanyID></EmployerId>")
    parts.append("<HandledReference><ReferenceType>1</ReferenceType><ReferenceOrigin>2"
                 "</ReferenceOrigin><ReferenceNbr>340000JEDT00A</ReferenceNbr>"
                 "</HandledReference>")
    parts.append(f"<HandlingResult><ResultCode>{result}</ResultCode>{''.join(anomalies)}"
                 "</HandlingResult>")
    return "<Form>" + "".join(parts) + "</Form>"


def notification(*forms: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<NOTIFICATION>' + "".join(forms)
            + "</NOTIFICATION>").encode()


def put_set(sshd: SshServer, app: str, seq: int, body: bytes, *, folder: str = "OUTTEST",
            env: str = "T", go: bool = True, fs: bytes | None = b"",
            kind: str = "FO") -> list[str]:
    """A reply set in OUTTEST (or `folder`): the data (`kind` FO or CO), its FS, its GO."""
    base = f"{app}.999999.{DATE}.{seq:05d}.{env}"
    names = [f"{kind}.{base}"]
    (sshd.root / folder / f"{kind}.{base}").write_bytes(body)
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
    transport = SftpChannel(cfg.channels[0].sftp)
    try:
        return ReplyPoller(cfg.channels[0], db, transport).poll()
    finally:
        transport.close()
        db.close()
