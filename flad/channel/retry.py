"""The channel's one retry policy, and its one "one by one when something breaks" rule.

A transient transport error is retried with exponential backoff and jitter, for ever
or until `--once`'s deadline; anything else is not retried here. When a step over a
batch breaks in a way that may be the fault of one file, the batch is run again file
by file, so that only the file that breaks alone fails: `one_by_one` is that rule,
written once for numbering, uploading and the server's refusals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import tenacity

from flad.remote import PermanentTransportError, TransportError

T = TypeVar("T")


class Stopping(Exception):
    """The service is stopping: leave the retry loop at once."""


class OutOfTime(Exception):
    """`--once` gave up waiting for the server; files stay queued for the next run."""


def is_transient(exc: BaseException) -> bool:
    """Only the transport's own transient errors are retried: never an unknown exception."""
    return isinstance(exc, TransportError) and not isinstance(exc, PermanentTransportError)


class RetryPolicy:
    """Exponential backoff with jitter on transient errors, up to `max_backoff` seconds.

    `sleep` waits (and raises Stopping when the service stops); `on_retry` is told of
    every retry (error, attempt, delay) before its wait; `deadline` (monotonic) makes
    the policy give up with OutOfTime rather than wait past it.
    """

    def __init__(self, *, max_backoff: float, sleep: Callable[[float], None],
                 on_retry: Callable[[str, int, float], None],
                 deadline: float | None = None) -> None:
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.on_retry = on_retry
        self.deadline = deadline
        #: retries since the last success (the worker resets it when the channel recovers)
        self.attempts = 0

    def run(self, fn: Callable[[], Any]) -> Any:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_exponential_jitter(initial=1, max=self.max_backoff, jitter=1),
            stop=tenacity.stop_never,
            sleep=self.sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return retrying(fn)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        delay = state.upcoming_sleep
        exc = state.outcome.exception() if state.outcome else None
        error = str(exc) if exc else "unknown error"
        self.attempts += 1
        if self.deadline is not None and time.monotonic() + delay > self.deadline:
            raise OutOfTime(f"server still unreachable after --max-wait: {error}")
        self.on_retry(error, self.attempts, delay)


def one_by_one(items: Sequence[T], run: Callable[[Sequence[T]], None], *,
               breaks: Callable[[Exception, Sequence[T]], bool],
               fail: Callable[[T, Exception], None]) -> None:
    """Run `run` over the batch; if it breaks, over each item alone.

    `breaks(exc, batch)` says whether an error may be one item's fault (any other error
    propagates at once, from the batch or from an item alone). An item that breaks
    alone is handed to `fail`; the others go on. A batch of one is failed at once.
    `run` must start from what the journal says: after a broken batch, part of it may
    have been recorded.
    """
    try:
        run(items)
        return
    except Exception as exc:
        if not breaks(exc, items):
            raise
        if len(items) == 1:
            fail(items[0], exc)
            return
    for item in items:
        try:
            run([item])
        except Exception as exc:
            if not breaks(exc, [item]):
                raise
            fail(item, exc)
