"""What `flad status` shows, and `flad resend`: reading and nudging the journal."""

from __future__ import annotations

import datetime
import json
import shlex
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
ATTENTION = frozenset({journal.REJECTED, journal.FAILED, journal.REFUSED})


def as_json(subs: Sequence[Submission]) -> list[dict[str, Any]]:
    rows = []
    for s in subs:
        row = s.as_dict()
        row["received_at"] = _iso(s.received_at)
        row["updated_at"] = _iso(s.updated_at)
        row["sent_at"] = _iso(s.sent_at)
        row["receipt_at"] = _iso(s.receipt_at)
        row["notified_at"] = _iso(s.notified_at)
        row["anomalies"] = json.loads(s.anomalies) if s.anomalies else []
        rows.append(row)
    return rows


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _short(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


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
    header = ("ID", "CHANNEL", "ENV", "STATE", "DROP NAME", "FI NAME", "RECEIPT",
              "NOTIFICATION", "UPDATED")
    rows = [(str(s.id), s.channel, s.environment,
             ("!! " if _needs_attention(s) else "") + s.state.upper(),
             s.drop_name, s.fi_name or "-", _receipt(s), _notification(s),
             _short(s.updated_at)) for s in subs]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for sub, row in zip(subs, rows, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if sub.error:
            lines.append(f"    {'reason' if sub.state in ATTENTION else 'last error'}: "
                         f"{sub.error}")
        for anomaly in _anomalies(sub):
            lines.append(f"    anomaly {anomaly.get('class', '?')} {anomaly.get('error_id', '')}"
                         f" at {anomaly.get('path', '-')}: {anomaly.get('description', '')}"
                         .rstrip(": "))
    counts: dict[str, int] = {}
    for s in subs:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return "\n".join(lines)


def _needs_attention(s: Submission) -> bool:
    return s.state in ATTENTION or bool(s.anomalies_blocking) or s.noti_result == 0


def _receipt(s: Submission) -> str:
    if s.receipt_result is None:
        return "-"
    return "OK" if s.receipt_result == 1 else f"REFUSED {s.receipt_error or ''}".strip()


def _notification(s: Submission) -> str:
    if s.notified_at is None:
        return "-"
    result = {1: "OK", 0: "KO"}.get(s.noti_result, "?") if s.noti_result is not None else "?"
    return f"{result} {s.anomalies_blocking or 0} blocking, {s.anomalies_other or 0} other"


def _anomalies(s: Submission) -> list[dict[str, str]]:
    if not s.anomalies:
        return []
    try:
        value = json.loads(s.anomalies)
    except ValueError:
        return []
    return [a for a in value if isinstance(a, dict)] if isinstance(value, list) else []


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
            f"sends it, or run: flad run -c {shlex.quote(str(config.path))} --once")
