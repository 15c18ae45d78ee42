"""The journal's figures, read when Prometheus asks: files per state, ages, moves.

Gauges (queue depth, the oldest file not yet sent, the oldest without a receipt,
channel states) are read from the journal at each scrape, so they are what `flad
status` would show. Counters of files (claimed, rejected, sent, acknowledged,
refused, notified, failed) count the journal's events from the start of this
process: the tail of the event table is read at each scrape, each state change
counted once, whichever code path made it (the service, `flad resend`, a crash
recovery). A counter starts at zero with the process, as Prometheus expects.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flad import journal
from flad.certlife import Lifetime
from flad.config import ChannelConfig
from flad.journal import Journal, Transition
from flad.journal.figures import QUEUE_STATES
from flad.metrics import kinds

#: Counters of files: metric name -> (help, the state counted, an extra label).
FILE_COUNTERS: Mapping[str, tuple[str, str, str | None]] = {
    "flad_files_claimed": ("Files taken from the outbox into the spool", "received", None),
    "flad_files_rejected": ("Files refused by the check, by class of reason", "rejected",
                            "reason"),
    "flad_files_sent": ("Files whose GO reached the server", "sent", None),
    "flad_files_acknowledged": ("Files with a positive receipt (ACRF)", "acknowledged", None),
    "flad_files_refused": ("Files with a negative receipt: the platform will not process "
                           "them", "refused", None),
    "flad_files_notified": ("Files with a final notification, by its result", "notified",
                            "result"),
    "flad_files_failed": ("Files failed by a permanent error (flad resend puts them back)",
                          "failed", None),
}
_BY_STATE = {state: name for name, (_help, state, _extra) in FILE_COUNTERS.items()}
_RESULT = re.compile(r"result (\w+)")
UNSENT_STATES = (journal.RECEIVED, journal.PREPARED, journal.UPLOADING)
CHANNEL_STATES = ("connected", "retrying", "failed", "unknown")


class JournalCollector(Collector):
    """A prometheus_client collector over one journal (and the current configuration)."""

    def __init__(self, journal_: Journal, channels: Callable[[], Sequence[ChannelConfig]],
                 lifetimes: Callable[[], Sequence[Lifetime]], *,
                 held: Callable[[], Mapping[str, str]] = dict,
                 overdue: Callable[[Journal], Mapping[tuple[str, str, str], int]]
                 = Journal.overdue_by_environment,
                 clock: Callable[[], float] = time.time) -> None:
        self.journal = journal_
        self.channels = channels
        self.lifetimes = lifetimes
        self.held = held
        self.overdue = overdue
        self.clock = clock
        self._lock = threading.Lock()
        self._after = journal_.figures.last_event_id()  # counters start with the process
        self._counts: dict[tuple[str, str, str, str], float] = {}

    # -- counters --------------------------------------------------------------------

    def _read_events(self) -> None:
        while True:
            moves = self.journal.figures.transitions_after(self._after)
            for move in moves:
                self._count(move)
            if moves:
                self._after = moves[-1].event_id
            if len(moves) < journal.figures.EVENTS_PER_READ:
                return

    def _count(self, move: Transition) -> None:
        name = _BY_STATE.get(move.state)
        if name is None or move.before == move.state:
            return  # not counted, or a repeat (a late receipt, a second upload step)
        if name == "flad_files_claimed" and move.before is not None:
            return  # put back by flad resend: claimed once
        extra = ""
        if name == "flad_files_rejected":
            extra = kinds.reason_class(move.detail)
        elif name == "flad_files_notified":
            found = _RESULT.search(move.detail or "")
            extra = found.group(1) if found else "unknown"
        key = (name, move.channel, move.environment, extra)
        self._counts[key] = self._counts.get(key, 0) + 1

    def _counters(self, pairs: Sequence[tuple[str, str]]) -> Iterator[Metric]:
        for name, (text, _state, extra) in FILE_COUNTERS.items():
            labels = ["channel", "environment", *([extra] if extra else [])]
            family = CounterMetricFamily(f"{name}_total", text, labels=labels)
            seen = {(c, e, x): n for (m, c, e, x), n in self._counts.items() if m == name}
            if extra is None:  # a zero for every channel and environment
                for pair in pairs:
                    seen.setdefault((*pair, ""), 0)
            elif extra == "reason":
                for pair in pairs:
                    for reason in kinds.REASON_CLASSES:
                        seen.setdefault((*pair, reason), 0)
            for (channel, environment, x), n in sorted(seen.items()):
                family.add_metric([channel, environment, *([x] if extra else [])], n)
            yield family

    # -- gauges ----------------------------------------------------------------------

    def _queue(self, pairs: Sequence[tuple[str, str]], now: float) -> Iterator[Metric]:
        figures = self.journal.figures
        depth = GaugeMetricFamily("flad_queue_files", "Files per state: waiting, going, "
                                  "sent without receipt, failed",
                                  labels=["channel", "environment", "state"])
        counts = figures.queue()
        for pair in pairs:
            for state in QUEUE_STATES:
                counts.setdefault((*pair, str(state)), 0)
        for key, n in sorted(counts.items()):
            depth.add_metric(list(key), n)
        yield depth
        for name, text, states, column in (
                ("flad_oldest_unsent_age_seconds", "Age of the oldest file not yet sent "
                 "(received, prepared or uploading); 0 when none", UNSENT_STATES,
                 "received_at"),
                ("flad_oldest_without_receipt_age_seconds", "Time since the oldest file "
                 "still without receipt was sent; 0 when none", (journal.SENT,), "sent_at")):
            family = GaugeMetricFamily(name, text, labels=["channel", "environment"])
            oldest = figures.oldest([str(s) for s in states], column)
            for pair in sorted({*pairs, *oldest}):
                family.add_metric(list(pair), max(0.0, now - oldest[pair])
                                  if pair in oldest else 0.0)
            yield family

    def _channel_states(self, names: Sequence[str]) -> Iterator[Metric]:
        family = GaugeMetricFamily("flad_channel_state", "1 for the state the channel is "
                                   "in: connected, retrying, failed (needs a person), "
                                   "unknown (no contact yet)", labels=["channel", "state"])
        known = {s.channel: s.state for s in self.journal.channel_states()}
        for name in names:
            current = known.get(name, "unknown")
            for state in CHANNEL_STATES:
                family.add_metric([name, state], 1.0 if state == current else 0.0)
        yield family
        held = GaugeMetricFamily("flad_channel_signing_held", "1 while the channel signs "
                                 "nothing (its signing certificate is expired or not yet "
                                 "valid): its files wait", labels=["channel"])
        holds = self.held()
        for name in names:
            held.add_metric([name], 1.0 if name in holds else 0.0)
        yield held

    def _certificates(self, now: float) -> Iterator[Metric]:
        days = GaugeMetricFamily("flad_certificate_days_left", "Days until the certificate "
                                 "expires (negative: expired)",
                                 labels=["channel", "role", "subject"])
        end = GaugeMetricFamily("flad_certificate_expiry_timestamp_seconds",
                                "When the certificate expires, as a Unix time",
                                labels=["channel", "role", "subject"])
        for life in self.lifetimes():
            labels = [life.channel, life.role, life.subject]
            not_after = life.not_after.timestamp()
            days.add_metric(labels, round((not_after - now) / 86400, 3))
            end.add_metric(labels, not_after)
        yield days
        yield end

    def _overdue(self, pairs: Sequence[tuple[str, str]]) -> Iterator[Metric]:
        family = GaugeMetricFamily("flad_overdue_submissions", "Sent files whose reply is "
                                   "later than the platform's usual delay, by kind",
                                   labels=["channel", "environment", "kind"])
        for key, n in sorted(self.overdue(self.journal).items()):
            family.add_metric(list(key), n)
        yield family

    def describe(self) -> list[Metric]:
        return []  # no read of the journal at registration; names are checked by tests

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        channels = list(self.channels())
        names = [c.name for c in channels]
        pairs = [(c.name, e) for c in channels for e in c.environments()]
        with self._lock:  # two scrapes at once must not count the same events twice
            self._read_events()
            counters = list(self._counters(pairs))
        yield from counters
        yield from self._queue(pairs, now)
        yield from self._channel_states(names)
        yield from self._certificates(now)
        yield from self._overdue(pairs)
