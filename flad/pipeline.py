"""Moves one submission through its states: check, prepare, upload, archive.

Each step starts from what the journal says and records its result only after the
effect is durable, so a crash between any two lines is resumed by running `advance`
again. The one step that must never be repeated blindly, the GO, is resolved by
looking at the server.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from flad import durable, faults, identity, journal, logs, outbox, signing, xmlcheck
from flad.config import ApplicationConfig, ChannelConfig, DaemonConfig
from flad.journal import Journal, Submission
from flad.transport import RemotePermissionDenied, SftpChannel

ENV_LETTER = {"test": "T", "production": "R"}
REMOTE_IN = {"test": "INTEST", "production": "IN"}


class Rejected(Exception):
    """The file itself is wrong: it goes back to the payroll side with this reason."""


def local_date(clock: Callable[[], float]) -> str:
    return datetime.datetime.fromtimestamp(clock()).strftime("%Y%m%d")


@dataclass
class FileChecker:
    """Everything flad checks about a file's content before it gets a name.

    The XSDs are compiled once, when the checker is made: a broken XSD is a
    configuration problem that stops the start-up, never a reason to refuse files.
    """

    channel: ChannelConfig
    _schemas: dict[str, etree.XMLSchema | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for app in self.channel.applications:
            self._schemas[app.name] = xmlcheck.load_schema(app.xsd) if app.xsd else None

    def schema(self, app: ApplicationConfig) -> etree.XMLSchema | None:
        return self._schemas.get(app.name)

    def check(self, app: ApplicationConfig, environment: str, data: bytes) -> tuple[str, ...]:
        """Raises Rejected with a one-line reason; returns warnings when accepted."""
        if environment == "production" and not self.channel.production:
            raise Rejected("this channel may not send production files (production = false "
                           "in flad's configuration): drop the file under test/ instead")
        try:
            doc = xmlcheck.check_document(
                data, schema=self.schema(app), root_element=app.root_element,
                employer_xpath=app.employer_xpath, sender_xpath=app.sender_xpath,
                max_bytes=app.max_file_bytes)
        except xmlcheck.XmlRejected as exc:
            raise Rejected(str(exc)) from None
        verdict = identity.check_identity(
            quality=self.channel.quality, company_id=self.channel.company_id,
            employers=doc.employers, senders=doc.senders, mandates=self.channel.mandates)
        if not verdict.ok:
            raise Rejected(verdict.reason or "the enterprise numbers in the file are not "
                           "allowed on this channel")
        return verdict.warnings


class ChannelPipeline:
    """The steps of one channel; a worker calls `advance` until nothing is open."""

    def __init__(self, channel: ChannelConfig, daemon: DaemonConfig, journal_: Journal,
                 transport: SftpChannel, signer: signing.Signer | None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.channel = channel
        self.daemon = daemon
        self.journal = journal_
        self.transport = transport
        self.signer = signer
        self.clock = clock
        self.checker = FileChecker(channel)
        self.log = logs.get("flad.pipeline").bind(channel=channel.name)

    # -- the state machine ---------------------------------------------------------

    def advance(self, sub: Submission, data: bytes | None = None) -> Submission:
        """Run every step left for `sub`; transport errors propagate for the retry loop."""
        if sub.state == journal.RECEIVED:
            prepared = self.check_and_prepare(sub, data)
            if prepared is None:
                return self._reload(sub)
            sub = prepared
        if sub.state in (journal.PREPARED, journal.UPLOADING):
            self.upload(sub)
            sub = self._reload(sub)
        if sub.state == journal.SENT:
            self.archive(sub)
        return sub

    def _reload(self, sub: Submission) -> Submission:
        fresh = self.journal.get(sub.id)
        assert fresh is not None
        return fresh

    def check_and_prepare(self, sub: Submission, data: bytes | None) -> Submission | None:
        log = self.log.bind(submission=sub.id, drop_name=sub.drop_name)
        app = self.channel.application(sub.application)
        try:
            if app is None:
                raise Rejected(f"no application {sub.application!r} is configured for this "
                               "channel")
            if data is None:
                data = self._read_spool(sub, app)
            warnings = self.checker.check(app, sub.environment, data)
            if self.channel.needs_signature(sub.environment) and self.signer is None:
                raise Rejected("this channel has no signing certificate configured, and "
                               f"{sub.environment} files need an FS signature")
            if not sub.force_send:
                earlier = self.journal.find_duplicate(sub, self.daemon.duplicate_window_days)
                if earlier is not None:
                    when = datetime.datetime.fromtimestamp(earlier.received_at)
                    raise Rejected(
                        f"the same content was already sent as {earlier.fi_name} on "
                        f"{when:%Y-%m-%d %H:%M} (submission {earlier.id}); to send it again "
                        f"anyway: flad resend {sub.id}")
        except Rejected as exc:
            self.reject(sub, str(exc))
            return None
        for warning in warnings:
            log.warning("identity_warning", warning=warning)
        assert app is not None
        return self.prepare(sub, app, data)

    def _read_spool(self, sub: Submission, app: ApplicationConfig) -> bytes:
        path = Path(sub.spool_path)
        try:
            size = path.stat().st_size
            if size > app.max_file_bytes:
                raise Rejected(f"file is {size} bytes, larger than the limit of "
                               f"{app.max_file_bytes} bytes")
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except PermissionError:
            raise Rejected("flad may not read the file (permission denied): give the flad "
                           "user read access") from None

    def prepare(self, sub: Submission, app: ApplicationConfig, data: bytes) -> Submission:
        started = time.monotonic()
        signed = self.channel.needs_signature(sub.environment)
        fs_content = (signing.make_fs(data, self.signer, self.channel.fs_line_format)
                      if signed and self.signer is not None else None)
        prepared = self.journal.prepare(
            sub.id, sender=self.channel.sender_id, file_date=local_date(self.clock),
            environment_letter=ENV_LETTER[sub.environment], application_code=app.code,
            signed=signed)
        faults.point("after_sequence")
        if fs_content is not None and prepared.fs_name:
            durable.write_file(self._fs_path(prepared), fs_content, 0o600)
        self.log.info("submission_prepared", submission=sub.id, drop_name=sub.drop_name,
                      fi_name=prepared.fi_name, fs_name=prepared.fs_name,
                      duration_ms=_ms(started))
        return prepared

    def _fs_path(self, sub: Submission) -> Path:
        """Next to the spooled FI, hidden: spool recovery must never take it for a drop."""
        assert sub.fs_name
        spool = Path(sub.spool_path)
        return spool.with_name(f".{spool.name}.{sub.fs_name}")

    def _ensure_fs(self, sub: Submission) -> Path:
        """The FS file, made again if a crash came between the journal and the write."""
        path = self._fs_path(sub)
        if not path.exists():
            assert self.signer is not None
            data = Path(sub.spool_path).read_bytes()
            durable.write_file(path, signing.make_fs(data, self.signer,
                                                     self.channel.fs_line_format), 0o600)
        return path

    def upload(self, sub: Submission) -> None:
        assert sub.fi_name and sub.go_name
        folder = REMOTE_IN[sub.environment]
        log = self.log.bind(submission=sub.id, fi_name=sub.fi_name)
        self.transport.ensure_connected()
        if (sub.state == journal.UPLOADING and sub.upload_step == "go"
                and self._go_already_sent(sub, folder)):
            log.info("go_resolved_from_server", go_name=sub.go_name)
            self.journal.mark_sent(sub.id)
            return
        started = time.monotonic()
        try:
            self.journal.mark_uploading(sub.id, "data")
            log.info("upload_started", size=sub.size)
            faults.point("before_fi")
            data: list[tuple[Path | bytes, str]] = [
                (Path(sub.spool_path), f"{folder}/{sub.fi_name}")]
            if sub.fs_name:
                data.append((self._ensure_fs(sub), f"{folder}/{sub.fs_name}"))
            # FI and FS travel together (one round trip), each checked by its remote size;
            # the GO only goes once both are whole on the server
            self.transport.put_files(data)
            faults.point("before_go")
            self.journal.mark_uploading(sub.id, "go")
            self.transport.put_bytes(b"", f"{folder}/{sub.go_name}")
            faults.point("after_go")
        except RemotePermissionDenied as exc:
            self.journal.mark_failed(sub.id, f"the server refused the upload: {exc}")
            log.error("upload_failed", error=str(exc))
            return
        self.journal.mark_sent(sub.id)
        log.info("go_sent", go_name=sub.go_name, fs_name=sub.fs_name,
                 duration_ms=_ms(started))

    def _go_already_sent(self, sub: Submission, folder: str) -> bool:
        """After a crash during the GO step: did the GO reach the server?

        The GO is there, or the data file is gone (the platform took the set): sent.
        The data file is there without GO: the GO never arrived, send it.
        """
        assert sub.fi_name and sub.go_name
        if self.transport.size(f"{folder}/{sub.go_name}") is not None:
            return True
        return self.transport.size(f"{folder}/{sub.fi_name}") is None

    # -- endings -------------------------------------------------------------------

    def archive(self, sub: Submission) -> None:
        """Keep FI and FS under their sent names; idempotent (runs again after a crash)."""
        spool = Path(sub.spool_path)
        if not spool.exists():
            return
        target_dir = outbox.sent_folder(self.channel, sub.environment)
        assert sub.fi_name
        # Not synced file by file: the journal already says `sent`, and a move lost in a
        # crash leaves the file in the spool, where start-up archives it again.
        if sub.fs_name:
            fs = self._fs_path(sub)
            if fs.exists():
                durable.move(fs, target_dir / sub.fs_name, sync_folders=False)
        durable.move(spool, target_dir / sub.fi_name, sync_folders=False)

    def reject(self, sub: Submission, reason: str) -> None:
        reason = " ".join(reason.split())  # one line, always
        target_dir = outbox.rejected_folder(self.channel, sub.environment, sub.application)
        target_dir.mkdir(parents=True, exist_ok=True)
        target = durable.free_name(target_dir, sub.drop_name, f"{sub.id}")
        self.journal.mark_rejected(sub.id, reason, str(target))
        self.finish_rejection(self._reload(sub))
        self.log.warning("file_rejected", submission=sub.id, drop_name=sub.drop_name,
                         reason=reason, rejected_path=str(target))

    def finish_rejection(self, sub: Submission) -> None:
        """Move the file next to its reason; idempotent (runs again after a crash)."""
        assert sub.rejected_path
        target = Path(sub.rejected_path)
        durable.write_file(target.with_name(target.name + ".reason.txt"),
                           f"{sub.error}\n".encode())
        spool = Path(sub.spool_path)
        if spool.exists() and spool != target:
            durable.move(spool, target)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

