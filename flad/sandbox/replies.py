"""What the sandbox's transfer point answers: ACRF receipts, notifications, reply sets.

The bodies follow the platform's official schemas (``ACRF_20231.xsd``,
``NOTIFICATION_20223.xsd``; copies in ``../shared/platform/xsd/`` for the tests), the
same layout flad's reply parser (:mod:`flad.replyparse`) reads:

- ACRF: ``ACRF/Form/{Identification=ACRF001, FormCreationDate, FormCreationHour,
  AttestationStatus=0, TypeForm, FileReference/{FileName=<the GO>, ReferenceOrigin=2,
  ReferenceNbr=<ticket>}, ReceptionResult/{ResultCode, ErrorID*}}``
- NOTIFICATION: one ``Form`` per handled declaration: ``Identification=NOTI001``,
  ``FormCreationDate``, ``FormCreationHour``, ``AttestationStatus=0``, ``TypeForm`` (FA,
  or PA for a provisional answer), ``FileReference`` (the GO name and the ticket; left out
  on request), ``HandledOriginalForm`` (the sent form's header, when the sent file has
  ``Form`` elements), ``Reference`` (the declarant's own, origin 1, when the sent form
  had one), ``HandledReference`` (a ticket of the declaration), ``HandlingResult/
  {ResultCode, AnomalyReport*/{ErrorID, TagName, Value, AnomalyClass, AnomalyLabel,
  AnomalyLocation/Location, Path/INSS}}``.

Declarations of a file: in the stand-in layout (``flad/data/standin-fla.xsd``) its
``Training`` elements; in a platform layout its ``Form`` elements; any other file is one
declaration. A Training may ask for anomalies with ``<Anomaly>B:FLA-00012</Anomaly>``
(blocking) or ``W:FLA-00100`` (warning), several separated by spaces, commas or
semicolons, each optionally naming the element it is about (``B:FLA-00012:Hours`` gives
TagName ``Hours`` and that element's Value); the worker's INSS goes in ``Path``.

A sent file may also steer the notification with a processing instruction anywhere in
it (ignored by XSDs and by flad's checks), e.g. ``<?flad-sandbox result="3"?>``:

- ``result="0|1|2|3|4"``: the ResultCode of every form (default: 0 when a form has a
  blocking anomaly, else 1). ``NOTIFICATION_20223.xsd`` allows only 0 to 2, while the
  glossary also defines 3 (temporary answer) and 4 (timeout): forms with 3 or 4 do not
  validate against that schema, as the platform's would not.
- ``provisional="yes"``: first a provisional notification (TypeForm PA, result 3), then
  the final one ``notify_delay`` seconds later.
- ``fileref="no"``: the notification carries no FileReference; a client can then tie it
  only by the sent form's header (HandledOriginalForm).
- ``receipt="PA"``: the receipt's TypeForm (default FA; the documentation examples
  carry PA).

A reply set is published like the platform does it, so that a client listing the
folder never sees a GO before its data: FO and FS are written under a temporary name in
the sandbox's private folder, fsynced, renamed into place, and only then the GO.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import string
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from flad import durable, naming, signing

__all__ = [
    "STANDIN_NAMESPACE",
    "TRANSFER_POINT_SENDER",
    "Anomaly",
    "AnswerOptions",
    "Declaration",
    "ReplyPublisher",
    "acrf_body",
    "answer_options",
    "declarations_of",
    "new_reference",
    "noti_body",
]

STANDIN_NAMESPACE = "urn:flad:standin:fla:1"
TRANSFER_POINT_SENDER = "999999"
UNREADABLE_REQUEST_ID = "SBX-00001"
PI_TARGET = "flad-sandbox"

_REFERENCE_ALPHABET = string.digits + string.ascii_uppercase
_REFERENCE_LENGTH = 13
_MAX_TEXT = 500
_MAX_LOCATION = 200
_TOKEN_SPLIT = re.compile(r"[\s,;]+")
# ErrorID has at most 9 characters in the official schemas
_ANOMALY_REQUEST = re.compile(
    r"(?P<cls>[BWbw]):(?P<id>[A-Za-z0-9][A-Za-z0-9-]{0,8})(?::(?P<field>[A-Za-z_][\w.-]{0,63}))?"
)
_PSEUDO_ATTR = re.compile(r"""(\w+)\s*=\s*["']([^"']*)["']""")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HOUR = re.compile(r"\d{2}:\d{2}:\d{2}\.\d{3}")
_INSS = re.compile(r"\d{11}")


@dataclass(frozen=True)
class Anomaly:
    """One AnomalyReport of a declaration."""

    error_id: str
    anomaly_class: str  # "B" blocking, "W" warning
    label: str
    tag: str | None = None
    value: str | None = None
    location: str | None = None
    inss: str | None = None

    @property
    def blocking(self) -> bool:
        """A blocking anomaly makes its declaration fail."""
        return self.anomaly_class == "B"


@dataclass(frozen=True)
class OriginalForm:
    """The header of a sent ``Form``, as a notification repeats it."""

    identification: str
    creation_date: str
    creation_hour: str
    declarant_reference: str | None = None


@dataclass(frozen=True)
class Declaration:
    """One declaration of a file and what the application found in it."""

    number: int
    anomalies: tuple[Anomaly, ...] = ()
    original: OriginalForm | None = None

    @property
    def accepted(self) -> bool:
        """Accepted unless one of its anomalies is blocking."""
        return not any(a.blocking for a in self.anomalies)


@dataclass(frozen=True)
class AnswerOptions:
    """What a sent file asked of its notification (``<?flad-sandbox ...?>``)."""

    result: int | None = None
    provisional: bool = False
    file_reference: bool = True
    receipt_type: str = "FA"
    problems: tuple[str, ...] = field(default_factory=tuple)


def new_reference() -> str:
    """A 13-character alphanumeric ReferenceNbr, random enough never to repeat."""
    return "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(_REFERENCE_LENGTH))


def _clean(text: str, limit: int = _MAX_TEXT) -> str:
    """One printable line: file names and reasons may come from a hostile client."""
    flat = " ".join(text.split())
    flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def answer_options(tree: etree._ElementTree) -> AnswerOptions:
    """The ``flad-sandbox`` processing instructions of a sent file, read leniently."""
    values: dict[str, str] = {}
    root = tree.getroot()
    pis = [*root.itersiblings(preceding=True), *root.iter(etree.PI),
           *root.itersiblings()]
    for pi in pis:
        if isinstance(pi, etree._ProcessingInstruction) and pi.target == PI_TARGET:
            values.update(_PSEUDO_ATTR.findall(pi.text or ""))
    problems: list[str] = []
    result: int | None = None
    if "result" in values:
        if values["result"] in ("0", "1", "2", "3", "4"):
            result = int(values["result"])
        else:
            problems.append(f"result {values['result']!r} is not 0 to 4")
    receipt = values.get("receipt", "FA").upper()
    if receipt not in ("FA", "PA"):
        problems.append(f"receipt {receipt!r} is not FA or PA")
        receipt = "FA"
    return AnswerOptions(result=result,
                         provisional=values.get("provisional", "").lower() == "yes",
                         file_reference=values.get("fileref", "").lower() != "no",
                         receipt_type=receipt, problems=tuple(problems))


def _requested_anomalies(text: str, training: etree._Element, number: int) -> list[Anomaly]:
    base = f"/FLADeclaration/Training[{number}]"
    inss = training.findtext(f"{{{STANDIN_NAMESPACE}}}WorkerINSS")
    inss = inss.strip() if inss and _INSS.fullmatch(inss.strip()) else None
    found: list[Anomaly] = []
    for token in _TOKEN_SPLIT.split(text.strip()):
        if not token:
            continue
        match = _ANOMALY_REQUEST.fullmatch(token)
        if match is None:
            found.append(Anomaly(
                UNREADABLE_REQUEST_ID, "W",
                _clean(f"the sandbox cannot read the anomaly request {token!r} (expected "
                       "B:CODE or W:CODE, CODE of at most 9 characters, optionally :Element)"),
                tag="Anomaly", location=f"{base}/Anomaly", inss=inss))
            continue
        cls = match["cls"].upper()
        kind = "blocking" if cls == "B" else "non-blocking"
        tag = match["field"]
        value = None
        if tag:
            element = training.find(f"{{{STANDIN_NAMESPACE}}}{tag}")
            if element is not None:
                value = _clean("".join(map(str, element.itertext())))
        found.append(Anomaly(
            match["id"], cls, f"{kind} anomaly {match['id']} asked for by the file (sandbox)",
            tag=tag, value=value, location=base + (f"/{tag}" if tag else ""), inss=inss))
    return found


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _original(form: etree._Element) -> OriginalForm | None:
    header = {_local(c): (c.text or "").strip() for c in form if isinstance(c.tag, str)}
    identification = header.get("Identification", "")
    date, hour = header.get("FormCreationDate", ""), header.get("FormCreationHour", "")
    if not (identification and len(identification) <= 7 and _DATE.fullmatch(date)
            and _HOUR.fullmatch(hour)):
        return None  # not a header the notification schema can repeat
    declarant = None
    for reference in (c for c in form if _local(c) == "Reference"):
        fields = {_local(c): (c.text or "").strip() for c in reference
                  if isinstance(c.tag, str)}
        if fields.get("ReferenceOrigin") == "1" and fields.get("ReferenceNbr"):
            declarant = _clean(fields["ReferenceNbr"], 64)
            break
    return OriginalForm(identification, date, hour, declarant)


def declarations_of(tree: etree._ElementTree) -> list[Declaration]:
    """The declarations of a parsed file, with the anomalies it asks for."""
    root = tree.getroot()
    if root.tag != f"{{{STANDIN_NAMESPACE}}}FLADeclaration":
        forms = [c for c in root if _local(c) == "Form"]
        if forms:
            return [Declaration(n, (), _original(f)) for n, f in enumerate(forms, start=1)]
        return [Declaration(1)]
    trainings = root.findall(f"{{{STANDIN_NAMESPACE}}}Training")
    if not trainings:
        return [Declaration(1)]
    result: list[Declaration] = []
    for number, training in enumerate(trainings, start=1):
        anomalies: list[Anomaly] = []
        for request in training.findall(f"{{{STANDIN_NAMESPACE}}}Anomaly"):
            anomalies += _requested_anomalies(
                "".join(map(str, request.itertext())), training, number)
        result.append(Declaration(number, tuple(anomalies)))
    return result


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = _clean(text)
    return element


def _header(form: etree._Element, identification: str, now: datetime.datetime,
            type_form: str) -> None:
    _sub(form, "Identification", identification)
    _sub(form, "FormCreationDate", now.strftime("%Y-%m-%d"))
    _sub(form, "FormCreationHour", f"{now:%H:%M:%S}.{now.microsecond // 1000:03d}")
    _sub(form, "AttestationStatus", "0")
    _sub(form, "TypeForm", type_form)


def _serialize(root: etree._Element) -> bytes:
    body: bytes = etree.tostring(root, encoding="UTF-8", pretty_print=True)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def acrf_body(
    *,
    file_name: str,
    reference: str,
    now: datetime.datetime,
    errors: Sequence[str] = (),
    type_form: str = "FA",
) -> bytes:
    """An ACRF receipt: positive without ``errors``, else ResultCode 0 and every ErrorID."""
    root = etree.Element("ACRF")
    form = _sub(root, "Form")
    _header(form, "ACRF001", now, type_form)
    ref = _sub(form, "FileReference")
    _sub(ref, "FileName", file_name)
    _sub(ref, "ReferenceOrigin", "2")
    _sub(ref, "ReferenceNbr", reference)
    result = _sub(form, "ReceptionResult")
    _sub(result, "ResultCode", "0" if errors else "1")
    for error_id in errors:
        _sub(result, "ErrorID", error_id)
    return _serialize(root)


def noti_body(
    *,
    reference: str,
    file_name: str,
    declarations: Sequence[Declaration],
    now: datetime.datetime,
    result: int | None = None,
    provisional: bool = False,
    file_reference: bool = True,
) -> bytes:
    """A NOTIFICATION with one form per declaration (see the module's docstring)."""
    root = etree.Element("NOTIFICATION")
    for declaration in declarations:
        form = _sub(root, "Form")
        _header(form, "NOTI001", now, "PA" if provisional else "FA")
        if file_reference:
            ref = _sub(form, "FileReference")
            _sub(ref, "FileName", file_name)
            _sub(ref, "ReferenceOrigin", "2")
            _sub(ref, "ReferenceNbr", reference)
        original = declaration.original
        if original is not None:
            handled = _sub(form, "HandledOriginalForm")
            _sub(handled, "Identification", original.identification)
            _sub(handled, "FormCreationDate", original.creation_date)
            _sub(handled, "FormCreationHour", original.creation_hour)
            if original.declarant_reference:
                own = _sub(form, "Reference")
                _sub(own, "ReferenceType", "1")
                _sub(own, "ReferenceOrigin", "1")
                _sub(own, "ReferenceNbr", original.declarant_reference)
        handled_ref = _sub(form, "HandledReference")
        _sub(handled_ref, "ReferenceType", "1")
        _sub(handled_ref, "ReferenceOrigin", "2")
        _sub(handled_ref, "ReferenceNbr", new_reference())
        handling = _sub(form, "HandlingResult")
        if provisional:
            code = 3
        elif result is not None:
            code = result
        else:
            code = 1 if declaration.accepted else 0
        _sub(handling, "ResultCode", str(code))
        for anomaly in declaration.anomalies:
            report = _sub(handling, "AnomalyReport")
            _sub(report, "ErrorID", anomaly.error_id)
            if anomaly.tag:
                _sub(report, "TagName", anomaly.tag)
            if anomaly.value is not None:
                _sub(report, "Value", anomaly.value)
            _sub(report, "AnomalyClass", anomaly.anomaly_class)
            _sub(report, "AnomalyLabel", anomaly.label)
            if anomaly.location:
                _sub(_sub(report, "AnomalyLocation"), "Location",
                     _clean(anomaly.location, _MAX_LOCATION))
            if anomaly.inss:
                _sub(_sub(report, "Path"), "INSS", anomaly.inss)
    return _serialize(root)


class ReplyPublisher:
    """Writes reply sets (FO, FS, then GO) into OUT/OUTTEST, signed with the sandbox's key."""

    def __init__(self, tmp_dir: Path, signer: signing.Signer) -> None:
        self._tmp_dir = tmp_dir
        self._signer = signer
        self._lock = threading.Lock()
        self.published: list[Path] = []
        """Every file put in place, in the order it appeared (for tests and logs)."""

    def _place(self, folder: Path, name: str, data: bytes) -> None:
        tmp = self._tmp_dir / f"{name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, folder / name)
        durable.fsync_dir(folder)
        with self._lock:
            self.published.append(folder / name)

    def publish(
        self,
        folder: Path,
        application: str,
        date: datetime.date,
        sequence: str,
        environment: str,
        body: bytes,
    ) -> str:
        """Put one reply set in ``folder``; returns the FO name. GO comes last, always."""
        fo = naming.FileName(
            "FO", application, TRANSFER_POINT_SENDER, date, sequence, environment
        )
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self._place(folder, str(fo), body)
        self._place(folder, str(fo.with_type("FS")), signing.make_fs(body, self._signer))
        self._place(folder, str(fo.with_type("GO")), b"")
        return str(fo)
