"""Process life: one worker per channel, the outbox watcher, signals and systemd.

A channel that cannot reach its server only holds up its own files; a file that
breaks a step only fails itself. SIGTERM finishes the step in flight; SIGHUP reloads
the configuration (a broken new one is refused and the old one kept).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import tenacity

from flad import config as config_mod
from flad import journal, logs, sdnotify, signing, strays, xmlcheck
from flad.config import ChannelConfig, Config
from flad.journal import Journal
from flad.outbox import Claimed, Claimer, OutboxWatcher, drop_folders
from flad.pipeline import ChannelPipeline, Checked, Content, FileChecker
from flad.remote import (
    PermanentTransportError,
    ProxySettings,
    RemoteIncompatible,
    SftpChannel,
    SftpSettings,
    TransportError,
    paramiko_compat,
)
from flad.replies import ReplyPoller
from flad.statelock import StateLock, StateLocked

STOP_GRACE_SECONDS = 9.0
#: Files checked and signed at once per channel, while the channel's connection uploads.
PREPARE_WORKERS = 2
#: At most this many files of a channel checked ahead of the uploads, in the pool or
#: waiting for their number (each may hold its content in memory).
MAX_AHEAD = 64
AHEAD_BYTES = 64 * 1024 * 1024
#: Prepared submissions uploaded together at most: one journal transaction per step and
#: two round trips for the whole batch instead of per file. Bounds the wait for a GO.
BATCH_FILES = 32
BATCH_BYTES = 32 * 1024 * 1024
#: Numbered submissions read from the journal per turn of the worker's loop.
READ_AHEAD = 4 * BATCH_FILES
_CACHE_LIMIT_BYTES = 256 * 1024 * 1024
#: Content of numbered submissions kept in memory for their upload (else read again).
_READY_LIMIT_BYTES = 96 * 1024 * 1024


class Stopping(Exception):
    """The service is stopping: leave the retry loop at once."""


class OutOfTime(Exception):
    """`--once` gave up waiting for the server; files stay queued for the next run."""


def journal_path(config: Config) -> Path:
    return config.daemon.state_dir / "journal.sqlite3"


def sftp_settings(channel: ChannelConfig) -> SftpSettings:
    s = channel.sftp
    return SftpSettings(
        host=s.host, port=s.port, username=s.username, private_key=s.private_key,
        passphrase=s.passphrase, known_hosts=s.known_hosts, legacy_ssh_rsa=s.legacy_ssh_rsa,
        connect_timeout=s.connect_timeout, request_timeout=s.request_timeout,
        keepalive_seconds=s.keepalive_seconds, passphrase_source=s.passphrase_source,
        proxy=ProxySettings(s.proxy, s.proxy_credentials) if s.proxy else None)


def load_signer(channel: ChannelConfig) -> signing.Signer | None:
    """The channel's signer, or None when it signs nothing; SigningError when broken."""
    sc = channel.signing
    if sc is None:
        return None
    return signing.load_signer(sc.certificate, sc.private_key, sc.pkcs12, sc.passphrase,
                               sc.passphrase_source)


def batches(subs: Sequence[journal.Submission]) -> Iterator[list[journal.Submission]]:
    """Consecutive runs of submissions within the batch limits (at least one each)."""
    batch: list[journal.Submission] = []
    size = 0
    for sub in subs:
        if batch and (len(batch) >= BATCH_FILES or size + sub.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(sub)
        size += sub.size
    if batch:
        yield batch


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransportError) and not isinstance(exc, PermanentTransportError)


@dataclass
class DataCache:
    """Content read at claim time, handed on so that no file is read twice.

    Bounded in bytes: what does not fit is read again from the spool when needed.
    """

    limit: int = _CACHE_LIMIT_BYTES
    _items: dict[int, Content] = field(default_factory=dict)
    _size: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, sub_id: int, data: bytes | None, fs: bytes | None = None) -> None:
        size = len(data or b"") + len(fs or b"")
        with self._lock:
            if (data is not None or fs is not None) and self._size + size <= self.limit:
                self._items[sub_id] = Content(data, fs)
                self._size += size

    def take(self, sub_id: int) -> Content:
        with self._lock:
            content = self._items.pop(sub_id, None)
            if content is None:
                return Content()
            self._size -= len(content.data or b"") + len(content.fs or b"")
            return content


