"""The sandbox's transfer point: what the platform does when a GO (or a TD) lands in IN/INTEST.

A thread looks at ``IN``, ``INTEST`` and ``INTEST-S`` every ``poll_interval`` seconds, and at
once when a client closes or renames a GO/TD. A GO is taken once nobody holds it open for writing
and it has been left alone for ``settle_seconds`` (so that the client's own check of the
GO it just uploaded still finds it). For each GO the checks run in this order, and the
first that fails gives a negative receipt (``ResultCode`` 0) with its ErrorID:

==========  =========================================================================
ErrorID     reason (the official code of annex 30 whose meaning is closest)
==========  =========================================================================
ACRF-109..  a name breaks a rule the error list gives a code of its own: date not 8
            digits (109), not a real date (110), later than today (111); sequence
            not 5 characters (112), outside 0-9/A-Z (367), zero (127); environment
            not R, T or S (117); part count not one digit (114) or zero (116)
ACRF-107    bad name: any other break of the grammar, a file of another type or
            another number of parts carrying the set's key
ACRF-118    an R set outside IN; ACRF-119 a T set outside INTEST; ACRF-257 an S set
            outside INTEST-S
ACRF-133    same name sent before: this sender, date, sequence and environment were
            seen before (the platform never accepts a name twice)
ACRF-108    wrong sender: the sender number is not the one given with --sender-id
ACRF-120    missing part: an FI named by the GO (``FI.<set>.<parts>.<i>``) is absent
ACRF-122    missing FS in production: a part sent to IN has no signature file
ACRF-125    bad signature: an FS does not verify with the client's certificate
ACRF-102    not well-formed: the data (parts joined in order) is not well-formed,
            or is refused as unsafe XML (DOCTYPE, encoding, size)

The receipt carries only the code, as the platform's does (the ACRF schema has no
place for a text); the sandbox logs its reason. The codes are those of the platform's
list of error codes (``ErrorCodes2022-1_30.xml``, annex 30), so a client that reads that
list shows their official label.
=======
ACRF-312    XSD invalid: the data does not follow the XSD given with --xsd for its
            application code (or for every code)
==========  =========================================================================

The receipt carries only the code, as the platform's does (the ACRF schema has no
place for a text); the sandbox logs its reason. The codes and their meanings are those
of the platform's list of error codes (``ErrorCodes2022-1_30.xml``, annex 30), so a
client that reads that list shows their official label; which checks the real platform
runs, and in which order, is in its manuals, not public here.

A positive receipt (``ResultCode`` 1) is followed, ``notify_delay`` seconds later, by a
NOTIFICATION with one form per declaration (see :mod:`flad.sandbox.replies`, which also
says how a sent file asks for a provisional answer or another result). Pending
NOTIs are kept on disk, so a restart does not lose them. A TD cancels its set: the files
go away, no receipt. Every handled file leaves IN/INTEST for
``ROOT/.sandbox/processed/``; the sandbox never reads outside its root and never follows
a symlink planted in IN.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from lxml import etree

from flad import naming, signing, xmlcheck
from flad.platform import ENV_LETTER, ENVIRONMENTS, REMOTE_IN, REMOTE_OUT
from flad.sandbox.replies import (
    Anomaly,
    AnswerOptions,
    Declaration,
    OriginalForm,
    ReplyPublisher,
    acrf_body,
    answer_options,
    declarations_of,
    new_reference,
    noti_body,
)

__all__ = [
    "ERROR_IDS",
    "ERR_BAD_NAME",
    "ERR_BAD_SIGNATURE",
    "ERR_DUPLICATE",
    "ERR_MISSING_FS",
    "ERR_MISSING_PART",
    "ERR_NOT_WELL_FORMED",
    "ERR_WRONG_SENDER",
    "ERR_XSD_INVALID",
    "TransferPoint",
    "TransferPointSettings",
    "local_now",
]

log = logging.getLogger("flad.sandbox")

ERR_BAD_NAME = "ACRF-107"
ERR_DUPLICATE = "ACRF-133"
ERR_WRONG_SENDER = "ACRF-108"
ERR_MISSING_PART = "ACRF-120"
ERR_MISSING_FS = "ACRF-122"
ERR_BAD_SIGNATURE = "ACRF-125"
ERR_NOT_WELL_FORMED = "ACRF-102"
ERR_XSD_INVALID = "ACRF-312"
#: The code of a set whose environment does not belong in the folder it was put in.
ERR_WRONG_FOLDER = {"R": "ACRF-118", "T": "ACRF-119", "S": "ACRF-257"}
ERROR_IDS = {
    "ACRF-109": "date not 8 digits",
    "ACRF-110": "date not a real date",
    "ACRF-111": "date later than today",
    "ACRF-112": "sequence not 5 characters",
    "ACRF-114": "part count not one digit",
    "ACRF-116": "part count zero",
    "ACRF-117": "environment not T, R or S",
    "ACRF-127": "sequence zero",
    "ACRF-367": "sequence outside 0-9, A-Z",
    "ACRF-118": "R file outside IN",
    "ACRF-119": "T file outside INTEST",
    "ACRF-257": "S file outside INTEST-S",
    ERR_BAD_NAME: "bad name",
    ERR_DUPLICATE: "sequence already used",
    ERR_WRONG_SENDER: "wrong sender",
    ERR_MISSING_PART: "missing part",
    ERR_MISSING_FS: "missing FS in production",
    ERR_BAD_SIGNATURE: "bad signature",
    ERR_NOT_WELL_FORMED: "not well-formed",
    ERR_XSD_INVALID: "XSD invalid",
}

# Inbound folder -> (reply folder, environments it takes; the first is the default):
# IN/OUT for R, INTEST/OUTTEST for T, INTEST-S/OUTTEST-S for S.
FOLDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    REMOTE_IN[env]: (REMOTE_OUT[env], (ENV_LETTER[env],)) for env in ENVIRONMENTS
}
_PRODUCTION_FOLDER = "IN"
_MAX_NAMES_IN_REASON = 3


def local_now() -> datetime.datetime:
    """Local wall-clock time with its offset: the platform stamps replies in local time."""
    return datetime.datetime.now().astimezone()


@dataclass(frozen=True)
class TransferPointSettings:
    """What the transfer point checks against, and its timing (injectable for tests)."""

    client_certificates: tuple[x509.Certificate, ...] = ()
    sender_id: str | None = None
    schema: etree.XMLSchema | None = None
    """The XSD of every application code not in ``schemas``."""
    schemas: Mapping[str, etree.XMLSchema] = field(default_factory=dict)
    """The XSD per application code (``DMFA``, ``DIMN``...), as ``--xsd CODE=PATH`` gives."""
    notify_delay: float = 5.0
    poll_interval: float = 0.2
    settle_seconds: float = 0.2
    clock: Callable[[], datetime.datetime] = field(default=local_now)
    reference: Callable[[], str] = field(default=new_reference)


class _Refused(Exception):
    """A check failed: the receipt is negative with this ErrorID and reason."""

    def __init__(self, error_id: str, reason: str) -> None:
        super().__init__(f"{error_id}: {reason}")
        self.error_id = error_id
        self.reason = reason


class _State:
    """The transfer point's memory across restarts: reply sequences and sequences seen."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {}
        self._seen: set[str] = set()
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self._counters = {str(k): int(v) for k, v in data["counters"].items()}
                self._seen = {str(k) for k in data["seen"]}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("sandbox state %s unreadable (%s): starting afresh", path, exc)

    def _save(self) -> None:
        data = {"counters": self._counters, "seen": sorted(self._seen)}
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self._path)

    def next_sequence(self, date: datetime.date, environment: str) -> str:
        """The next reply sequence for this date and environment: 00001, 00002, ..."""
        key = f"{date:%Y%m%d}.{environment}"
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + 1
            self._save()
            return naming.sequence_for(self._counters[key])

    def claim(self, set_key: str) -> bool:
        """Record a submission's set key; False when it was seen before."""
        with self._lock:
            if set_key in self._seen:
                return False
            self._seen.add(set_key)
            self._save()
            return True


