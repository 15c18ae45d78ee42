"""What `flad status` shows, and `flad resend`: reading and nudging the journal."""

from __future__ import annotations

import datetime
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flad import journal, spool
from flad.config import Config
from flad.journal import ChannelState, Journal, Submission
from flad.printable import printable
from flad.replyparse import RESULT_MEANINGS

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
        row["anomalies"] = _anomalies(s)
        row["receipt_errors"] = _receipt_errors(s)
        row["noti_forms"] = _json_list(s.noti_forms)
        row["noti_provisional"] = bool(s.noti_provisional)
        row["noti_meaning"] = (RESULT_MEANINGS.get(s.noti_result)
                               if s.noti_result is not None else None)
        row["needs_attention"] = needs_attention(s)
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


#: Sets left on the server named one by one in `flad status`, per channel; then a count.
HELD_SHOWN = 10


def held_notices(held: Sequence[dict[str, Any]]) -> list[str]:
    """Header lines for the reply sets the bounds leave on the server (max_reply_bytes,
    min_free_bytes): nobody fetches them until someone acts."""
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for row in held:
        by_channel.setdefault(str(row["channel"]), []).append(row)
    lines = []
    for channel, rows in by_channel.items():
        lines.append(f"WARNING: channel {channel}: {len(rows)} reply set(s) left on the "
                     "server (too large or too little free space):")
        for row in rows[:HELD_SHOWN]:
            lines.append(f"    {row['folder']}/{printable(str(row['set_key']))}: "
                         f"{row['reason']}: {printable(str(row['detail']))} "
                         f"(since {_short(row['since'])})")
        if len(rows) > HELD_SHOWN:
            lines.append(f"    ... and {len(rows) - HELD_SHOWN} more")
    return lines


