"""Moves one submission through its states: check, prepare, upload, archive.

Each step starts from what the journal says and records its result only after the
effect is durable, so a crash between any two lines is resumed by running `advance`
again. The one step that must never be repeated blindly, the GO, is resolved by
looking at the server.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from flad import (
    durable,
    faults,
    identity,
    journal,
    logs,
    memory,
    outbox,
    sentforms,
    signing,
    xmlcheck,
)
from flad.config import ApplicationConfig, ChannelConfig, DaemonConfig
from flad.journal import Journal, Submission
from flad.platform import ENV_LETTER, OPTIONAL_FOLDERS, REMOTE_IN
from flad.remote import Remote, RemoteNotFound, RemotePermissionDenied

#: Files at least this big are hashed (when the claim left it) and signed while they
#: are checked, not after, and the memory of their XML tree is handed back to the
#: system once checked.
BIG_FILE_BYTES = outbox.BIG_FILE_BYTES


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
    _split: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for app in self.channel.applications:
            self._schemas[app.name] = xmlcheck.load_schema(app.xsd) if app.xsd else None
            # big files of a profile are validated form by form where the XSD allows it
            self._split[app.name] = bool(app.xsd and app.profile and app.employer_xpath is None
                                         and xmlcheck.forms_validate_alone(app.xsd, app.profile))

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
                max_bytes=app.max_file_bytes, profile=app.profile,
                split_forms=self._split.get(app.name, False))
        except xmlcheck.XmlRejected as exc:
            raise Rejected(str(exc)) from None
        verdict = identity.check_forms(
            quality=self.channel.quality, company_id=self.channel.company_id,
            noss_number=self.channel.noss_number, forms=doc.forms, senders=doc.senders,
            mandates=self.channel.mandates)
        if not verdict.ok:
            raise Rejected(verdict.reason or "the enterprise numbers in the file are not "
                           "allowed on this channel")
        return verdict.warnings


@dataclass(frozen=True)
class Content:
    """What is already in memory for one submission: its bytes and its FS."""

    data: bytes | None = None
    fs: bytes | None = None


@dataclass(frozen=True)
class Checked:
    """A file that passed every check and is signed, waiting for its number."""

    sub: Submission
    app: ApplicationConfig
    data: bytes
    fs: bytes | None
    sha256: str  # of `data`


class ChannelPipeline:
    """The steps of one channel; a worker calls `advance` until nothing is open."""

    def __init__(self, channel: ChannelConfig, daemon: DaemonConfig, journal_: Journal,
                 transport: Remote, signer: signing.Signer | None, *,
                 clock: Callable[[], float] = time.time,
                 config_path: Path | None = None) -> None:
        self.channel = channel
        #: named in the commands that reasons suggest, so that they work as printed
        self.config_arg = shlex.quote(str(config_path)) if config_path else "CONFIG"
        self.daemon = daemon
        self.journal = journal_
        self.transport = transport
        self.signer = signer
        self.clock = clock
        self.checker = FileChecker(channel)
        # big files are hashed and signed here while the pool's thread checks them
        self._side_thread = ThreadPoolExecutor(1, thread_name_prefix=f"side-{channel.name}")
        self.log = logs.get("flad.pipeline").bind(channel=channel.name)

    # -- the state machine ---------------------------------------------------------

    def advance(self, sub: Submission, content: Content | None = None) -> Submission:
        """Run every step left for `sub`; transport errors propagate for the retry loop."""
        content = content or Content()
        if sub.state == journal.RECEIVED:
            prepared = self.check_and_prepare(sub, content.data)
            if prepared is None:
                return self._reload(sub)
            sub = prepared
        if sub.state in (journal.PREPARED, journal.UPLOADING):
            self.upload_many([sub], {sub.id: content})
            sub = self._reload(sub)
        if sub.state == journal.SENT:
            self.archive(sub)
        return sub

    def _reload(self, sub: Submission) -> Submission:
        fresh = self.journal.get(sub.id)
        assert fresh is not None
        return fresh

    def check_and_prepare(self, sub: Submission, data: bytes | None) -> Submission | None:
        checked = self.check(sub, data)
        if checked is None:
            return None
        prepared = self.prepare_many([checked])
        return prepared[0] if prepared else None

    def check(self, sub: Submission, data: bytes | None) -> Checked | None:
        """Check and sign one received file; None when it was refused (with its reason).

        Runs in the prepare pool, beside the uploads. The signature is made here and
        written next to the spooled file (not synced: `_ensure_fs` verifies it before
        any reuse) before the journal gives the file a number: the numbering is the
        worker's, for many files in one transaction.
        """
        log = self.log.bind(submission=sub.id, drop_name=sub.drop_name)
        app = self.channel.application(sub.application)
        signing_early: Future[bytes] | None = None
        hashing: Future[str] | None = None
        try:
            if app is None:
                raise Rejected(f"no application {sub.application!r} is configured for this "
                               "channel")
            if data is None:
                data = self._read_spool(sub, app)
            signed = self.channel.needs_signature(sub.environment)
            if signed and self.signer is None:
                raise Rejected("this channel has no signing certificate configured, and "
                               f"{sub.environment} files need an FS signature")
            if len(data) >= BIG_FILE_BYTES:
                # hashing a big file takes a while, and it releases the GIL: hash and
                # sign it while it is checked (both dropped if the check refuses it)
                if not sub.sha256:
                    hashing = self._side_thread.submit(_sha256, data)
                if signed:
                    signing_early = self._side_thread.submit(self._make_fs, data)
            warnings = self.checker.check(app, sub.environment, data)
        except Rejected as exc:
            refusal: str | None = str(exc)
        else:
            refusal = None
        # the exception (and its traceback, which held the XML tree) is gone by now
        if data is not None and len(data) >= BIG_FILE_BYTES:
            memory.release_free_memory()
        if refusal is not None:
            for early in (hashing, signing_early):
                if early is not None:
                    early.cancel()
            self.reject(sub, refusal)
            return None
        assert app is not None and data is not None  # else refused above
        for warning in warnings:
            log.warning("identity_warning", warning=warning)
        fs = None
        if signing_early is not None:
            fs = signing_early.result()
        elif signed:
            fs = self._make_fs(data)
        if fs is not None:
            # not synced: the upload takes it from memory, and `_ensure_fs` checks it
            # before any later use (a machine crash may leave it torn)
            durable.write_file(self._fs_path(sub), fs, 0o600, sync=False)
        sha256 = hashing.result() if hashing is not None else sub.sha256 or _sha256(data)
        self._record_forms(sub, data)
        return Checked(sub, app, data, fs, sha256)

    def _record_forms(self, sub: Submission, data: bytes) -> None:
        """The header of every form of the file: a reply without FileReference names them."""
        forms = sentforms.extract(data) if sentforms.may_hold_forms(data) else ()
        if forms or self.journal.sent_forms(sub.id):
            self.journal.record_sent_forms(sub.id, [journal.SentFormRow(
                f.identification, f.creation_date, f.creation_hour, f.declarant_reference)
                for f in forms])

    def close(self) -> None:
        self._side_thread.shutdown(wait=False, cancel_futures=True)

    def _make_fs(self, data: bytes) -> bytes:
        assert self.signer is not None
        return signing.make_fs(data, self.signer, self.channel.fs_line_format)

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

    def prepare_many(self, checked: Sequence[Checked]) -> list[Submission]:
        """Number checked files in one journal transaction; refuse duplicates.

        Returns the submissions now `prepared`, in order.
        """
        if not checked:
            return []
        started = time.monotonic()
        date = local_date(self.clock)
        requests = [journal.Naming(
            c.sub.id, sender=self.channel.sender_id, file_date=date,
            environment_letter=ENV_LETTER[c.sub.environment], application_code=c.app.code,
            signed=c.fs is not None, sha256=c.sha256) for c in checked]
        outcomes = self.journal.prepare_many(
            requests, duplicate_window_days=self.daemon.duplicate_window_days)
        prepared: list[Submission] = []
        for outcome in outcomes:
            sub = outcome.before
            if outcome.prepared is None:
                assert outcome.earlier is not None
                earlier = outcome.earlier
                when = datetime.datetime.fromtimestamp(earlier.received_at)
                self.reject(sub, f"the same content was already sent as {earlier.fi_name} "
                                 f"on {when:%Y-%m-%d %H:%M} (submission {earlier.id}); to "
                                 f"send it again anyway: flad resend -c "
                                 f"{self.config_arg} {sub.id}")
                continue
            faults.point("after_sequence")
            new = outcome.prepared
            prepared.append(new)
            self.log.info("submission_prepared", submission=new.id, drop_name=new.drop_name,
                          fi_name=new.fi_name, fs_name=new.fs_name, sha256=new.sha256,
                          duration_ms=_ms(started))
        return prepared

    def _fs_path(self, sub: Submission) -> Path:
        """Next to the spooled FI, hidden: spool recovery must never take it for a drop.

        Named before the submission has a number: the FS is made while it is checked.
        """
        spool = Path(sub.spool_path)
        return spool.with_name(f".{spool.name}.fs")

    def _ensure_fs(self, sub: Submission, data: bytes | None) -> bytes:
        """The FS kept in the spool if it still signs the FI, else made again.

        Used when the FS is not in memory (after a restart, or when the memory for
        contents was full): the spooled one was written without a sync, so it is
        verified before it is trusted. Without a signer (signing removed from the
        configuration since), the spooled one is all there is.
        """
        path = self._fs_path(sub)
        if data is None:
            data = Path(sub.spool_path).read_bytes()
        try:
            fs = path.read_bytes()
            signing.verify_fs(data, fs, certificate=(
                self.signer.certificate if self.signer is not None else None))
            return fs
        except (FileNotFoundError, signing.SignatureInvalid) as exc:
            if self.signer is None:
                raise signing.SigningError(
                    f"{sub.fs_name}: no valid signature kept in the spool ({exc}) and no "
                    "signing certificate configured any more") from None
        fs = signing.make_fs(data, self.signer, self.channel.fs_line_format)
        durable.write_file(path, fs, 0o600, sync=False)
        self.log.info("signature_made_again", submission=sub.id, fs_name=sub.fs_name)
        return fs

    def upload_many(self, subs: Sequence[Submission],
                    contents: Mapping[int, Content] | None = None, *,
                    stopping: Callable[[], bool] = lambda: False) -> None:
        """Upload prepared submissions together: their FI and FS, then their GOs.

        One journal transaction marks them all `data`, one pipelined round sends every
        FI and FS (each checked by its remote size), one transaction marks them `go`,
        one round sends the GOs, one transaction marks them `sent`. A GO still leaves
        only after its own FI and FS are whole on the server and the journal says `go`.
        A submission whose GO may have left before a crash is resolved from the server.
        """
        contents = contents or {}
        self.transport.ensure_connected()
        todo: list[Submission] = []
        for sub in subs:
            assert sub.fi_name and sub.go_name
            if (sub.state == journal.UPLOADING and sub.upload_step == "go"
                    and self._go_already_sent(sub, REMOTE_IN[sub.environment])):
                self.log.info("go_resolved_from_server", submission=sub.id,
                              fi_name=sub.fi_name, go_name=sub.go_name)
                self._keep_whole_fs(sub)
                self.journal.mark_sent(sub.id)
            else:
                todo.append(sub)
        if not todo:
            return
        ids = [sub.id for sub in todo]
        started = time.monotonic()
        try:
            self.journal.mark_uploading_many(ids, "data")
            files: list[tuple[Path | bytes, str]] = []
            size = 0
            for sub in todo:
                folder = REMOTE_IN[sub.environment]
                content = contents.get(sub.id) or Content()
                files.append((content.data if content.data is not None
                              else Path(sub.spool_path), f"{folder}/{sub.fi_name}"))
                if sub.fs_name:
                    fs = content.fs if content.fs is not None else self._ensure_fs(
                        sub, content.data)
                    files.append((fs, f"{folder}/{sub.fs_name}"))
                size += sub.size
            for sub in todo:
                self.log.info("upload_started", submission=sub.id, fi_name=sub.fi_name,
                              size=sub.size, batch=len(todo), batch_bytes=size)
            for _ in todo:  # the crash points count submissions, batch or not
                faults.point("before_fi")
            # FI and FS travel together (one round trip for all of them); the GOs only
            # go once every one is whole on the server
            self.transport.put_files(files)
            for _ in todo:
                faults.point("before_go")
            if stopping():  # safe to leave them in `data`: the next start sends FI and FS again
                self.log.info("upload_interrupted", submissions=ids, reason="stopping")
                return
            self.journal.mark_uploading_many(ids, "go")
            self.transport.put_files(
                [(b"", f"{REMOTE_IN[sub.environment]}/{sub.go_name}") for sub in todo])
            for _ in todo:
                faults.point("after_go")
        except (RemotePermissionDenied, RemoteNotFound) as exc:
            if isinstance(exc, RemoteNotFound) and not any(
                    REMOTE_IN[sub.environment] in OPTIONAL_FOLDERS for sub in todo):
                raise  # IN or INTEST missing: the channel's own problem
            if len(todo) > 1:  # which one? one by one tells, and fails only that one
                for sub in todo:
                    fresh = self._reload(sub)
                    if fresh.state in (journal.PREPARED, journal.UPLOADING):
                        self.upload_many([fresh], contents)
                return
            folder = REMOTE_IN[todo[0].environment]
            why = (f"the server refused the upload: {exc}"
                   if isinstance(exc, RemotePermissionDenied) else
                   f"the server has no {folder} folder, so it takes no files of this "
                   f"environment ({exc})")
            self.journal.mark_failed(todo[0].id, why)
            self.log.error("upload_failed", submission=todo[0].id, fi_name=todo[0].fi_name,
                           error=str(exc))
            return
        self.journal.mark_sent_many(ids)
        duration = _ms(started)
        for sub in todo:
            self.log.info("go_sent", submission=sub.id, fi_name=sub.fi_name,
                          go_name=sub.go_name, fs_name=sub.fs_name, batch=len(todo),
                          duration_ms=duration)

    def _keep_whole_fs(self, sub: Submission) -> None:
        """Before a submission sent before a crash is archived (resolved from the server,
        or found `sent` at start-up): its spooled FS was never synced, so make sure the
        one kept signs the FI (a torn one is made again)."""
        if not sub.fs_name or self.signer is None:
            return
        try:
            self._ensure_fs(sub, None)
        except (OSError, signing.SigningError) as exc:  # the GO is out: archive anyway
            self.log.error("signature_check_failed", submission=sub.id,
                           fs_name=sub.fs_name, error=str(exc))

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

    def archive(self, sub: Submission, *, recovering: bool = False) -> None:
        """Keep FI and FS under their sent names; idempotent (runs again after a crash)."""
        spool = Path(sub.spool_path)
        if not spool.exists():
            return
        target_dir = outbox.sent_folder(self.channel, sub.environment)
        assert sub.fi_name
        # Not synced file by file: the journal already says `sent`, and a move lost in a
        # crash leaves the file in the spool, where start-up archives it again.
        if recovering:
            self._keep_whole_fs(sub)
        fs = self._fs_path(sub)
        if sub.fs_name and fs.exists():
            durable.move(fs, target_dir / sub.fs_name, sync_folders=False)
        durable.move(spool, target_dir / sub.fi_name, sync_folders=False)

    def reject(self, sub: Submission, reason: str) -> None:
        """Journal the refusal with its reason, then move the file next to it.

        The journal comes first: a rejected folder that cannot be written must not
        leave the file `received`, to be checked (and refused) again at every turn.
        The move is finished at the next start.
        """
        reason = " ".join(reason.split())  # one line, always
        target_dir = outbox.rejected_folder(self.channel, sub.environment, sub.application)
        target = durable.free_name(target_dir, sub.drop_name, f"{sub.id}")
        self.journal.mark_rejected(sub.id, reason, str(target))
        self.log.warning("file_rejected", submission=sub.id, drop_name=sub.drop_name,
                         reason=reason, rejected_path=str(target))
        try:
            self.finish_rejection(self._reload(sub))
        except OSError as exc:
            self.log.error("rejected_file_not_moved", submission=sub.id,
                           drop_name=sub.drop_name, error=exc.strerror or str(exc),
                           spool_path=sub.spool_path,
                           action="it stays in the spool; flad moves it at its next start")

    def finish_rejection(self, sub: Submission) -> None:
        """Move the file next to its reason; idempotent (runs again after a crash)."""
        assert sub.rejected_path
        target = Path(sub.rejected_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        durable.write_file(target.with_name(target.name + ".reason.txt"),
                           f"{sub.error}\n".encode())
        spool = Path(sub.spool_path)
        if spool.exists() and spool != target:
            with contextlib.suppress(FileNotFoundError):  # signed, then found a duplicate
                self._fs_path(sub).unlink()
            durable.move(spool, target)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