@dataclass(frozen=True)
class _PendingNoti:
    due: float
    folder: str
    environment: str
    reference: str
    file_name: str
    declarations: tuple[Declaration, ...]
    result: int | None = None
    provisional: bool = False
    file_reference: bool = True

    @property
    def key(self) -> str:
        """Its file name under pending/: one ticket may have a provisional and a final."""
        return f"{self.reference}{'-PA' if self.provisional else ''}"

    def to_json(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "folder": self.folder,
            "environment": self.environment,
            "reference": self.reference,
            "file_name": self.file_name,
            "result": self.result,
            "provisional": self.provisional,
            "file_reference": self.file_reference,
            "declarations": [
                {
                    "number": d.number,
                    "original": None if d.original is None else d.original.__dict__,
                    "anomalies": [a.__dict__ for a in d.anomalies],
                }
                for d in self.declarations
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _PendingNoti:
        return cls(
            due=float(data["due"]),
            folder=str(data["folder"]),
            environment=str(data["environment"]),
            reference=str(data["reference"]),
            file_name=str(data["file_name"]),
            result=None if data.get("result") is None else int(data["result"]),
            provisional=bool(data.get("provisional", False)),
            file_reference=bool(data.get("file_reference", True)),
            declarations=tuple(
                Declaration(
                    int(d["number"]),
                    tuple(Anomaly(**a) for a in d["anomalies"]),
                    None if d.get("original") is None else OriginalForm(**d["original"]),
                )
                for d in data["declarations"]
            ),
        )


def _regular_files(folder: Path) -> dict[str, os.stat_result]:
    """Regular files of a folder by name; symlinks and the rest are not the client's data."""
    found: dict[str, os.stat_result] = {}
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return found
    for name in names:
        try:
            info = os.lstat(folder / name)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            found[name] = info
    return found


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_IN_REASON])
    more = len(names) - _MAX_NAMES_IN_REASON
    return shown + (f" and {more} more" if more > 0 else "")