def render(subs: Sequence[Submission], channels: Sequence[ChannelState],
           notices: Sequence[str] = ()) -> str:
    lines = list(notices)  # certificates near their end, first
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
             ("!! " if needs_attention(s) else "") + s.state.upper(),
             s.drop_name, s.fi_name or "-", _receipt(s), _notification(s),
             _short(s.updated_at)) for s in subs]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for sub, row in zip(subs, rows, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if sub.overdue:
            lines.append("    " + overdue_line(sub))
        if sub.error:
            lines.append(f"    {'reason' if sub.state in ATTENTION else 'last error'}: "
                         f"{sub.error}")
        for error in _receipt_errors(sub):
            if len(_receipt_errors(sub)) > 1 or error.get("label"):
                lines.append(f"    receipt error {error.get('error_id')}"
                             + (f": {error['label']}" if error.get("label") else ""))
        for anomaly in _anomalies(sub):
            lines.append("    " + anomaly_line(anomaly))
    counts: dict[str, int] = {}
    for s in subs:
        counts[s.state] = counts.get(s.state, 0) + 1
    late = sum(1 for s in subs if s.overdue)
    lines.append(", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
                 + (f"; {late} overdue (flad status --overdue)" if late else ""))
    return "\n".join(printable(line) for line in lines)  # one row per line, whatever a name holds


def overdue_first(subs: Sequence[Submission]) -> list[Submission]:
    """Submissions whose reply is late first (oldest first), then the others as given."""
    return sorted(subs, key=lambda s: not s.overdue)


def overdue_line(s: Submission) -> str:
    """What is late and since when, in the words an operator acts on."""
    if s.overdue == "receipt":
        return (f"OVERDUE: no receipt since it was sent on {_short(s.sent_at)}; check the "
                "platform's portal for this file")
    return (f"OVERDUE: no final notification since the receipt of {_short(s.receipt_at)}"
            f"{f' (ticket {s.reference_nbr})' if s.reference_nbr else ''}; ask the "
            "platform about it")


def anomaly_line(anomaly: dict[str, Any]) -> str:
    """Code, class, label, tag, value and the worker concerned, on one line."""
    parts = [f"anomaly {anomaly.get('error_id') or '?'} class {anomaly.get('class') or '?'}"]
    if anomaly.get("label"):
        parts[0] += f": {anomaly['label']}"
    details = []
    if anomaly.get("tag"):
        details.append(f"tag {anomaly['tag']}")
    if anomaly.get("value") is not None:
        details.append(f"value {anomaly['value']!r}")
    path = anomaly.get("path")
    if isinstance(path, dict) and path.get("INSS"):
        details.append(f"worker INSS {path['INSS']}")
    elif isinstance(path, str) and path:
        details.append(f"at {path}")
    location = anomaly.get("location")
    if isinstance(location, dict):
        where = " ".join(f"{k} {location[k]}" for k in ("line", "column") if location.get(k))
        if location.get("location"):
            where = f"{where} at {location['location']}".strip()
        if where:
            details.append(where)
    return parts[0] + (f" ({', '.join(details)})" if details else "")


def needs_attention(s: Submission) -> bool:
    """True when a person must act: refused, rejected, failed, NOK, blocking, temporary,
    or a reply overdue."""
    if s.state in ATTENTION or s.receipt_result == 0 or s.overdue:
        return True
    if s.notified_at is not None and (
            s.noti_result != 1 or s.noti_provisional or s.anomalies_blocking):
        return True
    return any((a.get("class") or "").upper() == "B" for a in _anomalies(s))


def _receipt(s: Submission) -> str:
    if s.receipt_result is None:
        return "-"
    kind = f" ({s.receipt_type_form})" if s.receipt_type_form else ""
    if s.receipt_result == 1:
        return f"OK{kind}"
    return f"REFUSED {s.receipt_error or ''}".strip() + kind


def _notification(s: Submission) -> str:
    if s.notified_at is None:
        return "-"
    if s.noti_result is None:
        result = "?"
    else:
        result = {1: "OK", 0: "NOK"}.get(s.noti_result) or \
            f"{s.noti_result} {RESULT_MEANINGS.get(s.noti_result, 'unknown')}"
    kind = "PROVISIONAL " if s.noti_provisional else ""
    forms = len(_json_list(s.noti_forms))
    in_forms = f" in {forms} forms" if forms > 1 else ""
    return (f"{kind}{result} {s.anomalies_blocking or 0} blocking, "
            f"{s.anomalies_other or 0} other{in_forms}")


def _json_list(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [a for a in value if isinstance(a, dict)] if isinstance(value, list) else []


def _anomalies(s: Submission) -> list[dict[str, Any]]:
    return _json_list(s.anomalies)


def _receipt_errors(s: Submission) -> list[dict[str, Any]]:
    errors = _json_list(s.receipt_errors)
    if not errors and s.receipt_result == 0 and s.receipt_error:
        # a journal row written before every error code was kept: its codes alone
        errors = [{"error_id": e, "label": None} for e in s.receipt_error.split()]
    return errors


def unmatched_json(replies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "at": _iso(r["at"])} for r in replies]


def render_unmatched(replies: Sequence[dict[str, Any]], inbox_of: dict[str, Path]) -> str:
    """Replies tied to no submission: what they are, what they name, where they are."""
    if not replies:
        return "no reply without a submission"
    lines = []
    for r in replies:
        env = "production" if r["folder"] == "OUT" else "test"
        inbox = inbox_of.get(r["channel"])
        where = f"{inbox / env / r['file_name']}" if inbox else r["file_name"]
        form = f" form {r['form_index']}" if r["form_index"] else ""
        lines.append(f"{_short(r['at'])}  {r['channel']}  {r['kind']}{form}  {where}")
        lines.append(f"    {r['summary']}")
        names = r.get("names") or {}
        if names:
            lines.append("    names: " + "; ".join(
                f"{k} {json.dumps(v) if isinstance(v, (dict, list)) else v}"
                for k, v in sorted(names.items())))
        else:
            lines.append("    names no submission of flad (a reply of its own kind)")
    lines.append(f"{len(replies)} repl{'y' if len(replies) == 1 else 'ies'} without a "
                 "submission")
    return "\n".join(printable(line) for line in lines)


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
    target = spool.take_back(channel, sub)
    db.requeue(sub_id, str(target), force=True)
    return (f"submission {sub_id} ({sub.drop_name}) is queued again; the running service "
            f"sends it, or run: flad run -c {shlex.quote(str(config.path))} --once")
