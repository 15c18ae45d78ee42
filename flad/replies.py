"""The reply side of a channel: OUT/OUTTEST mirrored into the inbox, exactly once.

A set (FO/CO data, their FS, and the GO that completes it) is taken only when its GO
is on the server; it is downloaded into a hidden folder of the inbox, checked, and
renamed into place data first and GO last, so that payroll software can use the
platform's own rule ("a set is there when its GO is"). Only once the set is durable
and journaled does anything leave the server. Remote names that do not follow the
grammar are never used as local paths.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from lxml import etree

from flad import durable, faults, logs, naming, signing, xmlcheck
from flad.config import ChannelConfig
from flad.journal import Journal
from flad.platform import OPTIONAL_FOLDERS, REMOTE_OUT
from flad.transport import RemoteNotFound, SftpChannel

DATA_TYPES = ("FO", "CO")
#: AnomalyClass values that block the declaration; others are warnings.
BLOCKING_CLASSES = frozenset({"B", "BLOCKING", "1"})
INCOMING = ".incoming"


@dataclass(frozen=True)
class Receipt:
    file_name: str | None
    reference: str | None
    accepted: bool | None
    error_id: str | None
    description: str | None


@dataclass(frozen=True)
class Notification:
    reference: str | None
    file_name: str | None
    result: int | None
    anomalies: tuple[dict[str, str], ...]

    @property
    def blocking(self) -> int:
        return sum(1 for a in self.anomalies if a.get("class", "").upper() in BLOCKING_CLASSES)

    @property
    def other(self) -> int:
        return len(self.anomalies) - self.blocking


def _text(root: etree._Element, xpath: str) -> str | None:
    found = root.xpath(xpath)
    if isinstance(found, list) and found:
        first = found[0]
        text = first.text if isinstance(first, etree._Element) else str(first)
        return text.strip() if text else None
    return None


def _q(*names: str) -> str:
    return "//" + "/".join(f"*[local-name()='{n}']" for n in names)


def parse_receipt(data: bytes) -> Receipt:
    root = xmlcheck.parse_hardened(data).getroot()
    code = _text(root, _q("ReceptionResult", "ResultCode"))
    return Receipt(
        file_name=_text(root, _q("FileReference", "FileName")),
        reference=_text(root, _q("FileReference", "ReferenceNbr")),
        accepted=None if code is None else code == "1",
        error_id=_text(root, _q("ErrorID")),
        description=_text(root, _q("ReceptionResult", "ErrorDescription")),
    )


def parse_notification(data: bytes) -> Notification:
    root = xmlcheck.parse_hardened(data).getroot()
    anomalies = []
    reports = root.xpath(_q("AnomalyReport"))
    for report in reports if isinstance(reports, list) else []:
        if not isinstance(report, etree._Element):
            continue
        entry = {key: _text(report, f"./*[local-name()='{tag}']") or ""
                 for key, tag in (("error_id", "ErrorID"), ("class", "AnomalyClass"),
                                  ("path", "Path"), ("description", "Description"))}
        anomalies.append(entry)
    result = _text(root, "/*/*[local-name()='Form']/*[local-name()='HandlingResult']/"
                         "*[local-name()='ResultCode']") or _text(
        root, _q("HandlingResult", "ResultCode"))
    return Notification(
        reference=_text(root, _q("Reference", "ReferenceNbr")),
        file_name=_text(root, _q("Reference", "FileName")),
        result=int(result) if result and result.isdigit() else None,
        anomalies=tuple(anomalies),
    )


@dataclass
class ReplyPoller:
    """Fetches complete reply sets of one channel; `poll` is safe to run again anytime."""

    channel: ChannelConfig
    journal: Journal
    transport: SftpChannel
    clock: Callable[[], float] = time.time
    _warned: set[str] = field(default_factory=set)
    _trust: list[x509.Certificate] | None = None

    def __post_init__(self) -> None:
        self.log = logs.get("flad.replies").bind(channel=self.channel.name)
        if self.channel.reply_trust is not None:
            self._trust = signing.load_certificates(self.channel.reply_trust)

    def poll(self) -> int:
        """One pass over OUT/OUTTEST; returns the number of sets delivered."""
        delivered = 0
        self.transport.ensure_connected()
        for environment in self.channel.environments():
            folder = REMOTE_OUT[environment]
            try:
                delivered += self._poll_folder(environment, folder)
            except RemoteNotFound:
                if folder not in OPTIONAL_FOLDERS:
                    raise
                # a server without OUTTEST-S: no error for the other environments
        return delivered

    def _poll_folder(self, environment: str, folder: str) -> int:
        listing = dict(self.transport.listdir(folder))
        sets: dict[str, dict[str, naming.FileName]] = defaultdict(dict)
        # a reply dated later than today is refused (ACRF-111); a day of slack for the
        # platform's time zone (Brussels) against this machine's
        latest = datetime.date.today() + datetime.timedelta(days=1)
        for name in listing:
            try:
                parsed = naming.parse(name, today=latest)
            except naming.InvalidName as exc:
                if name not in self._warned:
                    self._warned.add(name)
                    self.log.warning("reply_name_skipped", folder=folder, reason=str(exc))
                continue
            sets[parsed.set_key][name] = parsed
        complete = {k: v for k, v in sets.items()
                    if any(p.type == "GO" for p in v.values())}
        # receipts first: a notification is tied to its submission through the receipt
        order = sorted(complete, key=lambda k: (k.split(".")[0] != "ACRF", k))
        count = 0
        for set_key in order:
            files = complete[set_key]
            state = self.journal.reply_set_state(self.channel.name, folder, set_key)
            if state == "removed":
                continue  # listed again before the removal became visible: nothing to do
            if state != "delivered":  # absent, or `delivering` when a crash interrupted it
                if not self._deliver(environment, folder, set_key, files, listing):
                    continue
                count += 1
            if self.channel.remove_after_download:
                self._remove(folder, set_key, files)
        return count

    def _deliver(self, environment: str, folder: str, set_key: str,
                 files: dict[str, naming.FileName], sizes: dict[str, int]) -> bool:
        """Download, check, then move into the inbox; each set reaches the inbox once.

        The journal says `delivering` before the first file moves from the staging
        folder into the inbox: after a crash from there on, the set is finished from
        what is still staged and never downloaded again, so a reader who already took
        part of it never sees it twice.
        """
        started = time.monotonic()
        inbox = self.channel.inbox / environment
        staging = self.channel.inbox / INCOMING / f"{folder}.{set_key}"
        names = sorted(files, key=lambda n: (files[n].type == "GO", n))
        resuming = self.journal.reply_set_state(
            self.channel.name, folder, set_key) == "delivering"
        try:
            if not resuming:
                if not self._download(folder, set_key, files, sizes, staging):
                    return False
                self.log.info("reply_downloaded", folder=folder, set_key=set_key,
                              files=names, duration_ms=int((time.monotonic() - started) * 1000))
                # correlation is idempotent: a crash before `delivering` repeats it
                self._correlate(staging, files)
                self.journal.record_reply_set(self.channel.name, folder, set_key, names,
                                              "delivering")
                faults.point("before_reply_rename")
            inbox.mkdir(parents=True, exist_ok=True)
            for name in names:  # data and FS first, GO last
                if (staging / name).exists():
                    if files[name].type == "GO":
                        durable.fsync_dir(inbox)
                    os.replace(staging / name, inbox / name)
            durable.fsync_dir(inbox)
            if staging.exists():
                staging.rmdir()
        except OSError as exc:
            if not resuming and self.journal.reply_set_state(
                    self.channel.name, folder, set_key) != "delivering":
                shutil.rmtree(staging, ignore_errors=True)
            self.log.error("reply_delivery_failed", folder=folder, set_key=set_key,
                           error=exc.strerror or str(exc),
                           hint="nothing is removed from the server; tried again next poll")
            return False
        self.journal.record_reply_set(self.channel.name, folder, set_key, names, "delivered")
        self.log.info("reply_delivered", folder=folder, set_key=set_key, files=names)
        faults.point("after_reply_delivery")
        return True

    def _download(self, folder: str, set_key: str, files: dict[str, naming.FileName],
                  sizes: dict[str, int], staging: Path) -> bool:
        """The set into its staging folder, durable; False when it must not be delivered."""
        if staging.exists():
            shutil.rmtree(staging)  # a download a crash interrupted
        staging.mkdir(parents=True)
        for name in files:
            self.transport.get_file(f"{folder}/{name}", staging / name)
            if (staging / name).stat().st_size != sizes[name]:
                raise OSError(0, f"{name} changed size while downloading")
            faults.point("during_reply_download")
        durable.fsync_dir(staging)
        faults.point("after_reply_download")
        problem = self._verify(staging, files)
        if problem is not None:
            if set_key not in self._warned:
                self._warned.add(set_key)
                self.log.error("reply_untrusted", folder=folder, set_key=set_key,
                               reason=problem)
            shutil.rmtree(staging, ignore_errors=True)
            return False
        return True

    def _verify(self, staging: Path, files: dict[str, naming.FileName]) -> str | None:
        if self._trust is None:
            return None
        for name, parsed in files.items():
            if parsed.type not in DATA_TYPES:
                continue
            fs_name = str(parsed.with_type("FS"))
            if fs_name not in files:
                return f"{name} has no FS signature in its set"
            try:
                signing.verify_fs((staging / name).read_bytes(),
                                  (staging / fs_name).read_bytes(), trusted=self._trust)
            except signing.SignatureInvalid as exc:
                return f"{name}: {exc}"
        return None

    def _remove(self, folder: str, set_key: str, files: dict[str, naming.FileName]) -> None:
        # the GO goes first: a half-removed set is never seen as complete again
        for name in sorted(files, key=lambda n: (files[n].type != "GO", n)):
            self.transport.remove(f"{folder}/{name}")
        self.journal.record_reply_removed(self.channel.name, folder, set_key)
        self.log.info("reply_removed", folder=folder, set_key=set_key)

    def _correlate(self, inbox: Path, files: dict[str, naming.FileName]) -> None:
        for name, parsed in sorted(files.items()):
            if parsed.type != "FO":
                continue
            try:
                data = (inbox / name).read_bytes()
                if parsed.application == "ACRF":
                    self._on_receipt(name, parse_receipt(data))
                elif parsed.application == "NOTI":
                    self._on_notification(name, parse_notification(data))
                else:
                    self.log.info("reply_unknown_type", file=name)
            except (xmlcheck.XmlRejected, OSError, ValueError) as exc:
                self.log.warning("reply_unreadable", file=name, error=str(exc))

    def _on_receipt(self, name: str, receipt: Receipt) -> None:
        sub = (self.journal.find_sent(self.channel.name, receipt.file_name)
               if receipt.file_name else None)
        if sub is None or receipt.accepted is None:
            self.log.warning("reply_unmatched", file=name, names=receipt.file_name)
            return
        detail = " ".join(f"{receipt.error_id or ''} {receipt.description or ''}".split())
        self.journal.record_receipt(sub.id, accepted=receipt.accepted,
                                    error_id=receipt.error_id, reference=receipt.reference,
                                    receipt_name=name, detail=detail or None)
        if receipt.accepted:
            self.log.info("submission_acknowledged", submission=sub.id, fi_name=sub.fi_name,
                          reference=receipt.reference)
        else:
            self.log.warning("submission_refused", submission=sub.id, fi_name=sub.fi_name,
                             error_id=receipt.error_id, reason=receipt.description)

    def _on_notification(self, name: str, noti: Notification) -> None:
        sub = None
        if noti.reference:
            sub = self.journal.find_by_reference(self.channel.name, noti.reference)
        if sub is None and noti.file_name:
            sub = self.journal.find_sent(self.channel.name, noti.file_name)
        if sub is None:
            self.log.warning("reply_unmatched", file=name, reference=noti.reference)
            return
        self.journal.record_notification(sub.id, result=noti.result, blocking=noti.blocking,
                                         other=noti.other, anomalies=noti.anomalies,
                                         noti_name=name)
        self.log.info("submission_notified", submission=sub.id, fi_name=sub.fi_name,
                      result=noti.result, blocking=noti.blocking, other=noti.other)
