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
from functools import partial
from pathlib import Path

from cryptography import x509

from flad import durable, faults, logs, naming, replyparse, replyunpack, safedir, signing
from flad.config import ChannelConfig
from flad.errorlabels import load_error_labels
from flad.journal import Journal, SentFormRow, Submission
from flad.platform import OPTIONAL_FOLDERS, REMOTE_OUT
from flad.remote import Remote, RemoteNotFound, TransportError
from flad.replyparse import Reply, ReplyForm

DATA_TYPES = ("FO", "CO")
INCOMING = ".incoming"
#: Reply sets fetched, delivered and removed together: enough to fill a long link's
#: round trips, few enough that the first set is delivered early.
SETS_TOGETHER = 32
#: which result of several forms speaks for a submission: the one a person must see first
_RESULT_PRIORITY = (0, 4, 2, 3, 1)


def combined_result(forms: list[ReplyForm]) -> int | None:
    """One result for the forms of one submission: NOK first, then timeout, proposal, ..."""
    results = {f.result for f in forms if f.result is not None}
    for code in _RESULT_PRIORITY:
        if code in results:
            return code
    return min(results) if results else None


@dataclass
class ReplyPoller:
    """Fetches complete reply sets of one channel; `poll` is safe to run again anytime."""

    channel: ChannelConfig
    journal: Journal
    transport: Remote
    clock: Callable[[], float] = time.time
    #: the platform's list of error codes (`[daemon] error_codes`), for their labels
    error_codes: Path | None = None
    #: sets that could not be delivered (untrusted, or a local error); `flad replies`
    #: exits non-zero when there were any
    failures: int = 0
    #: called between slices of a long poll (the worker uploads what is ready), so a
    #: file dropped meanwhile never waits for a whole backlog of replies
    between_slices: Callable[[], None] | None = None
    _warned: set[str] = field(default_factory=set)
    _trust: list[x509.Certificate] | None = None

    def __post_init__(self) -> None:
        self.log = logs.get("flad.replies").bind(channel=self.channel.name)
        if self.channel.reply_trust is not None:
            self._trust = signing.load_certificates(self.channel.reply_trust)
        self._labels, problem = load_error_labels(self.error_codes)
        if problem is not None:
            self.log.warning("error_codes_unreadable", reason=problem,
                             hint="error codes are shown without their label")

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
        if self.channel.remove_after_download:
            self._finish_removals({k: v for k, v in sets.items() if k not in complete},
                                  folder)
        # receipts first: a notification is tied to its submission through the receipt
        order = sorted(complete, key=lambda k: (k.split(".")[0] != "ACRF", k))
        count = 0
        for start in range(0, len(order), SETS_TOGETHER):
            if start and self.between_slices is not None:
                self.between_slices()
            count += self._poll_sets(environment, folder, order[start:start + SETS_TOGETHER],
                                     complete, listing)
        return count

    def _poll_sets(self, environment: str, folder: str, keys: list[str],
                   complete: dict[str, dict[str, naming.FileName]],
                   listing: dict[str, int]) -> int:
        """A slice of the listing's sets: downloaded together, delivered one by one in
        order, then removed together (every GO before any data file)."""
        states = {k: self.journal.reply_set_state(self.channel.name, folder, k) for k in keys}
        fetched = self._fetch_together(folder, [k for k in keys if states[k] is None],
                                       complete, listing)
        count = 0
        delivered: list[str] = []
        for set_key in keys:
            files = complete[set_key]
            state = states[set_key]
            if state == "removed":
                # Listed again before the removal became visible, or a new set under a
                # name seen before (a sandbox restarted with a fresh root numbers its
                # replies from 1 again). Never delivered twice; said once, not in silence.
                if f"seen:{folder}/{set_key}" not in self._warned:
                    self._warned.add(f"seen:{folder}/{set_key}")
                    self.log.warning(
                        "reply_set_seen_before", folder=folder, set_key=set_key,
                        files=sorted(files),
                        hint="a set of this name was delivered and removed before; it is "
                             "left on the server and not delivered again. If it is a new "
                             "reply under a reused name, fetch it by hand")
                continue
            if state is None and set_key not in fetched:
                continue  # its download failed and said why: tried again next poll
            if state != "delivered":  # absent, or `delivering` when a crash interrupted it
                if not self._deliver(environment, folder, set_key, files, listing):
                    continue
                count += 1
            delivered.append(set_key)
        if self.channel.remove_after_download:
            self._remove_together(folder, {k: complete[k] for k in delivered})
        return count

    def _fetch_together(self, folder: str, keys: list[str],
                        complete: dict[str, dict[str, naming.FileName]],
                        listing: dict[str, int]) -> set[str]:
        """Download the files of new sets in one pipelined batch into their staging
        folders; the sets whose every file arrived whole. A file gone from the server
        (another client took it) or changed meanwhile skips its set for this poll only."""
        items: list[tuple[str, int, Path]] = []
        owner: list[str] = []
        try:
            for set_key in keys:
                staging = self._staging(folder, set_key)
                if staging.exists():
                    shutil.rmtree(staging)  # a download a crash interrupted
                staging.mkdir(parents=True)
                for name in sorted(complete[set_key]):
                    items.append((f"{folder}/{name}", listing[name], staging / name))
                    owner.append(set_key)
            results = self.transport.get_files(items) if items else []
        except OSError as exc:  # local (a full disk, an unwritable inbox): nothing removed
            for set_key in keys:
                shutil.rmtree(self._staging(folder, set_key), ignore_errors=True)
            self.failures += len(keys)
            self.log.error("reply_delivery_failed", folder=folder, sets=len(keys),
                           path=str(exc.filename or self.channel.inbox / INCOMING),
                           error=exc.strerror or str(exc),
                           hint="nothing is removed from the server; tried again next poll")
            return set()
        failed: dict[str, str] = {}
        for (remote, _, _), set_key, result in zip(items, owner, results, strict=True):
            if isinstance(result, TransportError) and set_key not in failed:
                failed[set_key] = str(result)
                event = ("reply_vanished" if isinstance(result, RemoteNotFound)
                         else "reply_download_failed")
                self.log.warning(event, folder=folder, set_key=set_key, file=remote,
                                 error=str(result), hint="skipped for this poll")
            faults.point("during_reply_download")
        for set_key in failed:
            shutil.rmtree(self._staging(folder, set_key), ignore_errors=True)
        return set(keys) - set(failed)

    def _staging(self, folder: str, set_key: str) -> Path:
        return self.channel.inbox / INCOMING / f"{folder}.{set_key}"

    def _remove_together(self, folder: str,
                         sets: dict[str, dict[str, naming.FileName]]) -> None:
        """Remove delivered sets in one pipelined batch: every GO first, so that a set
        half removed by a crash is never seen as complete again."""
        if not sets:
            return
        names = [(k, n) for k, files in sets.items() for n in files if files[n].type == "GO"]
        names += [(k, n) for k, files in sets.items() for n in sorted(files)
                  if files[n].type != "GO"]
        results = self.transport.remove_files([f"{folder}/{n}" for _, n in names])
        failed = {k for (k, _), result in zip(names, results, strict=True)
                  if result is not None}
        for (set_key, name), result in zip(names, results, strict=True):
            if result is not None:
                self.log.warning("reply_remove_failed", folder=folder, set_key=set_key,
                                 file=name, error=str(result),
                                 hint="delivered; its removal is tried again next poll")
        for set_key in sets:
            if set_key not in failed:
                self.journal.record_reply_removed(self.channel.name, folder, set_key)
                self.log.info("reply_removed", folder=folder, set_key=set_key)

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
        staging = self._staging(folder, set_key)
        names = sorted(files, key=lambda n: (files[n].type == "GO", n))
        resuming = self.journal.reply_set_state(
            self.channel.name, folder, set_key) == "delivering"
        try:
            if not resuming:
                if not self._download(folder, set_key, files, sizes, staging):
                    return False
                self.log.info("reply_downloaded", folder=folder, set_key=set_key,
                              files=names, duration_ms=int((time.monotonic() - started) * 1000))
                self._unpack(folder, set_key, staging, files)
                # correlation is idempotent: a crash before `delivering` repeats it
                self._correlate(folder, set_key, staging, files)
                self.journal.record_reply_set(self.channel.name, folder, set_key, names,
                                              "delivering")
                faults.point("before_reply_rename")
            # inbox/<env> by descriptor: a link put there by whoever writes the inbox is
            # refused (safedir.FolderReplaced), never followed
            with safedir.opened(self.channel.inbox, [environment], create=True) as inbox_fd:
                gos = [n for n in names if files[n].type == "GO"]
                staged = sorted(os.listdir(staging)) if staging.exists() else []
                for name in [n for n in staged if n not in gos] + gos:  # GO last
                    if (staging / name).exists():
                        if name in gos:
                            os.fsync(inbox_fd)
                        os.replace(staging / name, name, dst_dir_fd=inbox_fd)
                os.fsync(inbox_fd)
            if staging.exists():
                staging.rmdir()
        except OSError as exc:
            if not resuming and self.journal.reply_set_state(
                    self.channel.name, folder, set_key) != "delivering":
                shutil.rmtree(staging, ignore_errors=True)
            self.failures += 1
            self.log.error("reply_delivery_failed", folder=folder, set_key=set_key,
                           path=str(exc.filename or inbox), error=exc.strerror or str(exc),
                           hint="nothing is removed from the server; tried again next poll")
            return False
        self.journal.record_reply_set(self.channel.name, folder, set_key, names, "delivered")
        self.log.info("reply_delivered", folder=folder, set_key=set_key, files=names)
        faults.point("after_reply_delivery")
        return True

    def _download(self, folder: str, set_key: str, files: dict[str, naming.FileName],
                  sizes: dict[str, int], staging: Path) -> bool:
        """The set, fetched into its staging folder, made durable and checked; False when
        it must not be delivered."""
        for name in files:
            if not (staging / name).is_file() or (staging / name).stat().st_size != sizes[name]:
                raise OSError(0, f"{name} is not whole in {staging}")
        durable.fsync_dir(staging)
        faults.point("after_reply_download")
        problem = self._verify(staging, files)
        if problem is not None:
            if set_key not in self._warned:
                self._warned.add(set_key)
                self.log.error("reply_untrusted", folder=folder, set_key=set_key,
                               reason=problem)
            shutil.rmtree(staging, ignore_errors=True)
            self.failures += 1
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

    def _finish_removals(self, partial: dict[str, dict[str, naming.FileName]],
                         folder: str) -> None:
        """Sets without a GO that were delivered: a crash cut their removal after the GO.

        The GO goes first so that a half-removed set is never taken again; what is left
        of it is removed here, or it would stay on the server for ever.
        """
        cut = {k: files for k, files in partial.items()
               if self.journal.reply_set_state(self.channel.name, folder, k) == "delivered"}
        for set_key, files in cut.items():
            self.log.info("reply_removal_resumed", folder=folder, set_key=set_key,
                          files=sorted(files))
        self._remove_together(folder, cut)

    def _unpack(self, folder: str, set_key: str, staging: Path,
                files: dict[str, naming.FileName]) -> None:
        """A CO file that is a ZIP of one entry is also unpacked beside it, within limits."""
        for name, parsed in sorted(files.items()):
            if parsed.type != "CO":
                continue
            target = staging / replyunpack.unpacked_name(name)
            try:
                size = replyunpack.unpack_single(staging / name, target)
            except replyunpack.UnpackRefused as exc:
                self.log.warning("reply_unpack_refused", folder=folder, set_key=set_key,
                                 file=name, reason=str(exc),
                                 hint="the CO file is delivered as received")
                continue
            except OSError as exc:
                self.log.warning("reply_unpack_refused", folder=folder, set_key=set_key,
                                 file=name, reason=exc.strerror or str(exc),
                                 hint="the CO file is delivered as received")
                target.unlink(missing_ok=True)
                continue
            self.log.info("reply_unpacked", folder=folder, set_key=set_key, file=name,
                          unpacked=target.name, size=size)
        durable.fsync_dir(staging)

    # -- reading replies and tying them to submissions ---------------------------------

    def _correlate(self, folder: str, set_key: str, staging: Path,
                   files: dict[str, naming.FileName]) -> None:
        for name, parsed in sorted(files.items()):
            if parsed.type not in DATA_TYPES:
                continue
            source = staging / name
            if parsed.type == "CO":
                source = staging / replyunpack.unpacked_name(name)
                if not source.exists():
                    self._record_other(folder, set_key, name, f"CO.{parsed.application}",
                                       "compressed reply, not unpacked (see the log)")
                    continue
            if parsed.application not in ("ACRF", "NOTI"):
                kind = "compressed reply, unpacked" if parsed.type == "CO" else "reply"
                self._record_other(folder, set_key, name, parsed.application,
                                   f"{kind} of type {parsed.application}, delivered whole, "
                                   "not read by flad")
                continue
            try:
                reply = replyparse.parse_reply(source.read_bytes())
            except (replyparse.ReplyUnreadable, OSError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                self.log.warning("reply_unreadable", file=name, error=reason)
                self._record_other(folder, set_key, name, parsed.application,
                                   f"unreadable: {reason}")
                continue
            if reply.kind not in (replyparse.RECEIPT, replyparse.NOTIFICATION):
                self._record_other(folder, set_key, name, reply.kind,
                                   f"root element {reply.kind}, not read by flad")
            elif not reply.forms:
                self.log.warning("reply_unreadable", file=name, error="no Form in the file")
                self._record_other(folder, set_key, name, reply.kind, "no Form in the file")
            elif reply.kind == replyparse.RECEIPT:
                for index, form in enumerate(reply.forms, start=1):
                    self._on_receipt(folder, set_key, name, index, form)
            else:
                self._on_notification(folder, set_key, name, reply)

    def _record_other(self, folder: str, set_key: str, name: str, kind: str,
                      summary: str) -> None:
        self.journal.record_reply(channel=self.channel.name, folder=folder, set_key=set_key,
                                  file_name=name, form_index=0, kind=kind,
                                  submission_id=None, tied_by=None, names={},
                                  summary=summary)
        self.log.info("reply_other", file=name, kind=kind, summary=summary)

    def _tie(self, name: str, index: int,
             form: ReplyForm) -> tuple[Submission | None, str | None, dict[str, object]]:
        """The submission a form answers, how it was found, and what the form names.

        In order: FileReference/FileName (any name of the set flad sent), the
        ticket(s) it carries, then - only without FileReference - the sent form's own
        header (HandledOriginalForm and the declarant's reference). A step that finds
        several submissions ties nothing and says so.
        """
        names: dict[str, object] = {}
        ref = form.file_reference
        channel = self.channel.name
        steps: list[tuple[str, Callable[[], list[Submission]]]] = []
        if ref is not None and ref.file_name:
            names["file_name"] = ref.file_name
            steps.append(("file_name", partial(self.journal.find_by_names, channel,
                                               *_set_names(ref.file_name))))
        if form.tickets:
            names["tickets"] = list(form.tickets)
        for ticket in form.tickets:
            steps.append(("ticket", partial(self.journal.find_by_reference, channel, ticket)))
        handled = form.handled_form
        if ref is None and handled is not None and handled.identification and \
                handled.creation_date and handled.creation_hour:
            sent = SentFormRow(handled.identification, handled.creation_date,
                               handled.creation_hour, form.declarant_reference)
            names["form"] = {k: v for k, v in sent.__dict__.items() if v}
            steps.append(("form", partial(self.journal.find_by_form, channel, sent)))
        for how, find in steps:
            found = find()
            if len(found) == 1:
                return found[0], how, names
            if len(found) > 1:
                self.log.warning("reply_ambiguous", file=name, form=index, by=how,
                                 names=names, submissions=[s.id for s in found],
                                 hint="tied to none of them; see flad status --unmatched")
                return None, None, names
        return None, None, names

    def _on_receipt(self, folder: str, set_key: str, name: str, index: int,
                    form: ReplyForm) -> None:
        sub, how, names = self._tie(name, index, form)
        codes = " ".join(form.error_ids)
        verdict = ("no result" if form.reception_result is None else
                   replyparse.RECEPTION_MEANINGS.get(form.reception_result, "unknown result"))
        summary = " ".join(f"receipt {form.type_form or '?'} {verdict} {codes}".split())
        if sub is not None and form.reception_result is None:
            self.log.warning("reply_unreadable", file=name, form=index,
                             error="the receipt has no ReceptionResult/ResultCode")
            sub = None
        self.journal.record_reply(channel=self.channel.name, folder=folder, set_key=set_key,
                                  file_name=name, form_index=index, kind=replyparse.RECEIPT,
                                  submission_id=sub.id if sub else None, tied_by=how,
                                  names=names, summary=summary)
        if sub is None:
            self.log.warning("reply_unmatched", file=name, form=index, kind="ACRF",
                             names=names, summary=summary)
            return
        accepted = form.reception_result == 1
        errors = [{"error_id": e, "label": replyparse.label_for(e, self._labels)}
                  for e in form.error_ids]
        detail = "; ".join(f"{e['error_id']} {e['label'] or ''}".strip() for e in errors)
        self.journal.record_receipt(sub.id, accepted=accepted, errors=errors,
                                    reference=form.file_reference.number
                                    if form.file_reference else None,
                                    receipt_name=name, type_form=form.type_form,
                                    detail=detail or None)
        if accepted:
            self.log.info("submission_acknowledged", submission=sub.id, fi_name=sub.fi_name,
                          reference=form.file_reference.number if form.file_reference
                          else None, type_form=form.type_form, tied_by=how)
        else:
            self.log.warning("submission_refused", submission=sub.id, fi_name=sub.fi_name,
                             error_ids=list(form.error_ids), reason=detail or None,
                             type_form=form.type_form, tied_by=how)

    def _on_notification(self, folder: str, set_key: str, name: str, reply: Reply) -> None:
        groups: dict[int, list[tuple[int, ReplyForm, str]]] = defaultdict(list)
        subs: dict[int, Submission] = {}
        for index, form in enumerate(reply.forms, start=1):
            sub, how, names = self._tie(name, index, form)
            summary = _noti_summary(form)
            self.journal.record_reply(
                channel=self.channel.name, folder=folder, set_key=set_key, file_name=name,
                form_index=index, kind=replyparse.NOTIFICATION,
                submission_id=sub.id if sub else None, tied_by=how, names=names,
                summary=summary)
            if sub is None:
                self.log.warning("reply_unmatched", file=name, form=index,
                                 kind="NOTIFICATION", names=names, summary=summary)
                continue
            assert how is not None
            subs[sub.id] = sub
            groups[sub.id].append((index, form, how))
        for sub_id, entries in groups.items():
            forms = [f for _, f, _ in entries]
            anomalies = [{**a.as_json(self._labels), "form": index}
                         for index, f, _ in entries for a in f.anomalies]
            blocking = sum(1 for _, f, _ in entries for a in f.anomalies if a.blocking)
            provisional = all(f.provisional for f in forms)
            type_forms = [f.type_form for f in forms if f.type_form]
            type_form = replyparse.PROVISIONAL if provisional else next(
                (t for t in type_forms if t != replyparse.PROVISIONAL), None)
            result = combined_result(forms)
            summaries = [_form_json(index, f, how) for index, f, how in entries]
            recorded = self.journal.record_notification(
                sub_id, result=result, blocking=blocking, other=len(anomalies) - blocking,
                anomalies=anomalies, noti_name=name, type_form=type_form,
                provisional=provisional, forms=summaries)
            sub = subs[sub_id]
            event = "submission_notified_provisional" if provisional else "submission_notified"
            self.log.info(event, submission=sub_id, fi_name=sub.fi_name, result=result,
                          meaning=replyparse.RESULT_MEANINGS.get(result or -1),
                          forms=len(forms), blocking=blocking,
                          other=len(anomalies) - blocking, recorded=recorded)


def _set_names(file_name: str) -> tuple[str, ...]:
    """The name a reply gives, and the GO name of its set (an FI or FS part names it too)."""
    try:
        parsed = naming.parse(file_name)
    except naming.InvalidName:
        return (file_name,)
    if parsed.type not in ("FI", "FS", "GO"):
        return (file_name,)
    return tuple(dict.fromkeys((file_name, str(parsed.with_type("GO")))))


def _noti_summary(form: ReplyForm) -> str:
    meaning = form.result_meaning or "no result"
    provisional = " (provisional)" if form.provisional else ""
    return (f"notification {form.type_form or '?'} result {form.result}: {meaning}"
            f"{provisional}, {form.blocking} blocking of {len(form.anomalies)} anomalies")


def _form_json(index: int, form: ReplyForm, how: str) -> dict[str, object]:
    handled = form.handled_form
    return {"form": index, "identification": form.identification,
            "type_form": form.type_form, "result": form.result,
            "meaning": form.result_meaning, "provisional": form.provisional,
            "tied_by": how, "ticket": form.tickets[0] if form.tickets else None,
            "handled_form": None if handled is None else {
                "identification": handled.identification,
                "creation_date": handled.creation_date,
                "creation_hour": handled.creation_hour},
            "declarant_reference": form.declarant_reference,
            "employer": dict(form.employer), "anomalies": len(form.anomalies)}
