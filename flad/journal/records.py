"""The values the journal hands out and takes in: plain frozen dataclasses, no SQL.

A `Submission` is one row of the `submission` table as it was when read; the columns
added by later schema versions have defaults, so a row read from an older journal (by
a read-only `flad status` beside an older service) still makes one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SentFormRow:
    """The header of one form of a sent file (see flad.sentforms)."""

    identification: str
    creation_date: str
    creation_hour: str
    declarant_reference: str | None = None


@dataclass(frozen=True)
class Submission:
    id: int
    channel: str
    application: str
    environment: str
    drop_name: str
    spool_path: str
    sha256: str
    size: int
    state: str
    received_at: float
    updated_at: float
    sender: str | None
    file_date: str | None
    sequence: str | None
    fi_name: str | None
    fs_name: str | None
    go_name: str | None
    upload_step: str | None
    sent_at: float | None
    error: str | None
    rejected_path: str | None
    force_send: int
    reference_nbr: str | None = None
    receipt_result: int | None = None
    receipt_error: str | None = None
    receipt_name: str | None = None
    receipt_at: float | None = None
    noti_result: int | None = None
    anomalies_blocking: int | None = None
    anomalies_other: int | None = None
    anomalies: str | None = None
    noti_name: str | None = None
    notified_at: float | None = None
    receipt_errors: str | None = None
    receipt_type_form: str | None = None
    noti_type_form: str | None = None
    noti_provisional: int | None = None
    noti_forms: str | None = None
    #: 'receipt' or 'notification' while that reply is overdue (schema version 3)
    overdue: str | None = None
    receipt_overdue_at: float | None = None
    notification_overdue_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Received:
    """A claimed file, as the journal first records it."""

    channel: str
    application: str
    environment: str
    drop_name: str
    spool_path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Naming:
    """What numbering one submission needs."""

    sub_id: int
    sender: str
    file_date: str
    environment_letter: str
    application_code: str
    signed: bool
    parts: int = 1
    #: the content's sha256, when the claim left it to the check ("" otherwise)
    sha256: str = ""


@dataclass(frozen=True)
class Prepared:
    """The outcome of numbering one submission: named, or a duplicate of `earlier`."""

    before: Submission
    prepared: Submission | None
    earlier: Submission | None


@dataclass(frozen=True)
class ChannelState:
    channel: str
    state: str
    error: str | None
    attempts: int
    next_attempt: float | None
    updated_at: float


def dumps(subs: Sequence[Submission]) -> str:
    return json.dumps([s.as_dict() for s in subs], indent=2, sort_keys=True)
