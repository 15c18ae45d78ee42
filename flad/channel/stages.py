"""The stages of a channel over a batch: check, number, upload, archive.

Each stage starts from what the journal says and records its result only after the
effect is durable, so a crash between any two lines is resumed by running the stage
again. A single file is a batch of one: there is no other path. The one step that
must never be repeated blindly, the GO, is resolved by looking at the server.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import shlex
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from flad import faults, journal, logs, memory, outbox, sentforms, signing, spool
from flad.channel import archive as archive_mod
from flad.channel.retry import one_by_one
from flad.channel.signatures import SpoolSignatures
from flad.channel.store import Content
from flad.config import ApplicationConfig, ChannelConfig, DaemonConfig
from flad.filecheck import FileChecker, Rejected
from flad.journal import Journal, Submission
from flad.platform import ENV_LETTER, OPTIONAL_FOLDERS, REMOTE_IN
from flad.remote import Remote, RemoteNotFound, RemotePermissionDenied

#: Files at least this big are hashed (when the claim left it) and signed while they
#: are checked, not after, and the memory of their XML tree is handed back to the
#: system once checked.
BIG_FILE_BYTES = outbox.BIG_FILE_BYTES
#: The states in which a numbered submission still has something to upload.
TO_UPLOAD = (journal.PREPARED, journal.UPLOADING)


def local_date(clock: Callable[[], float]) -> str:
    return datetime.datetime.fromtimestamp(clock()).strftime("%Y%m%d")


@dataclass(frozen=True)
class Checked:
    """A file that passed every check and is signed, waiting for its number."""

    sub: Submission
    app: ApplicationConfig
    data: bytes
    fs: bytes | None
    sha256: str  # of `data`


class Stages:
    """The stages of one channel, written against `remote.Remote`."""

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
        self.signatures = SpoolSignatures(channel, signer)
        self.clock = clock
        self.checker = FileChecker(channel)
        # big files are hashed and signed here while the pool's thread checks them
        self._side_thread = ThreadPoolExecutor(1, thread_name_prefix=f"side-{channel.name}")
        self.log = logs.get("flad.channel").bind(channel=channel.name)

    def close(self) -> None:
        self._side_thread.shutdown(wait=False, cancel_futures=True)

    # -- check ---------------------------------------------------------------------

    def check(self, sub: Submission, data: bytes | None) -> Checked | None:
        """Check and sign one received file; None when it was refused (with its reason).

        Runs in the worker's check pool, beside the uploads. The signature is made here
        and kept next to the spooled file before the journal gives the file a number:
        the numbering is the worker's, for many files in one transaction.
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
            if signed and self.signatures.signer is None:
                raise Rejected("this channel has no signing certificate configured, and "
                               f"{sub.environment} files need an FS signature")
            if len(data) >= BIG_FILE_BYTES:
                # hashing a big file takes a while, and it releases the GIL: hash and
                # sign it while it is checked (both dropped if the check refuses it)
                if not sub.sha256:
                    hashing = self._side_thread.submit(_sha256, data)
                if signed:
                    signing_early = self._side_thread.submit(self.signatures.make, data)
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
            fs = self.signatures.make(data)
        if fs is not None:
            self.signatures.keep(sub, fs)
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

    def _read_spool(self, sub: Submission, app: ApplicationConfig) -> bytes:
        """The spooled bytes, never through a link, and the ones the journal recorded.

        A row left `received` by a crash inside the claimer's refusal of a link or a
        pipe names that entry in the outbox: it is refused here, never opened (a pipe
        opened for reading would block the check for ever). Bytes that are not those
        hashed when the file was taken are refused with the reason.
        """
        path = Path(sub.spool_path)
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise Rejected(f"{sub.drop_name!r} is not a regular file: flad only sends "
                               "files that are written into the outbox, and never follows "
                               "links")
            return spool.read_verified(sub, app.max_file_bytes)
        except ValueError as exc:
            raise Rejected(f"file is {exc.args[0]} bytes, larger than the limit of "
                           f"{app.max_file_bytes} bytes") from None
        except spool.SpoolChanged as exc:
            raise Rejected(str(exc)) from None
        except PermissionError:
            raise Rejected("flad may not read the file (permission denied): give the flad "
                           "user read access") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Rejected(f"{sub.drop_name!r} is a symbolic link, not a regular file: "
                               "flad never follows links") from None
            raise

    def reject(self, sub: Submission, reason: str) -> None:
        spool.reject(self.journal, self.channel, sub, reason)

    # -- number --------------------------------------------------------------------

    def number(self, checked: Sequence[Checked]) -> list[Submission]:
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

    # -- upload --------------------------------------------------------------------

    def upload(self, subs: Sequence[Submission],
               contents: Mapping[int, Content] | None = None, *,
               stopping: Callable[[], bool] = lambda: False) -> None:
        """Upload numbered submissions together: their FI and FS, then their GOs.

        One journal transaction marks them all `data`, one pipelined round sends every
        FI and FS (each checked by its remote size), one transaction marks them `go`,
        one round sends the GOs, one transaction marks them `sent`. A GO still leaves
        only after its own FI and FS are whole on the server and the journal says `go`.
        A submission whose GO may have left before a crash is resolved from the server.
        When the server refuses a file of the batch, the batch goes again one by one,
        and only the file refused alone fails.
        """
        contents = contents or {}
        self.transport.ensure_connected()

        todo = [sub for sub in subs if not self._resolved_from_server(sub)]

        def send(batch: Sequence[Submission]) -> None:
            if len(batch) < len(todo):  # alone, after the batch broke: from the journal
                batch = [s for s in self.journal.get_many([s.id for s in batch])
                         if s.state in TO_UPLOAD and not self._resolved_from_server(s)]
            if batch:
                self._send(batch, contents, stopping)

        if todo:
            one_by_one(todo, send, breaks=self._refused_by_server, fail=self._fail_refused)

    def _resolved_from_server(self, sub: Submission) -> bool:
        """A submission whose GO may have left before a crash: sent if the server says so."""
        assert sub.fi_name and sub.go_name
        if not (sub.state == journal.UPLOADING and sub.upload_step == "go"
                and self._go_already_sent(sub, REMOTE_IN[sub.environment])):
            return False
        self.log.info("go_resolved_from_server", submission=sub.id, fi_name=sub.fi_name,
                      go_name=sub.go_name)
        self.signatures.keep_whole(sub)
        self.journal.mark_sent(sub.id)
        return True

    def _send(self, todo: Sequence[Submission], contents: Mapping[int, Content],
              stopping: Callable[[], bool]) -> None:
        todo = [sub for sub in todo if self._unchanged(sub, contents)]
        if not todo:
            return
        ids = [sub.id for sub in todo]
        started = time.monotonic()
        self.journal.mark_uploading_many(ids, "data")
        files: list[tuple[Path | bytes, str]] = []
        size = 0
        for sub in todo:
            folder = REMOTE_IN[sub.environment]
            content = contents.get(sub.id) or Content()
            files.append((content.data if content.data is not None
                          else Path(sub.spool_path), f"{folder}/{sub.fi_name}"))
            if sub.fs_name:
                fs = content.fs if content.fs is not None else self.signatures.ensure(
                    sub, content.data)
                files.append((fs, f"{folder}/{sub.fs_name}"))
            size += sub.size
        for sub in todo:
            self.log.info("upload_started", submission=sub.id, fi_name=sub.fi_name,
                          size=sub.size, batch=len(todo), batch_bytes=size)
        for _ in todo:  # the crash points count submissions, batch or not
            faults.point("before_fi")
        # FI and FS travel together (one round trip for all of them); the GOs only go
        # once every one is whole on the server
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
        self.journal.mark_sent_many(ids)
        duration = _ms(started)
        for sub in todo:
            self.log.info("go_sent", submission=sub.id, fi_name=sub.fi_name,
                          go_name=sub.go_name, fs_name=sub.fs_name, batch=len(todo),
                          duration_ms=duration)

    def _unchanged(self, sub: Submission, contents: Mapping[int, Content]) -> bool:
        """A file sent from the spool is first compared with the hash it was checked with.

        Bytes held in memory are the ones that were checked; a spooled file is read
        again by the transport, so it is hashed (streamed) first: a mismatch fails the
        submission with the reason, and nothing of it is sent.
        """
        content = contents.get(sub.id)
        if content is not None and content.data is not None:
            return True
        try:
            spool.verify(sub)
        except spool.SpoolChanged as exc:
            reason = str(exc)
        except OSError as exc:
            reason = f"the spooled file cannot be read: {exc.strerror or exc}"
        else:
            return True
        self.journal.mark_failed(sub.id, reason)
        self.log.error("upload_refused", submission=sub.id, fi_name=sub.fi_name,
                       reason=reason)
        return False

    @staticmethod
    def _refused_by_server(exc: Exception, batch: Sequence[Submission]) -> bool:
        """A refusal that may be one file's: permission denied, or an optional folder
        missing. IN or INTEST missing is the channel's own problem, and propagates."""
        if isinstance(exc, RemotePermissionDenied):
            return True
        return isinstance(exc, RemoteNotFound) and any(
            REMOTE_IN[sub.environment] in OPTIONAL_FOLDERS for sub in batch)

    def _fail_refused(self, sub: Submission, exc: Exception) -> None:
        folder = REMOTE_IN[sub.environment]
        why = (f"the server refused the upload: {exc}"
               if isinstance(exc, RemotePermissionDenied) else
               f"the server has no {folder} folder, so it takes no files of this "
               f"environment ({exc})")
        self.journal.mark_failed(sub.id, why)
        self.log.error("upload_failed", submission=sub.id, fi_name=sub.fi_name,
                       error=str(exc))

    def _go_already_sent(self, sub: Submission, folder: str) -> bool:
        """After a crash during the GO step: did the GO reach the server?

        The GO is there, or the data file is gone (the platform took the set): sent.
        The data file is there without GO: the GO never arrived, send it.
        """
        assert sub.fi_name and sub.go_name
        if self.transport.size(f"{folder}/{sub.go_name}") is not None:
            return True
        return self.transport.size(f"{folder}/{sub.fi_name}") is None

    # -- archive -------------------------------------------------------------------

    def archive(self, sub: Submission) -> None:
        archive_mod.archive(self.channel, self.signatures, sub)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