class ChannelWorker:
    """One channel's loop, on a thread of its own.

    It owns its thread rather than being one: a subclass of `threading.Thread` shares
    its attribute names with the base class, and Python 3.13's `Thread.__init__` sets
    `_handle`, which once hid this class's method of that name.
    """

    def __init__(self, channel: ChannelConfig, config: Config, journal_: Journal,
                 signer: signing.Signer | None, cache: DataCache, stop: threading.Event, *,
                 once: bool, deadline: float | None, wait_replies: float = 0.0,
                 since: float = 0.0) -> None:
        self.thread = threading.Thread(target=self.run, name=f"channel-{channel.name}",
                                       daemon=True)
        self.channel = channel
        self.config = config
        self.journal = journal_
        self.cache = cache
        self.stop = stop
        self.once = once
        self.deadline = deadline
        self.wait_replies = wait_replies
        self.since = since
        self.wake = threading.Event()
        self.transport = SftpChannel(sftp_settings(channel), channel_name=channel.name)
        self.pipeline = ChannelPipeline(channel, config.daemon, journal_, self.transport,
                                        signer, config_path=config.path)
        self.log = logs.get("flad.daemon").bind(channel=channel.name)
        self.poller = ReplyPoller(channel, journal_, self.transport,
                                  error_codes=config.daemon.error_codes)
        self.next_poll = 0.0
        self.failed_until = 0.0
        self.gave_up = False
        self._attempts = 0
        self._connected_noted = False
        self._pool = ThreadPoolExecutor(PREPARE_WORKERS,
                                        thread_name_prefix=f"prepare-{channel.name}")
        # received submissions handed to the pool, until the worker has numbered them
        self._in_flight: dict[int, int] = {}  # id -> size
        self._checked: list[Checked] = []
        self._flight_lock = threading.Lock()
        self.ready = DataCache(limit=_READY_LIMIT_BYTES)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self._loop()
                    return
                except Stopping:
                    return
                except Exception:  # never vanish: say it, pause, start over from the journal
                    self.log.exception("worker_crashed")
                    if self.once:
                        return
                    self.stop.wait(5.0)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self.pipeline.close()
            self.transport.close()

    def _loop(self) -> None:
        previous: list[int] = []
        while not self.stop.is_set():
            if time.monotonic() < self.failed_until:
                if self.once:
                    return
                self._sleep(min(5.0, self.failed_until - time.monotonic()))
                continue
            self._number_checked()
            open_now = self.journal.open_states(self.channel.name)
            if self.once:
                if not open_now:  # everything sent: fetch the replies, and stop
                    self._poll_replies()
                    self._wait_for_receipts()
                    return
            elif time.monotonic() >= self.next_poll:
                self._poll_replies()
            self.refill()
            # only the rows about to be uploaded are read whole: a burst leaves hundreds
            # of files open, and this loop runs after every check
            ready = self.journal.get_many(
                [i for i, state in open_now if state != journal.RECEIVED][:READ_AHEAD])
            if not ready:
                ids = [i for i, _ in open_now]
                with self._flight_lock:
                    busy = bool(self._in_flight)
                if self.once and ids and ids == previous and not busy:
                    return  # no progress possible in this run; the journal keeps them
                previous = ids
                self.wake.wait(min(1.0, max(0.0, self.next_poll - time.monotonic()))
                               if not self.once else 0.2)
                self.wake.clear()
                continue
            previous = []
            for batch in batches(ready):
                if self.stop.is_set() or not self._handle_many(batch):
                    break
            if self.once and self.gave_up:
                return

    def refill(self) -> None:
        """Hand received files to the pool, which checks and signs them.

        Called when a file is claimed, when a check ends, and by the worker's loop:
        files are checked (and bad ones refused with their reason) even while the
        worker waits for an unreachable server.
        """
        if self.stop.is_set():
            return
        with self._flight_lock:
            if self._ahead_full():
                return  # enough checked ahead: no need to read the journal
        # the oldest few are enough: those in flight, and as many more as may join them
        for sub_id, size in self.journal.received_sizes(self.channel.name, MAX_AHEAD):
            with self._flight_lock:
                if self._ahead_full():
                    return
                if sub_id in self._in_flight:
                    continue
                self._in_flight[sub_id] = size
            try:
                self._pool.submit(self._check, sub_id, self.cache.take(sub_id).data)
            except RuntimeError:  # the pool is shutting down: the next start does it
                with self._flight_lock:
                    self._in_flight.pop(sub_id, None)
                return

    def _ahead_full(self) -> bool:
        """Whether the pool holds enough: in files, and in bytes (each holds its content)."""
        return bool(self._in_flight) and (len(self._in_flight) >= MAX_AHEAD
                                          or sum(self._in_flight.values()) >= AHEAD_BYTES)

    def _check(self, sub_id: int, data: bytes | None) -> None:
        """In the pool: check and sign one file; the worker numbers it next."""
        checked = None
        try:
            sub = self.journal.get(sub_id)  # a refill may have seen it before it changed
            if sub is not None and sub.state == journal.RECEIVED:
                checked = self.pipeline.check(sub, data)
        except Exception as exc:  # one file that breaks a step only fails itself
            self._fail(sub_id, exc)
        finally:
            with self._flight_lock:
                if checked is not None:
                    self._checked.append(checked)
                else:
                    self._in_flight.pop(sub_id, None)
            self.wake.set()
            with contextlib.suppress(Exception):
                self.refill()

    def _fail(self, sub_id: int | None, exc: BaseException, **which: Any) -> None:
        """A bug met by one step: say it, and fail only its submission (if still open)."""
        reason = " ".join(f"internal error: {type(exc).__name__}: {exc}".split())
        self.log.exception("step_failed", error=reason,
                           **(which or {"submission": sub_id}))
        if sub_id is not None:
            with contextlib.suppress(Exception):
                self.journal.mark_failed(sub_id, reason)

    def _number_checked(self) -> None:
        """Give every checked file its number, in one journal transaction."""
        with self._flight_lock:
            checked, self._checked = self._checked, []
        if not checked:
            return
        try:
            try:
                prepared = self.pipeline.prepare_many(checked)
            except Exception:  # find the file that breaks it, and fail only that one
                prepared = []
                for one in checked:
                    now = self.journal.get(one.sub.id)  # the batch may have been committed
                    if now is not None and now.state == journal.PREPARED:
                        prepared.append(now)
                        continue
                    if now is None or now.state != journal.RECEIVED:
                        continue
                    try:
                        prepared += self.pipeline.prepare_many([one])
                    except Exception as exc:
                        self._fail(one.sub.id, exc)
            by_id = {c.sub.id: c for c in checked}
            for sub in prepared:
                self.ready.put(sub.id, by_id[sub.id].data, by_id[sub.id].fs)
        finally:
            with self._flight_lock:
                for c in checked:
                    self._in_flight.pop(c.sub.id, None)
            self.refill()

    def _awaiting_receipt(self) -> list[journal.Submission]:
        return [s for s in self.journal.submissions(channel=self.channel.name,
                                                    states=(journal.SENT,))
                if (s.sent_at or 0) >= self.since]

    def _wait_for_receipts(self) -> None:
        """`--once --wait-replies`: poll until what this run sent has its receipt."""
        if self.wait_replies <= 0:
            return
        until = time.monotonic() + self.wait_replies
        every = max(0.5, min(self.channel.poll_seconds, 5.0))
        while self._awaiting_receipt() and not self.stop.is_set():
            left = until - time.monotonic()
            if left <= 0:
                self.log.warning("receipts_missing", waited_seconds=self.wait_replies,
                                 submissions=[s.id for s in self._awaiting_receipt()])
                return
            self.stop.wait(min(every, left))
            self._poll_replies()

    def _poll_replies(self) -> None:
        self.next_poll = time.monotonic() + self.channel.poll_seconds
        self._guarded(self.poller.poll, None)

    def _handle_many(self, subs: list[journal.Submission]) -> bool:
        """Upload a batch of numbered submissions; one by one if something breaks.

        False when the channel cannot go on for now.
        """
        contents = {sub.id: self.ready.take(sub.id) for sub in subs}
        if len(subs) == 1:
            return self._send_one(subs[0], contents[subs[0].id])
        broke: list[BaseException] = []

        def step() -> None:
            fresh = [s for s in self.journal.get_many([s.id for s in subs])
                     if s.state in (journal.PREPARED, journal.UPLOADING)]
            try:
                self.pipeline.upload_many(fresh, contents, stopping=self.stop.is_set)
            except (TransportError, Stopping, OutOfTime):
                raise
            except Exception as exc:  # a bug met by one file: find it, fail only it
                broke.append(exc)

        if not self._guarded(step, None, [s.id for s in subs]):
            now = self.journal.get_many([s.id for s in subs])
            for sub in now:  # the content of those still to send is kept for next time
                if sub.state in (journal.PREPARED, journal.UPLOADING):
                    content = contents[sub.id]
                    self.ready.put(sub.id, content.data, content.fs)
            self._archive([s.id for s in now if s.state == journal.SENT])
            return False
        if broke:
            for sub in subs:
                if self.stop.is_set() or not self._send_one(sub, contents[sub.id]):
                    return False
            return True
        self._archive([s.id for s in subs])
        return True

    def _archive(self, sub_ids: list[int]) -> None:
        for sub in self.journal.get_many(sub_ids):
            if sub.state != journal.SENT:
                continue
            try:
                self.pipeline.archive(sub)
            except OSError as exc:  # it stays in the spool; start-up archives it again
                self.log.error("archive_failed", submission=sub.id, fi_name=sub.fi_name,
                               error=str(exc))

    def _send_one(self, sub: journal.Submission, content: Content | None = None) -> bool:
        """Advance one submission; False when the channel cannot go on for now."""

        def step() -> None:
            fresh = self.journal.get(sub.id)  # each retry starts from what is recorded
            if fresh is not None:
                self.pipeline.advance(fresh, content)

        return self._guarded(step, sub)

    def _guarded(self, fn: Callable[[], Any], sub: journal.Submission | None,
                 batch: Sequence[int] = ()) -> bool:
        """Run one step with retries; False when the channel cannot go on for now.

        `batch`: the submissions a batch step works on, which get its transport error
        (for `flad status`) as a single `sub` does.
        """
        sub_id = sub.id if sub is not None else None
        which: dict[str, Any] = ({"submission": sub_id} if sub_id is not None
                                 else {"submissions": list(batch)} if batch else {})
        noted = [sub_id] if sub_id is not None else list(batch)
        try:
            self._retrying(fn)
        except PermanentTransportError as exc:
            minutes = self.config.daemon.auth_retry_minutes
            self.failed_until = time.monotonic() + minutes * 60
            self.journal.set_channel_state(self.channel.name, "failed", error=str(exc),
                                           next_attempt=time.time() + minutes * 60)
            for one in noted:
                self.journal.note_error(one, str(exc))
            self.log.error("channel_failed", error=str(exc), retry_in_minutes=minutes,
                           **which)
            return False
        except OutOfTime as exc:
            self.gave_up = True
            self.log.error("channel_gave_up", error=str(exc), **which)
            return False
        except TransportError as exc:  # only when the retry loop was stopped
            for one in noted:
                self.journal.note_error(one, str(exc))
            return False
        except Stopping:
            raise
        except Exception as exc:
            self._fail(sub_id, exc, **which)
            return True
        if self._attempts or not self._connected_noted:
            # a new process clears what an earlier one left (failed, retrying) too
            self.journal.set_channel_state(self.channel.name, "connected")
            self._connected_noted = True
        if self._attempts:
            self.log.info("channel_recovered", attempts=self._attempts)
            self._attempts = 0
        return True

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_exponential_jitter(
                initial=1, max=self.config.daemon.max_backoff_seconds, jitter=1),
            stop=tenacity.stop_never,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return retrying(fn)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        delay = state.upcoming_sleep
        exc = state.outcome.exception() if state.outcome else None
        error = str(exc) if exc else "unknown error"
        self._attempts += 1
        if self.deadline is not None and time.monotonic() + delay > self.deadline:
            raise OutOfTime(f"server still unreachable after --max-wait: {error}")
        self.journal.set_channel_state(self.channel.name, "retrying", error=error,
                                       attempts=self._attempts,
                                       next_attempt=time.time() + delay)
        self.log.warning("retry_scheduled", error=error, attempt=self._attempts,
                         delay_seconds=round(delay, 2))

    def _sleep(self, seconds: float) -> None:
        """Wait before a retry; files checked meanwhile still get their number."""
        end = time.monotonic() + seconds
        while not self.stop.is_set():
            try:
                self._number_checked()
            except Exception:  # never let it fail the step whose retry is waiting
                self.log.exception("numbering_failed")
            left = end - time.monotonic()
            if left <= 0:
                return
            self.wake.wait(left)
            self.wake.clear()
        raise Stopping()


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
        self.cache = DataCache()
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

    # -- start and stop ------------------------------------------------------------

    def _signers(self, config: Config) -> dict[str, signing.Signer | None]:
        signers: dict[str, signing.Signer | None] = {}
        for ch in config.channels:
            signer = load_signer(ch)
            if signer is not None:
                report = signing.check_signer(signer)
                for warning in report.warnings:
                    self.log.warning("certificate_warning", channel=ch.name, warning=warning)
                if report.errors:
                    raise signing.SigningError(f"channel {ch.name}: {'; '.join(report.errors)}")
            signers[ch.name] = signer
        return signers

    def _start(self, config: Config) -> None:
        signers = self._signers(config)
        for warning in config.warnings:
            self.log.warning("config_warning", warning=warning)
        claimer = Claimer(config, self.journal)
        folders = drop_folders(config)
        claimer.recover(folders)
        self._finish_interrupted(config, signers)
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
            ch.name: ChannelWorker(ch, config, self.journal, signers[ch.name], self.cache,
                                   self._generation_stop, once=self.once, deadline=deadline,
                                   wait_replies=self.wait_replies, since=self._started)
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

    def _finish_interrupted(self, config: Config, signers: dict[str, Any]) -> None:
        """Rejections and archives that a crash left half done."""
        pipelines: dict[str, ChannelPipeline] = {}
        for sub in self.journal.submissions(states=(journal.REJECTED, journal.SENT)):
            channel = config.channel(sub.channel)
            if channel is None or not Path(sub.spool_path).exists():
                continue
            if channel.name not in pipelines:
                pipelines[channel.name] = ChannelPipeline(
                    channel, config.daemon, self.journal, SftpChannel(sftp_settings(channel)),
                    signers[sub.channel])
            pipeline = pipelines[channel.name]
            try:
                if sub.state == journal.REJECTED and sub.rejected_path:
                    pipeline.finish_rejection(sub)
                elif sub.state == journal.SENT:
                    pipeline.archive(sub, recovering=True)
            except OSError as exc:
                self.log.error("recovery_failed", channel=sub.channel, submission=sub.id,
                               error=str(exc))

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
        self.cache.put(claimed.submission_id, claimed.data)
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
        self._start(self.config)
        if self.once:
            for worker in self.workers.values():
                worker.join()
            code = self._once_result(started)
            self.journal.close()
            return code
        sdnotify.notify("READY=1")
        watchdog_every = sdnotify.watchdog_interval()
        next_ping = 0.0
        while not self._stop.is_set():
            self._stop.wait(1.0)
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            if time.monotonic() >= self._next_stray_look:
                self._look_for_strays()
                self._next_stray_look = time.monotonic() + self.config.daemon.rescan_seconds
            if watchdog_every and time.monotonic() >= next_ping:
                sdnotify.notify("WATCHDOG=1")
                next_ping = time.monotonic() + watchdog_every
                sdnotify.notify(f"STATUS={self._status_line()}")
        sdnotify.notify("STOPPING=1")
        self.log.info("service_stopping")
        self._stop_generation()
        self.journal.close()
        self.log.info("service_stopped")
        return 0

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
        sdnotify.notify("READY=1")
        self.log.info("config_reloaded", channels=len(new.channels))

    def _status_line(self) -> str:
        counts: dict[str, int] = {}
        for sub in self.journal.submissions(states=(*journal.OPEN_STATES, journal.FAILED)):
            counts[sub.state] = counts.get(sub.state, 0) + 1
        queued = sum(v for k, v in counts.items() if k != journal.FAILED)
        n = len(self.workers)
        return (f"{n} channel{'' if n == 1 else 's'}, {queued} queued, "
                f"{counts.get(journal.FAILED, 0)} failed")

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
                      not_watched=sum(s.files for s in self._strays), not_taken=not_taken)
        return 1 if still_open or failed_now or self._strays or not_taken else 0
