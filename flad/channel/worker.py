"""One channel's loop: received files checked in a pool, numbered, uploaded in batches.

A channel that cannot reach its server only holds up its own files; a file that
breaks a stage only fails itself. The loop reads the journal at every turn, so a
restart (or a crash of the loop) starts again from what is recorded. `--once` runs
the same loop until nothing more can move, then fetches the replies and stops.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from flad import journal, logs, signing
from flad.channel.replies import ReplyPoller
from flad.channel.retry import OutOfTime, RetryPolicy, Stopping, one_by_one
from flad.channel.stages import TO_UPLOAD, Checked, Stages
from flad.channel.store import Content, ContentStore
from flad.config import ChannelConfig, Config
from flad.journal import Journal, Submission
from flad.metrics.instruments import Instruments
from flad.remote import PermanentTransportError, SftpChannel, TransportError

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


class ChannelHeld(Exception):
    """The channel cannot go on for now (server unreachable, refused, or out of time)."""


def batches(subs: Sequence[Submission]) -> Iterator[list[Submission]]:
    """Consecutive runs of submissions within the batch limits (at least one each)."""
    batch: list[Submission] = []
    size = 0
    for sub in subs:
        if batch and (len(batch) >= BATCH_FILES or size + sub.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(sub)
        size += sub.size
    if batch:
        yield batch


def _a_bug(exc: Exception, _batch: Sequence[Any]) -> bool:
    """An error that may be one file's fault: anything but the channel's own conditions."""
    return not isinstance(exc, ChannelHeld | Stopping | OutOfTime | TransportError)


class ChannelWorker:
    """One channel's loop, on a thread of its own.

    It owns its thread rather than being one: a subclass of `threading.Thread` shares
    its attribute names with the base class, and Python 3.13's `Thread.__init__` sets
    `_handle`, which once hid this class's method of that name.
    """

    def __init__(self, channel: ChannelConfig, config: Config, journal_: Journal,
                 signer: signing.Signer | None, store: ContentStore, stop: threading.Event,
                 *, once: bool, deadline: float | None, wait_replies: float = 0.0,
                 since: float = 0.0, instruments: Instruments | None = None,
                 held: str | None = None) -> None:
        self.thread = threading.Thread(target=self.run, name=f"channel-{channel.name}",
                                       daemon=True)
        self.channel = channel
        self.config = config
        self.journal = journal_
        self.store = store
        self.stop = stop
        self.once = once
        self.wait_replies = wait_replies
        self.since = since
        self.wake = threading.Event()
        #: the figures only this worker sees (connections, uploads), for /metrics
        self.instruments = instruments or Instruments(process=False)
        self.instruments.start_channel(channel.name, channel.environments())
        #: why the channel takes no file in now (its signing certificate), or None:
        #: received files wait in the spool, signed ones still go, replies still come
        self.held = held
        self.transport = SftpChannel(channel.sftp, channel_name=channel.name,
                                     config_path=config.path)
        self.stages = Stages(channel, config.daemon, journal_, self.transport, signer,
                             config_path=config.path)
        self.log = logs.get("flad.daemon").bind(channel=channel.name)
        self.poller = ReplyPoller(channel, journal_, self.transport,
                                  error_codes=config.daemon.error_codes,
                                  between_slices=self._upload_ready,
                                  min_free_bytes=config.daemon.min_free_bytes,
                                  state_dir=config.daemon.state_dir)
        self.retry = RetryPolicy(max_backoff=config.daemon.max_backoff_seconds,
                                 sleep=self._sleep, on_retry=self._on_retry,
                                 deadline=deadline)
        self.next_poll = 0.0
        self.failed_until = 0.0
        self.gave_up = False
        self._connected_noted = False
        self._pool = ThreadPoolExecutor(PREPARE_WORKERS,
                                        thread_name_prefix=f"prepare-{channel.name}")
        # received submissions handed to the pool, until the worker has numbered them
        self._in_flight: dict[int, int] = {}  # id -> size
        self._checked: list[Checked] = []
        self._flight_lock = threading.Lock()
        # work asked of this channel from outside (the control socket), run by the loop
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue())

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
            self._refuse_requests()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self.stages.close()
            self.transport.close()

    # -- requests from outside (flad replies, flad resend beside the service) ---------

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run `fn` on this worker's thread, between its batches; its result comes later.

        Whatever a command beside the service asks of a channel runs here, so that the
        channel's journal rows, spool and server have one writer only.
        """
        future: Future[Any] = Future()
        if not self.thread.is_alive() and self.thread.ident is not None:
            future.set_exception(RuntimeError("the channel's worker has stopped"))
            return future
        self._requests.put((fn, future))
        self.wake.set()
        if not self.thread.is_alive() and self.thread.ident is not None:
            self._refuse_requests()  # it ended between the look and the put
        return future

    def _serve_requests(self) -> None:
        while True:
            try:
                fn, future = self._requests.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except Stopping:
                future.set_exception(RuntimeError("the service is stopping"))
                raise
            except Exception as exc:  # the asker hears of it; the loop goes on
                future.set_exception(exc)

    def _refuse_requests(self) -> None:
        """The worker ends (stop, reload): whoever still waits hears it now."""
        while True:
            try:
                _fn, future = self._requests.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError(
                    "the service stopped or reloaded before doing it; try again"))

    def fetch_replies_now(self) -> tuple[int, int, int]:
        """One reply poll now, on this worker (`flad replies` beside the service).

        Returns (sets delivered, sets not delivered, sets the bounds left on the server).
        Transport errors reach the asker as they are, after one attempt: the channel's
        own loop keeps its retries.
        """
        before = self.poller.failures
        self.next_poll = time.monotonic() + self.channel.poll_seconds
        delivered = self.poller.poll()
        return delivered, self.poller.failures - before, self.poller.held

    def _loop(self) -> None:
        previous: list[int] = []
        while not self.stop.is_set():
            self._serve_requests()
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
                self._serve_requests()  # a command beside the service waits one batch at most
                if self.stop.is_set() or not self._upload(batch):
                    break
            if self.once and self.gave_up:
                return

    # -- check, in the pool --------------------------------------------------------

    def refill(self) -> None:
        """Hand received files to the pool, which checks and signs them.

        Called when a file is claimed, when a check ends, and by the worker's loop:
        files are checked (and bad ones refused with their reason) even while the
        worker waits for an unreachable server.
        """
        if self.stop.is_set() or self.held:
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
                self._pool.submit(self._check, sub_id, self.store.take(sub_id).data)
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
                checked = self.stages.check(sub, data)
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

    # -- number --------------------------------------------------------------------

    def _number_checked(self) -> None:
        """Give every checked file its number, in one journal transaction."""
        with self._flight_lock:
            checked, self._checked = self._checked, []
        if not checked:
            return
        prepared: list[Submission] = []

        def number(batch: Sequence[Checked]) -> None:
            if len(batch) < len(checked):  # alone, after the batch broke: from the journal
                now = {s.id: s for s in self.journal.get_many([c.sub.id for c in batch])}
                prepared.extend(s for s in now.values() if s.state == journal.PREPARED)
                batch = [c for c in batch if c.sub.id in now
                         and now[c.sub.id].state == journal.RECEIVED]
            prepared.extend(self.stages.number(batch))

        def failed(one: Checked, exc: Exception) -> None:
            now = self.journal.get(one.sub.id)
            if now is not None and now.state == journal.PREPARED:
                prepared.append(now)  # the batch was committed before it broke
            elif now is not None and now.state == journal.RECEIVED:
                self._fail(one.sub.id, exc)

        try:
            one_by_one(checked, number, breaks=_a_bug, fail=failed)
            by_id = {c.sub.id: c for c in checked}
            for sub in prepared:
                self.store.put(sub.id, by_id[sub.id].data, by_id[sub.id].fs)
        finally:
            with self._flight_lock:
                for c in checked:
                    self._in_flight.pop(c.sub.id, None)
            self.refill()

    # -- upload and archive --------------------------------------------------------

    def _upload(self, subs: list[Submission]) -> bool:
        """Upload a batch of numbered submissions, then archive those sent.

        A bug met by the batch sends it again one by one, failing only the file that
        breaks alone. False when the channel cannot go on for now.
        """
        ids = [sub.id for sub in subs]
        contents = {sub_id: self.store.take(sub_id) for sub_id in ids}

        def send(batch: Sequence[Submission]) -> None:
            def step() -> None:  # each retry starts from what is recorded
                fresh = [s for s in self.journal.get_many([s.id for s in batch])
                         if s.state in TO_UPLOAD]
                started = time.monotonic()
                self.stages.upload(fresh, contents, stopping=self.stop.is_set)
                if fresh:
                    self._count_upload(fresh, contents, time.monotonic() - started)

            if not self._guarded(step, [s.id for s in batch]):
                raise ChannelHeld()

        try:
            one_by_one(subs, send, breaks=_a_bug,
                       fail=lambda sub, exc: self._fail(sub.id, exc))
        except ChannelHeld:
            self._keep(contents)
            return False
        finally:
            self._archive(ids)
        return True

    def _count_upload(self, fresh: Sequence[Submission], contents: dict[int, Content],
                      seconds: float) -> None:
        """The upload's time and the bytes of those whose GO went, for /metrics."""
        self.instruments.upload_took(self.channel.name, seconds)
        for sub in self.journal.get_many([s.id for s in fresh]):
            if sub.state in (journal.PREPARED, journal.UPLOADING, journal.FAILED):
                continue  # not gone (a GO after a crash is resolved, never counted twice)
            content = contents.get(sub.id)
            fs = len(content.fs) if content is not None and content.fs else 0
            self.instruments.uploaded(self.channel.name, sub.environment, sub.size + fs)

    def _keep(self, contents: dict[int, Content]) -> None:
        """The contents of those still to send are kept for the next attempt."""
        for sub in self.journal.get_many(list(contents)):
            if sub.state in TO_UPLOAD:
                content = contents[sub.id]
                self.store.put(sub.id, content.data, content.fs)

    def _archive(self, sub_ids: list[int]) -> None:
        for sub in self.journal.get_many(sub_ids):
            if sub.state != journal.SENT:
                continue
            try:
                self.stages.archive(sub)
            except OSError as exc:  # it stays in the spool; start-up archives it again
                self.log.error("archive_failed", submission=sub.id, fi_name=sub.fi_name,
                               error=str(exc))

    # -- replies -------------------------------------------------------------------

    def _awaiting_receipt(self) -> list[Submission]:
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

    def _upload_ready(self) -> None:
        """Between slices of a long reply poll: what is ready to go goes now."""
        self._number_checked()
        self.refill()
        open_now = self.journal.open_states(self.channel.name)
        ready = self.journal.get_many(
            [i for i, state in open_now if state != journal.RECEIVED][:READ_AHEAD])
        for batch in batches(ready):
            if self.stop.is_set() or not self._upload(batch):
                break

    def _poll_replies(self) -> None:
        self.next_poll = time.monotonic() + self.channel.poll_seconds
        try:
            if self._guarded(self.poller.poll, []):
                self.instruments.polled(self.channel.name)
        except Stopping:
            raise
        except Exception as exc:  # a bug met by one poll: say it, the next poll tries again
            self._fail(None, exc)

    # -- the channel's retries -----------------------------------------------------

    def _guarded(self, fn: Callable[[], Any], batch: Sequence[int]) -> bool:
        """Run one step under the retry policy; False when the channel cannot go on.

        `batch`: the submissions the step works on, which get its transport error
        (for `flad status`). Errors other than the transport's propagate.
        """
        which: dict[str, Any] = ({"submission": batch[0]} if len(batch) == 1
                                 else {"submissions": list(batch)} if batch else {})
        def counted() -> Any:  # each failed attempt, by kind, for /metrics
            try:
                return fn()
            except TransportError as exc:
                self.instruments.connection_failed(self.channel.name, exc)
                raise

        try:
            self.retry.run(counted)
        except PermanentTransportError as exc:
            minutes = self.config.daemon.auth_retry_minutes
            self.failed_until = time.monotonic() + minutes * 60
            self.journal.set_channel_state(self.channel.name, "failed", error=str(exc),
                                           next_attempt=time.time() + minutes * 60)
            for one in batch:
                self.journal.note_error(one, str(exc))
            self.log.error("channel_failed", error=str(exc), retry_in_minutes=minutes,
                           **which)
            return False
        except OutOfTime as exc:
            self.gave_up = True
            self.log.error("channel_gave_up", error=str(exc), **which)
            return False
        except TransportError as exc:  # only when the retry loop was stopped
            for one in batch:
                self.journal.note_error(one, str(exc))
            return False
        self.instruments.connected(self.channel.name)
        if self.retry.attempts or not self._connected_noted:
            # a new process clears what an earlier one left (failed, retrying) too
            self.journal.set_channel_state(self.channel.name, "connected")
            self._connected_noted = True
        if self.retry.attempts:
            self.log.info("channel_recovered", attempts=self.retry.attempts)
            self.retry.attempts = 0
        return True

    def _on_retry(self, error: str, attempts: int, delay: float) -> None:
        self.journal.set_channel_state(self.channel.name, "retrying", error=error,
                                       attempts=attempts, next_attempt=time.time() + delay)
        self.log.warning("retry_scheduled", error=error, attempt=attempts,
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
