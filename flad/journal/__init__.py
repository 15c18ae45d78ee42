"""The journal: flad's single source of truth, in SQLite.

Every state change is written after the effect it records is durable, in a short
transaction, so that a crash at any instant followed by a restart resumes each
submission from the last step that surely happened. WAL mode and a busy timeout let
`flad status` read while the service writes. All SQL lives in this package:

- `connection`: the writer and reader connections (WAL, full sync, busy timeout);
- `schema`: numbered migrations in `PRAGMA user_version`, run when a writer opens;
- `states`: the states as an enum and the one table of legal moves;
- `submissions`: claimed files, their numbering and states, receipts and notifications;
- `reply_sets`: reply sets, reply rows and the sent forms replies are tied by;
- `channels`: each channel's connection state;
- `silence`: overdue receipts and notifications, and pruning old finished rows.

`Journal` is the one door the rest of flad uses; its methods and the state names
below (`journal.SENT`, `journal.OPEN_STATES`, ...) are the public surface.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from flad import logs
from flad.journal import schema
from flad.journal.channels import Channels
from flad.journal.connection import Connections, JournalUnreadable, damage_named
from flad.journal.figures import Figures, Transition
from flad.journal.records import (
    ChannelState,
    Naming,
    Prepared,
    Received,
    SentFormRow,
    Submission,
    dumps,
)
from flad.journal.reply_sets import ReplySets
from flad.journal.schema import JournalTooNew
from flad.journal.silence import Late, Pruned, Silence
from flad.journal.states import OPEN_STATES, SENT_STATES, STATES, State, TransitionError
from flad.journal.submissions import Submissions

RECEIVED = State.RECEIVED
REJECTED = State.REJECTED
PREPARED = State.PREPARED
UPLOADING = State.UPLOADING
SENT = State.SENT
FAILED = State.FAILED
ACKNOWLEDGED = State.ACKNOWLEDGED
REFUSED = State.REFUSED
NOTIFIED = State.NOTIFIED

__all__ = [
    "ACKNOWLEDGED", "FAILED", "NOTIFIED", "OPEN_STATES", "PREPARED", "RECEIVED", "REFUSED",
    "REJECTED", "SENT", "SENT_STATES", "STATES", "UPLOADING", "ChannelState", "Journal",
    "JournalTooNew", "JournalUnreadable", "Late", "Naming", "Prepared", "Pruned", "Received",
    "SentFormRow", "State", "Submission", "Transition", "TransitionError", "damage_named",
    "dumps",
]


class Journal:
    """One SQLite database; safe to share between the threads of one process.

    Opened for writing, it first brings the schema up to this code's version (each
    migration logged as `journal_migrated`). Opened `readonly`, it changes nothing: a
    journal older than this code is read as far as its schema goes (`needs_upgrade`
    says so, and a warning names what to do). Either way a journal newer than this
    code raises `JournalTooNew`.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time,
                 readonly: bool = False) -> None:
        self.path = path
        log = logs.get("flad.journal")
        with damage_named(path):
            self.connections = Connections(path, readonly=readonly)
            try:
                if readonly:
                    self.version = schema.refuse_if_newer(self.connections.reader, path)
                else:
                    schema.upgrade(self.connections.writer, path, log)
                    self.version = schema.LATEST
            except BaseException:
                self.connections.close()
                raise
        #: True when a read-only open found a journal older than this code
        self.needs_upgrade = self.version < schema.LATEST
        if self.needs_upgrade:
            log.warning("journal_needs_upgrade", path=str(path), version=self.version,
                        latest=schema.LATEST,
                        hint="read as far as its schema goes; the service (or any flad "
                             "command that writes, such as flad resend) upgrades it")
        self._submissions = Submissions(self.connections, clock)
        self._replies = ReplySets(self.connections, clock)
        self._channels = Channels(self.connections, clock)
        self._silence = Silence(self.connections, clock)
        #: counts, ages and the tail of the events, for the metrics endpoint
        self.figures = Figures(self.connections)

    def close(self) -> None:
        self.connections.close()

    def batch(self) -> AbstractContextManager[None]:
        """The records made in the block, of this thread, committed together (one sync)."""
        return self.connections.batch()

    # -- submissions ---------------------------------------------------------------

    def add_received(self, *, channel: str, application: str, environment: str,
                     drop_name: str, spool_path: str, sha256: str, size: int) -> int:
        return self.add_received_many([Received(channel, application, environment,
                                                drop_name, spool_path, sha256, size)])[0]

    def add_received_many(self, files: Sequence[Received]) -> list[int]:
        """Journal claimed files in one transaction (one WAL sync for a whole drop)."""
        return self._submissions.add_received_many(files)

    def get(self, sub_id: int) -> Submission | None:
        return self._submissions.get(sub_id)

    def get_many(self, sub_ids: Sequence[int]) -> list[Submission]:
        """The submissions still in the journal among `sub_ids`, in that order."""
        return self._submissions.get_many(sub_ids)

    def by_spool_path(self, spool_path: str) -> Submission | None:
        return self._submissions.by_spool_path(spool_path)

    def open_states(self, channel: str) -> list[tuple[int, str]]:
        """(id, state) of a channel's open submissions, oldest first: cheap to poll."""
        return self._submissions.open_states(channel)

    def received_sizes(self, channel: str, limit: int) -> list[tuple[int, int]]:
        """(id, size) of the oldest submissions of a channel waiting to be checked."""
        return self._submissions.received_sizes(channel, limit)

    def submissions(self, *, channel: str | None = None, states: Sequence[str] = (),
                    since: float | None = None, limit: int | None = None) -> list[Submission]:
        return self._submissions.submissions(channel=channel, states=states, since=since,
                                             limit=limit)

    def mark_rejected(self, sub_id: int, reason: str, rejected_path: str) -> None:
        """Refused by the check (or as a duplicate) while waiting to be prepared."""
        self._submissions.mark_rejected(sub_id, reason, rejected_path)

    def mark_failed(self, sub_id: int, reason: str) -> bool:
        """Fail an open submission; False (and nothing changed) if it is no longer open."""
        return self._submissions.mark_failed(sub_id, reason)

    def note_error(self, sub_id: int, error: str | None) -> None:
        """Last transient error of an open submission (shown by `flad status`)."""
        self._submissions.note_error(sub_id, error)

    def prepare(self, sub_id: int, *, sender: str, file_date: str, environment_letter: str,
                application_code: str, parts: int = 1,
                signed: bool) -> Submission:
        """Allocate the sequence number and names in one transaction.

        The number is taken even if the submission fails later: a number the server may
        have seen is never used again.
        """
        request = Naming(sub_id, sender, file_date, environment_letter, application_code,
                         signed, parts)
        outcome = self.prepare_many([request], duplicate_window_days=0)[0]
        assert outcome.prepared is not None
        return outcome.prepared

    def prepare_many(self, requests: Sequence[Naming], *,
                     duplicate_window_days: int) -> list[Prepared]:
        """`prepare` for several submissions in one transaction, refusing duplicates."""
        return self._submissions.prepare_many(requests,
                                              duplicate_window_days=duplicate_window_days)

    def mark_uploading(self, sub_id: int, step: str) -> None:
        """Record the upload step about to start (data: FI and FS; go) before it starts."""
        self.mark_uploading_many((sub_id,), step)

    def mark_uploading_many(self, sub_ids: Sequence[int], step: str) -> None:
        self._submissions.mark_uploading_many(sub_ids, step)

    def mark_sent(self, sub_id: int) -> None:
        self.mark_sent_many((sub_id,))

    def mark_sent_many(self, sub_ids: Sequence[int]) -> None:
        self._submissions.mark_sent_many(sub_ids)

    def requeue(self, sub_id: int, spool_path: str, *, force: bool) -> None:
        """Put a refused or failed submission back in line (`flad resend`)."""
        self._submissions.requeue(sub_id, spool_path, force=force)

    def events(self, sub_id: int) -> list[tuple[float, str, str | None]]:
        return self._submissions.events(sub_id)

    def sequences_used(self) -> list[tuple[str, str, str, str]]:
        """(sender, date, env letter, sequence) of every prepared submission."""
        return self._submissions.sequences_used()

    def find_sent(self, channel: str, file_name: str) -> Submission | None:
        """The submission whose GO or FI (any part) carries this name."""
        found = self.find_by_names(channel, file_name)
        return found[0] if found else None

    def find_by_names(self, channel: str, *names: str) -> list[Submission]:
        """The submissions whose GO or FI carries one of these names (FI: part 1)."""
        return self._submissions.find_by_names(channel, *names)

    def find_by_reference(self, channel: str, reference: str) -> list[Submission]:
        """The submissions whose receipt gave this ticket (ReferenceNbr)."""
        return self._submissions.find_by_reference(channel, reference)

    def record_receipt(self, sub_id: int, *, accepted: bool, errors: Sequence[dict[str, Any]],
                       reference: str | None, receipt_name: str, type_form: str | None,
                       detail: str | None) -> None:
        """A receipt's verdict, whichever TypeForm (PA or FA) it carries."""
        self._submissions.record_receipt(sub_id, accepted=accepted, errors=errors,
                                         reference=reference, receipt_name=receipt_name,
                                         type_form=type_form, detail=detail)

    def record_notification(self, sub_id: int, *, result: int | None, blocking: int,
                            other: int, anomalies: Sequence[dict[str, Any]],
                            noti_name: str, type_form: str | None = None,
                            provisional: bool = False,
                            forms: Sequence[dict[str, Any]] = ()) -> bool:
        """A notification; False when it was provisional and a final one is already there."""
        return self._submissions.record_notification(
            sub_id, result=result, blocking=blocking, other=other, anomalies=anomalies,
            noti_name=noti_name, type_form=type_form, provisional=provisional, forms=forms)

    # -- replies -------------------------------------------------------------------

    def reply_set_state(self, channel: str, folder: str, set_key: str) -> str | None:
        return self._replies.reply_set_state(channel, folder, set_key)

    def record_reply_set(self, channel: str, folder: str, set_key: str,
                         files: Sequence[str], state: str) -> None:
        """`delivering` before the first file enters the inbox, `delivered` after the last."""
        self._replies.record_reply_set(channel, folder, set_key, files, state)

    def record_reply_removed(self, channel: str, folder: str, set_key: str) -> None:
        self._replies.record_reply_removed(channel, folder, set_key)

    def set_replies_held(self, channel: str, folder: str,
                         held: Mapping[str, tuple[str, str, int]]) -> None:
        self._replies.set_replies_held(channel, folder, held)

    def replies_held(self, channel: str | None = None) -> list[dict[str, Any]]:
        return self._replies.replies_held(channel)

    def reply_sets(self) -> list[dict[str, Any]]:
        return self._replies.reply_sets()

    def record_sent_forms(self, sub_id: int, forms: Sequence[SentFormRow]) -> None:
        """The form headers of a checked file (replacing those of an earlier check)."""
        self._replies.record_sent_forms(sub_id, forms)

    def sent_forms(self, sub_id: int) -> list[SentFormRow]:
        return self._replies.sent_forms(sub_id)

    def find_by_form(self, channel: str, form: SentFormRow) -> list[Submission]:
        """Sent submissions holding a form with this header (and declarant reference, if given)."""
        return self._replies.find_by_form(channel, form)

    def record_reply(self, *, channel: str, folder: str, set_key: str, file_name: str,
                     form_index: int, kind: str, submission_id: int | None,
                     tied_by: str | None, names: dict[str, Any], summary: str) -> None:
        """One reply file (form_index 0) or one form of it, tied or not (idempotent)."""
        self._replies.record_reply(channel=channel, folder=folder, set_key=set_key,
                                   file_name=file_name, form_index=form_index, kind=kind,
                                   submission_id=submission_id, tied_by=tied_by, names=names,
                                   summary=summary)

    def replies(self, *, unmatched_only: bool = False,
                channel: str | None = None) -> list[dict[str, Any]]:
        """Recorded replies, oldest first; [] from a journal older than that record."""
        return self._replies.replies(unmatched_only=unmatched_only, channel=channel)

    # -- silence and retention -------------------------------------------------------

    def flag_overdue(self, channel: str, limits: dict[str, float | None]) -> list[Late]:
        """Set and clear `overdue` for a channel; returns the rows late for the first time.

        `limits`: for 'receipt' and 'notification', the time (epoch seconds) before
        which sending (resp. the receipt) makes the awaited reply late; None: never.
        """
        return self._silence.flag_overdue(channel, limits)

    def overdue_counts(self, channel: str | None = None) -> dict[str, int]:
        """Submissions waiting too long, per kind: {'receipt': n, 'notification': m}."""
        return self._silence.overdue_counts(channel)

    def overdue_by_environment(self) -> dict[tuple[str, str, str], int]:
        """(channel, environment, kind) -> submissions late (the metrics' overdue gauge)."""
        return self._silence.overdue_by_environment()

    def prune_finished(self, before: float) -> Pruned:
        """Drop finished rows (rejected, refused, notified) last changed before `before`.

        Sequence numbers are never given back: they live in their own counters.
        """
        return self._silence.prune_finished(before)

    # -- channels ------------------------------------------------------------------

    def set_channel_state(self, channel: str, state: str, *, error: str | None = None,
                          attempts: int = 0, next_attempt: float | None = None) -> None:
        self._channels.set_channel_state(channel, state, error=error, attempts=attempts,
                                         next_attempt=next_attempt)

    def channel_states(self) -> list[ChannelState]:
        return self._channels.channel_states()
