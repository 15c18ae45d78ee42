"""What `flad status` shows, and `flad resend`: reading and nudging the journal."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flad import durable, journal
from flad.config import Config
from flad.journal import ChannelState, Journal, Submission
from flad.outbox import Claimer, DropFolder

ALL_STATES = journal.STATES
#: States an operator must look at; the plain output marks them.
ATTENTION = frozenset({journal.REJECTED, journal.FAILED})


def as_json(subs: Sequence[Submission]) -> list[dict[str, Any]]:
    rows = []
    for s in subs:
        row = s.as_dict()
        row["received_at"] = _iso(s.received_at)
        row["updated_at"] = _iso(s.updated_at)
        row["sent_at"] = _iso(s.sent_at)
        rows.append(row)
    return rows


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _short(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%m-%d %H:%M:%S") if ts else "-"


def render(subs: Sequence[Submission], channels: Sequence[ChannelState]) -> str:
    lines = []
    for ch in channels:
        if ch.state != "connected":
            when = f", next attempt {_short(ch.next_attempt)}" if ch.next_attempt else ""
            lines.append(f"channel {ch.channel}: {ch.state.upper()} after {ch.attempts} "
                         f"attempt(s): {ch.error}{when}")
    if not subs:
        lines.append("no submissions")
        return "\n".join(lines)
    header = ("ID", "CHANNEL", "ENV", "STATE", "DROP NAME", "FI NAME", "UPDATED")
    rows = [(str(s.id), s.channel, s.environment,
             ("!! " if s.state in ATTENTION else "") + s.state.upper(),
             s.drop_name, s.fi_name or "-", _short(s.updated_at)) for s in subs]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for sub, row in zip(subs, rows, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if sub.error:
            lines.append(f"    {'reason' if sub.state in ATTENTION else 'last error'}: "
                         f"{sub.error}")
    counts: dict[str, int] = {}
    for s in subs:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return "\n".join(lines)


def resend(config: Config, db: Journal, sub_id: int) -> str:
    """Put a refused or failed submission back in line, skipping the duplicate check."""
    sub = db.get(sub_id)
    if sub is None:
        raise ValueError(f"no submission {sub_id}")
    if sub.state not in (journal.REJECTED, journal.FAILED):
        raise ValueError(f"submission {sub_id} is {sub.state}: only rejected or failed "
                         "submissions can be sent again")
    channel = config.channel(sub.channel)
    if channel is None:
        raise ValueError(f"channel {sub.channel!r} is no longer configured")
    source = Path(sub.rejected_path or sub.spool_path)
    if not source.is_file() or source.is_symlink():
        raise ValueError(f"the file of submission {sub_id} is no longer at {source}")
    folder = DropFolder(sub.channel, sub.environment, sub.application,
                        channel.outbox / sub.environment / sub.application)
    spool_dir = Claimer(config, db).spool_dir(folder)
    target = spool_dir / f"{uuid.uuid4().hex[:12]}_{sub.drop_name}"
    if source != target:
        durable.move(source, target)
        reason_file = source.with_name(source.name + ".reason.txt")
        reason_file.unlink(missing_ok=True)
    db.requeue(sub_id, str(target), force=True)
    return (f"submission {sub_id} ({sub.drop_name}) is queued again; the running service "
            "sends it, or run: flad run --once")
