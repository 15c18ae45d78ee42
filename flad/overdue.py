"""Silence noticed: a reply that should have come by now is said once and flagged.

A file sent without receipt after `receipt_overdue_minutes`, or acknowledged without
a final notification after `notification_overdue_hours` (each from `[daemon]`, or
the channel's own), looks like one sent a minute ago unless someone says so. The
service looks every minute: a submission found late is flagged in the journal
(`overdue`, shown first by `flad status`, alone by `flad status --overdue`) and logged
once as `receipt_overdue` or `notification_overdue`; the flag goes when the reply
comes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flad.config import ChannelConfig, Config
from flad.journal import Journal
from flad.journal.silence import NOTIFICATION, RECEIPT

#: How often the service looks for late replies.
LOOK_SECONDS = 60.0
#: Late submissions said one by one per look and kind; a larger backlog (the reply side
#: broken for a day) is said in one line with the count, and the first few.
LOG_EACH = 20


def limits(config: Config, channel: ChannelConfig) -> tuple[float, float]:
    """(receipt minutes, notification hours) for a channel; 0 means never overdue."""
    daemon = config.daemon
    minutes = channel.receipt_overdue_minutes
    hours = channel.notification_overdue_hours
    return (daemon.receipt_overdue_minutes if minutes is None else minutes,
            daemon.notification_overdue_hours if hours is None else hours)


def look(config: Config, db: Journal, log: Any,
         clock: Callable[[], float] = time.time) -> int:
    """Flag (and clear) late replies on every channel; log the newly late ones."""
    now = clock()
    found = 0
    for channel in config.channels:
        minutes, hours = limits(config, channel)
        late = db.flag_overdue(channel.name, {
            RECEIPT: now - minutes * 60 if minutes > 0 else None,
            NOTIFICATION: now - hours * 3600 if hours > 0 else None,
        })
        for kind in (RECEIPT, NOTIFICATION):  # a backlog is said in one line past a few
            many = [one.submission.id for one in late if one.kind == kind]
            if len(many) > LOG_EACH:
                log.warning(f"{kind}_overdue", channel=channel.name, count=len(many),
                            submissions=many[:100], listed=f"the first {LOG_EACH} below",
                            hint="flad status --overdue lists them all")
        shown = {RECEIPT: 0, NOTIFICATION: 0}
        for one in late:
            shown[one.kind] += 1
            if shown[one.kind] > LOG_EACH:
                continue
            sub = one.submission
            if one.kind == RECEIPT:
                waited = (now - (sub.sent_at or now)) / 60
                log.warning("receipt_overdue", channel=channel.name, submission=sub.id,
                            drop_name=sub.drop_name, go_name=sub.go_name,
                            waited_minutes=round(waited), limit_minutes=minutes,
                            hint="no receipt (ACRF) yet: check the platform's portal for "
                                 "this file, and that flad fetches replies (flad status)")
            else:
                waited = (now - (sub.receipt_at or now)) / 3600
                log.warning("notification_overdue", channel=channel.name, submission=sub.id,
                            drop_name=sub.drop_name, go_name=sub.go_name,
                            reference=sub.reference_nbr, waited_hours=round(waited, 1),
                            limit_hours=hours,
                            hint="receipt positive but no final notification yet: ask the "
                                 "platform about this ticket")
        found += len(late)
    return found
