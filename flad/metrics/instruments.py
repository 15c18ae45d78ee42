"""The figures only the running process knows, as prometheus_client instruments.

What the journal records (files and their states) is read from it at scrape time
(`collector`); what it does not (a connection that worked, bytes on the wire, how
long an upload took, a failed connection attempt) is counted here, by the channel
worker, as it happens. Each service has registries of its own: two services in one
process (the tests) never mix their figures.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from flad.metrics import kinds

#: Upload times of one batch (FI, FS, checks, GO): from a small file on a LAN to a
#: full batch over a slow line.
UPLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Instruments:
    def __init__(self, registry: CollectorRegistry | None = None, *,
                 process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connection_success = Gauge(
            "flad_last_connection_success_timestamp_seconds",
            "When a step against the channel's server (an upload or a reply poll) last "
            "succeeded, as a Unix time", ["channel"], registry=r)
        self.reply_poll_success = Gauge(
            "flad_last_reply_poll_success_timestamp_seconds",
            "When the channel's reply folders were last read through, as a Unix time",
            ["channel"], registry=r)
        self.connection_failures = Counter(
            "flad_connection_failures",
            "Failed attempts to reach or use the channel's server, by kind",
            ["channel", "kind"], registry=r)
        self.uploaded_bytes = Counter(
            "flad_uploaded_bytes", "Bytes of FI and FS files whose GO reached the server",
            ["channel", "environment"], registry=r)
        self.upload_duration = Histogram(
            "flad_upload_duration_seconds",
            "How long one upload of a batch took (FI and FS, size checks, GO)",
            ["channel"], buckets=UPLOAD_BUCKETS, registry=r)
        if process:  # memory, CPU, open files, start time: Linux /proc, else nothing
            ProcessCollector(namespace="flad", registry=r)

    def connected(self, channel: str, now: float | None = None) -> None:
        self.connection_success.labels(channel).set(now if now is not None else time.time())

    def polled(self, channel: str, now: float | None = None) -> None:
        self.reply_poll_success.labels(channel).set(now if now is not None else time.time())

    def connection_failed(self, channel: str, exc: BaseException) -> None:
        self.connection_failures.labels(channel, kinds.failure_kind(exc)).inc()

    def uploaded(self, channel: str, environment: str, size: int) -> None:
        self.uploaded_bytes.labels(channel, environment).inc(size)

    def upload_took(self, channel: str, seconds: float) -> None:
        self.upload_duration.labels(channel).observe(seconds)

    def start_channel(self, channel: str, environments: tuple[str, ...]) -> None:
        """Zeros for a channel's counters, so that a rate exists before the first event."""
        for environment in environments:
            self.uploaded_bytes.labels(channel, environment)
        self.upload_duration.labels(channel)