class TransferPoint:
    """The thread that answers GO and TD files with receipts and notifications."""

    def __init__(
        self,
        root: Path,
        private_dir: Path,
        settings: TransferPointSettings,
        signer: signing.Signer,
        is_being_written: Callable[[str], bool] = lambda _path: False,
    ) -> None:
        self.root = root
        self.settings = settings
        self._is_being_written = is_being_written
        self._private = private_dir
        self._processed = private_dir / "processed"
        self._pending_dir = private_dir / "pending"
        for folder in (self._processed, self._pending_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._state = _State(private_dir / "state.json")
        self.publisher = ReplyPublisher(private_dir / "tmp", signer)
        self._pending: list[_PendingNoti] = self._load_pending()
        self._broken: set[tuple[str, str, int]] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="sandbox-transfer-point", daemon=True
        )

    # -- life ----------------------------------------------------------------------

    def start(self) -> None:
        """Start watching IN and INTEST."""
        self._thread.start()

    def stop(self) -> None:
        """Finish the file in hand, then stop; pending NOTIs stay on disk for next time."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10.0)

    def wake(self, path: str | None = None) -> None:
        """Look now (called when a client closes or renames a file; GO and TD matter)."""
        if path is None or os.path.basename(path).startswith(("GO.", "TD.")):
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.scan_once()
                self._emit_due()
            except Exception:  # the thread must outlive any one bad file
                log.exception("sandbox transfer point: unexpected error")
            timeout = self.settings.poll_interval
            if self._pending:
                next_due = min(p.due for p in self._pending) - time.time()
                timeout = max(0.0, min(timeout, next_due))
            self._wake.wait(timeout)
            self._wake.clear()

    # -- scanning ------------------------------------------------------------------

    def _ready(self, folder: Path, name: str, info: os.stat_result) -> bool:
        if self._is_being_written(os.path.realpath(folder / name)):
            return False
        return time.time() - info.st_mtime >= self.settings.settle_seconds

    def scan_once(self) -> int:
        """Handle every ready TD, then every ready GO; returns how many were handled."""
        handled = 0
        for folder_name in FOLDERS:
            folder = self.root / folder_name
            files = _regular_files(folder)
            for prefix, handler in (("TD.", self._handle_td), ("GO.", self._handle_go)):
                for name in sorted(n for n in files if n.startswith(prefix)):
                    key = (folder_name, name, files[name].st_mtime_ns)
                    if key in self._broken or self._stopping.is_set():
                        continue
                    if not (folder / name).exists() or not self._ready(folder, name, files[name]):
                        continue
                    try:
                        handler(folder_name, name)
                    except Exception:
                        self._broken.add(key)
                        log.exception(
                            "sandbox: cannot handle %s/%r; left in place", folder_name, name
                        )
                    handled += 1
        return handled

    def _members(self, folder: Path, set_key: str) -> list[str]:
        """Names in ``folder`` that carry this set key, other than GO and TD files.

        Every kind of entry counts here (they all leave with the set); only regular
        files count as data, so a planted symlink is a missing part, never read.
        """
        wanted = set_key.split(".")
        try:
            entries = os.listdir(folder)
        except FileNotFoundError:
            return []
        return sorted(
            name
            for name in entries
            if name.split(".")[1:6] == wanted and not name.startswith(("GO.", "TD."))
        )

    def _move_away(self, folder_name: str, names: Sequence[str]) -> None:
        stamp = self.settings.clock().strftime("%Y%m%dT%H%M%S.%f")
        target = self._processed / f"{stamp}-{folder_name}"
        suffix = 1
        while target.exists():
            suffix += 1
            target = self._processed / f"{stamp}-{folder_name}-{suffix}"
        target.mkdir(parents=True)
        for name in names:
            # The client may remove a file meanwhile: what is gone is gone.
            with contextlib.suppress(FileNotFoundError):
                shutil.move(self.root / folder_name / name, target / name)

    # -- TD ------------------------------------------------------------------------

    def _handle_td(self, folder_name: str, name: str) -> None:
        folder = self.root / folder_name
        try:
            td = naming.parse(name)
        except naming.InvalidName as exc:
            log.info("sandbox: unreadable TD in %s dropped: %s", folder_name, exc)
            self._move_away(folder_name, [name])
            return
        same_set = [
            n
            for n in os.listdir(folder)
            if n.startswith("GO.") and n.split(".")[1:6] == td.set_key.split(".")
        ]
        names = [name, *self._members(folder, td.set_key), *same_set]
        self._move_away(folder_name, names)
        log.info("sandbox: %s/%s cancelled set %s (%d files, no receipt)",
                 folder_name, name, td.set_key, len(names))

    # -- GO ------------------------------------------------------------------------

    def _handle_go(self, folder_name: str, name: str) -> None:
        reply_folder, environments = FOLDERS[folder_name]
        environment = environments[0]
        names = [name]
        # An unexpected error (not a refusal) leaves the files in place, for a look.
        try:
            try:
                go = naming.parse(name, today=self.settings.clock().date())
            except naming.InvalidName as exc:
                raise _Refused(exc.code or ERR_BAD_NAME, str(exc)) from None
            members = self._members(self.root / folder_name, go.set_key)
            names += members
            if go.environment not in environments:
                raise _Refused(
                    ERR_WRONG_FOLDER[go.environment],
                    f"{name}: environment {go.environment} does not belong in {folder_name} "
                    f"(it takes {' or '.join(environments)})",
                )
            environment = go.environment
            declarations, options = self._check(folder_name, go, members)
        except _Refused as refusal:
            self._answer(folder_name, reply_folder, environment, name, refusal=refusal)
        else:
            self._answer(
                folder_name,
                reply_folder,
                environment,
                name,
                notify=(tuple(declarations), options),
            )
        self._move_away(folder_name, names)

    def _check(
        self, folder_name: str, go: naming.FileName, members: Sequence[str]
    ) -> tuple[list[Declaration], AnswerOptions]:
        """Every check of one submission, in the documented order; raises _Refused."""
        for member in members:
            try:
                parsed = naming.parse(member, today=self.settings.clock().date())
            except naming.InvalidName as exc:
                raise _Refused(exc.code or ERR_BAD_NAME, str(exc)) from None
            if parsed.type not in ("FI", "FS"):
                raise _Refused(
                    ERR_BAD_NAME, f"{member}: a {parsed.type} file has no place in {folder_name}"
                )
            if parsed.parts != go.parts:
                raise _Refused(
                    ERR_BAD_NAME,
                    f"{member}: names {parsed.parts or 'no'} parts, "
                    f"its GO names {go.parts or 'none'}",
                )
        if not self._state.claim(go.set_key):
            raise _Refused(
                ERR_DUPLICATE,
                f"sequence {go.sequence} of sender {go.sender} on {go.date:%Y-%m-%d} "
                f"({go.environment}) was already used",
            )
        wanted_sender = self.settings.sender_id
        if wanted_sender is not None and go.sender != wanted_sender:
            raise _Refused(
                ERR_WRONG_SENDER,
                f"sender {go.sender} may not send on this channel (expected {wanted_sender})",
            )
        if go.parts is None:
            parts = [go.with_type("FI")]
        else:
            parts = [go.with_type("FI", part=i) for i in range(1, go.parts + 1)]
        present = set(members) & set(_regular_files(self.root / folder_name))
        missing = [str(p) for p in parts if str(p) not in present]
        if missing:
            raise _Refused(
                ERR_MISSING_PART,
                f"{len(missing)} of {len(parts)} part(s) missing: {_some(missing)}",
            )
        folder = self.root / folder_name
        chunks = [_read(folder / str(p)) for p in parts]
        if folder_name == _PRODUCTION_FOLDER:
            for part, data in zip(parts, chunks, strict=True):
                fs_name = str(part.with_type("FS"))
                if fs_name not in present:
                    raise _Refused(
                        ERR_MISSING_FS,
                        f"{fs_name} is missing: every part sent to IN needs its signature",
                    )
                self._verify(fs_name, data, _read(folder / fs_name))
        data = b"".join(chunks)
        try:
            tree = xmlcheck.parse_hardened(data)
        except xmlcheck.XmlRejected as exc:
            raise _Refused(ERR_NOT_WELL_FORMED, str(exc)) from None
        schema = self.settings.schemas.get(go.application, self.settings.schema)
        if schema is not None:
            try:
                xmlcheck.check_document(data, schema=schema, root_element=None,
                                        employer_xpath=None, sender_xpath=None)
            except xmlcheck.XmlRejected as exc:
                raise _Refused(ERR_XSD_INVALID, str(exc)) from None
        options = answer_options(tree)
        for problem in options.problems:
            log.warning("sandbox: %s: <?flad-sandbox?> %s; ignored", go.set_key, problem)
        return declarations_of(tree), options

    def _verify(self, fs_name: str, data: bytes, fs: bytes) -> None:
        """The FS must verify with one of the client's certificates (CA certificates skipped)."""
        certificates = [
            c for c in self.settings.client_certificates if not _is_ca(c)
        ] or list(self.settings.client_certificates)
        if not certificates:
            raise _Refused(
                ERR_BAD_SIGNATURE,
                f"{fs_name}: the sandbox has no client certificate to check it against",
            )
        reasons: list[str] = []
        for certificate in certificates:
            try:
                signing.verify_fs(data, fs, certificate=certificate)
            except signing.SignatureInvalid as exc:
                reasons.append(str(exc))
            else:
                return
        telling = [r for r in reasons if "not by the expected certificate" not in r]
        raise _Refused(ERR_BAD_SIGNATURE, f"{fs_name}: {(telling or reasons)[0]}")

    # -- replies -------------------------------------------------------------------

    def _answer(
        self,
        folder_name: str,
        reply_folder: str,
        environment: str,
        go_name: str,
        *,
        refusal: _Refused | None = None,
        notify: tuple[tuple[Declaration, ...], AnswerOptions] | None = None,
    ) -> None:
        now = self.settings.clock()
        reference = self.settings.reference()
        errors = () if refusal is None else (refusal.error_id,)
        receipt_type = notify[1].receipt_type if notify is not None else "FA"
        body = acrf_body(file_name=go_name, reference=reference, now=now, errors=errors,
                         type_form=receipt_type)
        out = self.root / reply_folder
        out.mkdir(exist_ok=True)
        sequence = self._state.next_sequence(now.date(), environment)
        fo = self.publisher.publish(out, "ACRF", now.date(), sequence, environment, body)
        verdict = (
            "positive" if refusal is None else f"negative {refusal.error_id}: {refusal.reason}"
        )
        log.info("sandbox: %s/%r -> %s/%s %s", folder_name, go_name, reply_folder, fo, verdict)
        if notify is None:
            return
        declarations, options = notify
        final = _PendingNoti(
            due=time.time() + self.settings.notify_delay * (2 if options.provisional else 1),
            folder=reply_folder,
            environment=environment,
            reference=reference,
            file_name=go_name,
            declarations=declarations,
            result=options.result,
            file_reference=options.file_reference,
        )
        answers = [final]
        if options.provisional:
            answers.insert(0, dataclasses.replace(
                final, due=time.time() + self.settings.notify_delay, provisional=True))
        for pending in answers:
            path = self._pending_dir / f"{pending.key}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(pending.to_json()), encoding="utf-8")
            os.replace(tmp, path)
            self._pending.append(pending)
        self._wake.set()

    def _load_pending(self) -> list[_PendingNoti]:
        pending: list[_PendingNoti] = []
        for path in sorted(self._pending_dir.glob("*.json")):
            try:
                pending.append(_PendingNoti.from_json(json.loads(path.read_text("utf-8"))))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("sandbox: pending notification %s unreadable (%s); dropped", path, exc)
                path.unlink(missing_ok=True)
        return pending

    def _emit_due(self) -> None:
        now_epoch = time.time()
        # by due time, a provisional answer before the final one of the same ticket
        for pending in sorted(self._pending, key=lambda p: (p.due, not p.provisional)):
            if pending.due > now_epoch or self._stopping.is_set():
                continue
            now = self.settings.clock()
            body = noti_body(
                reference=pending.reference,
                file_name=pending.file_name,
                declarations=pending.declarations,
                now=now,
                result=pending.result,
                provisional=pending.provisional,
                file_reference=pending.file_reference,
            )
            out = self.root / pending.folder
            out.mkdir(exist_ok=True)
            sequence = self._state.next_sequence(now.date(), pending.environment)
            fo = self.publisher.publish(
                out, "NOTI", now.date(), sequence, pending.environment, body
            )
            (self._pending_dir / f"{pending.key}.json").unlink(missing_ok=True)
            self._pending.remove(pending)
            accepted = all(d.accepted for d in pending.declarations)
            log.info("sandbox: %s/%s for %s: %s%s", pending.folder, fo, pending.file_name,
                     "provisional, " if pending.provisional else "",
                     "accepted" if accepted else "blocking anomalies")


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(
            certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        )
    except x509.ExtensionNotFound:
        return False
