"""What the running service does when a command beside it asks (see `flad.control`).

`flad replies` and `flad resend` cannot work themselves while the service holds the
state folder; they ask it, and each request runs on the worker of the channel it
concerns, between that worker's batches: one writer per channel, as always. The
answer is what the command would have printed had it done the work itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flad import signing, status
from flad.channel.worker import ChannelWorker
from flad.config import Config
from flad.control import Answer
from flad.journal import Journal
from flad.remote import TransportError

#: How long a request may wait for a worker (one in a long retry wait, or mid-batch).
WAIT_SECONDS = 840.0


def handle(request: Mapping[str, Any], *, config: Config, journal: Journal,
           workers: Mapping[str, ChannelWorker], wait: float = WAIT_SECONDS) -> Answer:
    command = request.get("command")
    if command == "replies":
        return _replies(request.get("channel"), workers, wait)
    if command == "resend":
        return _resend(request.get("id"), config, journal, workers, wait)
    return Answer(2, err=[f"the service does not know the request {command!r}"])


def _replies(channel: object, workers: Mapping[str, ChannelWorker], wait: float) -> Answer:
    if channel is not None and not isinstance(channel, str):
        return Answer(2, err=["`channel` must be a channel name"])
    chosen = [w for name, w in workers.items() if channel is None or name == channel]
    if not chosen:
        return Answer(1, err=[f"no channel {channel!r} in the running service's "
                              "configuration" if channel else "the service runs no channel"])
    asked: list[tuple[ChannelWorker, Future[Any]]] = [
        (w, w.call(w.fetch_replies_now)) for w in chosen]
    answer = Answer(0)
    for worker, future in asked:
        name = worker.channel.name
        try:
            delivered, failed, held = future.result(timeout=wait)
        except FutureTimeout:
            answer.err.append(f"{name}: the service is still busy on this channel after "
                              f"{wait:.0f} s; it fetches the replies itself every "
                              f"{worker.channel.poll_seconds:g} s")
            answer.code = 1
            continue
        except (TransportError, signing.SigningError, RuntimeError) as exc:
            answer.err.append(f"{name}: {exc}")
            answer.code = 1
            continue
        one = replies_report(name, str(worker.channel.inbox), delivered, failed, held,
                             by_service=True)
        answer.out += one.out
        answer.err += one.err
        answer.code = max(answer.code, one.code)
    return answer


def replies_report(name: str, inbox: str, delivered: int, failed: int, held: int, *,
                   by_service: bool = False) -> Answer:
    """What `flad replies` says of one channel's poll, whether it ran the poll itself
    or the service did: one text for both."""
    whose = "the service's log" if by_service else "the log"
    answer = Answer(0, out=[f"{name}: {delivered} reply set(s) delivered to {inbox}"
                            + (" (by the running service)" if by_service else "")])
    if failed:
        answer.err.append(f"{name}: {failed} reply set(s) not delivered "
                          f"(reply_delivery_failed or reply_untrusted in {whose} says why); "
                          "they stay on the server")
        answer.code = 1
    if held:
        answer.err.append(f"{name}: {held} reply set(s) left on the server by "
                          "max_reply_bytes or min_free_bytes (reply_too_large or "
                          f"reply_space_low in {whose}, flad status lists them)")
        answer.code = 1
    return answer


def _resend(sub_id: object, config: Config, journal: Journal,
            workers: Mapping[str, ChannelWorker], wait: float) -> Answer:
    if not isinstance(sub_id, int) or isinstance(sub_id, bool):
        return Answer(2, err=["`id` must be a submission number"])
    sub = journal.get(sub_id)
    if sub is None:
        return Answer(1, err=[f"flad resend: no submission {sub_id}"])
    worker = workers.get(sub.channel)
    try:
        if worker is None:  # a channel no longer configured: resend says so itself
            message = status.resend(config, journal, sub_id)
        else:
            future = worker.call(lambda: status.resend(config, journal, sub_id))
            message = future.result(timeout=wait)
    except FutureTimeout:
        return Answer(1, err=[f"flad resend: the service is still busy on channel "
                              f"{sub.channel} after {wait:.0f} s; try again"])
    except (ValueError, RuntimeError) as exc:
        return Answer(1, err=[f"flad resend: {exc}"])
    if worker is not None:
        worker.refill()
        worker.wake.set()
    return Answer(0, out=[str(message)])
