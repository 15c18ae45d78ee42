"""Process life: the state folder's lock, signals, systemd, reload; a worker per channel.

The channel's own flow lives in `flad.channel`; this module starts and stops it.
SIGTERM finishes the step in flight; SIGHUP reloads the configuration (a broken new
one is refused and the old one kept).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType

from flad import (
    certlife,
    journal,
    logs,
    overdue,
    retention,
    sdnotify,
    servicecalls,
    sharedhost,
    signing,
    strays,
    xmlcheck,
)
from flad import config as config_mod
from flad.channel import recovery
from flad.channel.settings import load_signer
from flad.channel.store import ContentStore
from flad.channel.worker import ChannelWorker
from flad.config import Config
from flad.control import Answer, ControlServer
from flad.filecheck import FileChecker
from flad.journal import Journal
from flad.metrics.collector import JournalCollector
from flad.metrics.instruments import Instruments
from flad.metrics.server import MetricsServer, MetricsUnavailable
from flad.outbox import Claimed, Claimer, OutboxWatcher, drop_folders
from flad.remote import RemoteIncompatible, paramiko_compat
from flad.statelock import StateLock, StateLocked

STOP_GRACE_SECONDS = 9.0
#: The errors of `signing.check_signer` that hold a channel instead of refusing to start.
LAPSED = ("certificate expired", "certificate not yet valid")
#: How often the running service looks at its certificates again.
CERTIFICATE_LOOK_SECONDS = 24 * 3600.0


def journal_path(config: Config) -> Path:
    return config.daemon.state_dir / "journal.sqlite3"


class StartupError(Exception):
    """The service cannot start; the message names the path and the fix."""


class Service:
    """`flad run`: the watcher and the channel workers under one roof."""

    def __init__(self, config: Config, *, once: bool = False, max_wait: float = 60.0,
                 wait_replies: float = 0.0, install_signals: bool = True) -> None:
        self.config = config
        self.install_signals = install_signals
        self.once = once
        self.max_wait = max_wait
        self.wait_replies = wait_replies
        self._started = time.time()
        self.log = logs.get("flad.daemon")
        self.store = ContentStore()
        self.journal = Journal(journal_path(config))
        self._stop = threading.Event()
        self._generation_stop = threading.Event()
        self._reload = threading.Event()
        self.workers: dict[str, ChannelWorker] = {}
        self.watcher: OutboxWatcher | None = None
        self._watch_thread: threading.Thread | None = None
        self._stray_notices = strays.StrayNotices()
        self._strays: list[strays.Stray] = []
        self._next_stray_look = 0.0
        self._next_certificate_look = 0.0
        #: certificate lifetimes of the last look, for /metrics
        self.lifetimes: list[certlife.Lifetime] = []
        #: channel -> why it signs nothing now (an expired signing certificate)
        self.holds: dict[str, str] = {}
        self.instruments = Instruments()
        self.metrics: MetricsServer | None = None
        self._control: ControlServer | None = None
        self._next_overdue_look = 0.0
        self._next_retention = 0.0

    # -- start and stop ------------------------------------------------------------

    def _signers(self, config: Config) -> dict[str, signing.Signer | None]:
        signers: dict[str, signing.Signer | None] = {}
        for ch in config.channels:
            signer = load_signer(ch)
            if signer is not None:
                report = signing.check_signer(signer)
                for warning in report.warnings:
                    self.log.warning("certificate_warning", channel=ch.name, warning=warning)
                blocking = [e for e in report.errors if not e.startswith(LAPSED)]
                if blocking:
                    raise signing.SigningError(f"channel {ch.name}: {'; '.join(blocking)}")
            signers[ch.name] = signer
        return signers

    def _holds(self, config: Config, signers: dict[str, signing.Signer | None]
               ) -> dict[str, str]:
        """Channels whose signing certificate is out of its dates: they sign nothing.

        Their files wait in the spool (never refused: the certificate is flad's
        problem, not the file's), their signed files still go and their replies still
        come; the other channels go on. Said loudly, at each look, until a new
        certificate is in place and the service reloaded.
        """
        holds: dict[str, str] = {}
        for ch in config.channels:
            signer = signers.get(ch.name)
            if signer is None:
                continue
            lapsed = [e for e in signing.check_signer(signer).errors if e.startswith(LAPSED)]
            if lapsed:
                subject = signer.certificate.subject.rfc4514_string()
                holds[ch.name] = (
                    f"channel {ch.name}: the signing certificate {subject}: "
                    f"{'; '.join(lapsed)}: nothing is signed on this channel, its files "
                    "wait in the spool; put a valid certificate in place, then reload "
                    "(systemctl reload flad)")
                self.log.error("certificate_expired", channel=ch.name, subject=subject,
                               not_after=signer.certificate.not_valid_after_utc.isoformat(),
                               error="; ".join(lapsed), message=holds[ch.name])
        return holds

    def _look_at_certificates(self, config: Config) -> None:
        """At start, on reload and once a day: certificates near their end, said loudly.

        A warning from `cert_warn_days` before the end, an error each day of the last
        week: an expired signing certificate stops every production file.
        """
        self._next_certificate_look = time.monotonic() + CERTIFICATE_LOOK_SECONDS
        try:
            lifetimes = certlife.of_config(config, load_signer)
        except Exception:  # a look that fails must not stop the service
            self.log.exception("certificate_look_failed")
            return
        self.lifetimes = lifetimes
        for level, life in certlife.notices(lifetimes, config.daemon.cert_warn_days):
            log = self.log.error if level == "error" else self.log.warning
            log("certificate_expiring", channel=life.channel, role=life.role,
                subject=life.subject, not_after=life.not_after.isoformat(),
                days_left=round(life.days_left, 1), message=life.text())

    def _look_at_signers(self) -> None:
        """Once a day: a signing certificate that ended while running holds its channel."""
        try:
            signers = {name: w.stages.signatures.signer for name, w in self.workers.items()}
            self.holds = self._holds(self.config, signers)
        except Exception:  # a look that fails must not stop the service
            self.log.exception("certificate_look_failed")
            return
        for name, worker in self.workers.items():
            worker.held = self.holds.get(name)

    def _look_at_permissions(self, config: Config) -> None:
        """At start and on reload: what `flad check` would say of the shared-host model,
        for the admin who reads the logs and never runs check."""
        try:
            found = sharedhost.exposure(config)
        except Exception:  # a look that fails must not stop the service
            self.log.exception("permissions_look_failed")
            return
        for subject, line in found:
            self.log.warning("permissions_too_open", subject=subject, warning=line)

    def _start(self, config: Config) -> None:
        signers = self._signers(config)
        self._look_at_certificates(config)
        self.holds = self._holds(config, signers)
        for warning in config.warnings:
            self.log.warning("config_warning", warning=warning)
        self._look_at_permissions(config)
        claimer = Claimer(config, self.journal)
        folders = drop_folders(config)
        claimer.recover(folders)
        recovery.finish_interrupted(config, self.journal, signers)
        self.watcher = OutboxWatcher(config, claimer, self._on_claimed)
        try:
            self.watcher.prepare_folders()
        except OSError as exc:
            where = exc.filename or "a drop folder"
            raise StartupError(
                f"cannot create the drop folder {where}: {exc.strerror or exc}; create it "
                "with write access for the user flad runs as, or correct the channel's "
                "`outbox` in the configuration") from exc
        self._generation_stop = threading.Event()
        deadline = time.monotonic() + self.max_wait if self.once else None
        if self.once:
            self._collect_once(self.watcher)
            self._look_for_strays()
        else:
            self.watcher.start_watching()
            self._watch_thread = threading.Thread(
                target=self.watcher.run, args=(self._generation_stop,), name="outbox",
                daemon=True)
            self._watch_thread.start()
        self.workers = {
            ch.name: ChannelWorker(ch, config, self.journal, signers[ch.name], self.store,
                                   self._generation_stop, once=self.once, deadline=deadline,
                                   wait_replies=self.wait_replies, since=self._started,
                                   instruments=self.instruments,
                                   held=self.holds.get(ch.name))
            for ch in config.channels
        }
        for worker in self.workers.values():
            worker.start()
        self.log.info("service_started", channels=len(config.channels), once=self.once)

    def _collect_once(self, watcher: OutboxWatcher) -> None:
        """Take everything in the outboxes now, waiting for in-place writes to settle."""
        watcher.rescan()
        limit = time.monotonic() + self.config.daemon.settle_seconds + self.max_wait
        while len(watcher.tracker) and time.monotonic() < limit:
            time.sleep(0.2)
            watcher.rescan()

    def _stop_generation(self, *, wait_all: bool = False) -> None:
        """Stop the watcher and the workers of the running configuration.

        With `wait_all` (a reload) every worker is waited for, however long its step
        takes (each SFTP request has its timeout): a new worker must never work on a
        channel while the old one still uploads there. When the service stops, the
        process ends after the grace period anyway.
        """
        self._generation_stop.set()
        if self.watcher is not None:
            self.watcher.stop_watching()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in self.workers.values():
            worker.wake.set()
            worker.join(max(0.1, deadline - time.monotonic()))
            while wait_all and worker.is_alive():
                self.log.warning("reload_waiting", channel=worker.channel.name,
                                 reason="a step of the old configuration is still running")
                worker.join(STOP_GRACE_SECONDS)
        if self._watch_thread is not None:
            self._watch_thread.join(max(0.1, deadline - time.monotonic()))

    def _on_claimed(self, claimed: Claimed) -> None:
        self.store.put(claimed.submission_id, claimed.data)
        worker = self.workers.get(claimed.channel)
        if worker is not None:
            worker.refill()
            worker.wake.set()

    # -- running -------------------------------------------------------------------

    def run(self) -> int:
        """Run under the state folder's lock; `StateLocked` when another flad holds it."""
        lock = StateLock(self.config.daemon.state_dir)
        try:
            paramiko_compat.self_check()  # before anything is taken: fail loudly, now
            lock.acquire("run --once" if self.once else "run")
        except (StateLocked, RemoteIncompatible):
            self.journal.close()
            raise
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> int:
        started = self._started = time.time()
        if not self.once and self.install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGHUP, self._on_signal)
        if not self.once:  # registered before the first claim: its events are counted
            self.instruments.registry.register(JournalCollector(
                self.journal, lambda: self.config.channels, lambda: self.lifetimes,
                held=lambda: dict(self.holds)))
        self._start(self.config)
        if self.once:
            for worker in self.workers.values():
                worker.join()
            self._housekeeping()  # a cron'd --once flags late replies and applies retention
            code = self._once_result(started)
            self.journal.close()
            return code
        self._open_control()
        self._start_metrics(self.config)
        sdnotify.notify("READY=1")
        watchdog_every = sdnotify.watchdog_interval()
        next_ping = 0.0
        while not self._stop.is_set():
            self._stop.wait(1.0)
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            if time.monotonic() >= self._next_certificate_look:
                self._look_at_certificates(self.config)
                self._look_at_signers()
            self._housekeeping()
            if time.monotonic() >= self._next_stray_look:
                self._look_for_strays()
                self._next_stray_look = time.monotonic() + self.config.daemon.rescan_seconds
            if watchdog_every and time.monotonic() >= next_ping:
                sdnotify.notify("WATCHDOG=1")
                next_ping = time.monotonic() + watchdog_every
                sdnotify.notify(f"STATUS={self._status_line()}")
        sdnotify.notify("STOPPING=1")
        self.log.info("service_stopping")
        if self._control is not None:
            self._control.close()
        self._stop_generation()
        self._stop_metrics()
        self.journal.close()
        self.log.info("service_stopped")
        return 0

    def _housekeeping(self) -> None:
        """Late replies every minute, retention at start and once a day; never fatal."""
        if time.monotonic() >= self._next_overdue_look:
            self._next_overdue_look = time.monotonic() + overdue.LOOK_SECONDS
            try:
                overdue.look(self.config, self.journal, self.log)
            except Exception:  # a look that fails must not stop the service
                self.log.exception("overdue_look_failed")
        if time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + retention.EVERY_SECONDS
            try:
                retention.apply(self.config, self.journal, self.log)
            except Exception:
                self.log.exception("retention_failed")

    def _open_control(self) -> None:
        """The socket `flad replies` and `flad resend` ask through beside the service."""
        control = ControlServer(self.config.daemon.state_dir, self._on_request, self.log)
        try:
            control.start()
        except OSError as exc:  # the service works without it; the commands then say so
            self.log.error("control_socket_failed", error=str(exc),
                           hint="flad replies and flad resend cannot ask the service")
            return
        self._control = control

    def _on_request(self, request: dict[str, object]) -> Answer:
        return servicecalls.handle(request, config=self.config, journal=self.journal,
                                   workers=dict(self.workers))

    def stop(self) -> None:
        """Ask `run` to finish the step in flight and return (what SIGTERM does)."""
        self._stop.set()

    def reload(self) -> None:
        """Ask `run` to reload the configuration (what SIGHUP does)."""
        self._reload.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload.set()
        else:
            self._stop.set()

    def _do_reload(self) -> None:
        try:
            new = config_mod.load(self.config.path)
            self._signers(new)
        except (config_mod.ConfigError, signing.SigningError) as exc:
            self.log.error("reload_refused", error=str(exc))
            return
        try:
            for channel in new.channels:
                FileChecker(channel)  # a broken XSD refuses the reload, not the files
        except xmlcheck.XmlRejected as exc:
            self.log.error("reload_refused", error=str(exc))
            return
        sdnotify.notify("RELOADING=1")
        self._stop_generation(wait_all=True)
        self.config = new
        self._start(new)
        if new.daemon.metrics_listen != (self.metrics.address if self.metrics else None):
            self._stop_metrics()
            self._start_metrics(new)
        sdnotify.notify("READY=1")
        self.log.info("config_reloaded", channels=len(new.channels))

    # -- metrics -------------------------------------------------------------------

    def _start_metrics(self, config: Config) -> None:
        """The endpoint, when configured; one that cannot listen is said, not fatal.

        At start a busy address stops nothing else: files matter more than figures.
        """
        address = config.daemon.metrics_listen
        if address is None:
            return
        try:
            self.metrics = MetricsServer(address, self.instruments.registry, self.readiness)
        except MetricsUnavailable as exc:
            self.log.error("metrics_unavailable", error=str(exc))
            return
        self.log.info("metrics_listening", address=self.metrics.shown(),
                      paths="/metrics /healthz /readyz")

    def _stop_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def readiness(self) -> list[str]:
        """Why the service is not ready (for /readyz); empty when it is.

        Ready: the journal takes a write, and every channel's worker runs and is
        connected, or retrying within its backoff (a retry overdue by more than a
        minute means the worker is stuck). A channel failed for a person (host key,
        credentials) or holding its files (an expired certificate) is not ready.
        """
        reasons: list[str] = []
        problem = self.journal.figures.writable()
        if problem:
            reasons.append(problem)
        states = {s.channel: s for s in self.journal.channel_states()}
        now = time.time()
        for name, worker in list(self.workers.items()):
            state = states.get(name)
            if not worker.is_alive():
                reasons.append(f"channel {name}: its worker is not running")
            elif name in self.holds:
                reasons.append(f"channel {name}: signing held (certificate out of its dates)")
            elif state is None or state.updated_at < self._started:
                reasons.append(f"channel {name}: no contact with the server yet")
            elif state.state == "failed":
                reasons.append(f"channel {name}: failed: {state.error}")
            elif state.state == "retrying" and (state.next_attempt or 0) + 60 < now:
                reasons.append(f"channel {name}: retry overdue since "
                               f"{now - (state.next_attempt or 0):.0f}s")
        return reasons

    def _status_line(self) -> str:
        counts: dict[str, int] = {}
        for sub in self.journal.submissions(states=(*journal.OPEN_STATES, journal.FAILED)):
            counts[sub.state] = counts.get(sub.state, 0) + 1
        queued = sum(v for k, v in counts.items() if k != journal.FAILED)
        n = len(self.workers)
        late = sum(self.journal.overdue_counts().values())
        return (f"{n} channel{'' if n == 1 else 's'}, {queued} queued, "
                f"{counts.get(journal.FAILED, 0)} failed"
                + (f", {late} overdue" if late else ""))

    def _look_for_strays(self) -> None:
        """Say once per folder that files lie where no application is configured."""
        try:
            self._strays = strays.find(self.config)
        except Exception:  # a look that fails must not stop the service
            self.log.exception("stray_look_failed")
            return
        for stray in self._stray_notices.new(self._strays):
            self.log.warning("drop_not_watched", channel=stray.channel,
                             path=str(stray.folder), files=stray.files, fix=stray.fix)

    def _once_result(self, started: float) -> int:
        still_open = self.journal.submissions(states=journal.OPEN_STATES)
        failed_now = [s for s in self.journal.submissions(states=(journal.FAILED,))
                      if s.updated_at >= started]
        not_taken = self.watcher.claimer.failures if self.watcher is not None else 0
        if self.wait_replies > 0:
            this_run = [s for s in self.journal.submissions(since=started)
                        if (s.sent_at or 0) >= started]
            unanswered = [s.id for s in this_run if s.state == journal.SENT]
            refused = [s.id for s in this_run if s.state == journal.REFUSED]
            if unanswered or refused:
                self.log.warning("once_receipts", without_receipt=unanswered,
                                 refused=refused)
                failed_now += [s for s in this_run if s.id in unanswered + refused]
        self.log.info("once_finished", queued=len(still_open), failed=len(failed_now),
                      not_watched=sum(s.files for s in self._strays), not_taken=not_taken,
                      signing_held=sorted(self.holds))
        return 1 if (still_open or failed_now or self._strays or not_taken
                     or self.holds) else 0
