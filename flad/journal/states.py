"""A submission's states and the one table of the moves between them.

Every state change in the journal asks `check` first, inside the transaction that
writes it, so a move that the table does not list never reaches the database: a file
already sent cannot be numbered again, a rejected one cannot be marked sent, a late
receipt cannot pull a notified submission back. The states are a `StrEnum`, so rows
(plain strings in SQLite) and string comparisons keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class State(StrEnum):
    """Where a submission stands; the values are what the journal's rows hold."""

    RECEIVED = "received"  # claimed into the spool, waiting for its check
    REJECTED = "rejected"  # refused by the check (or as a duplicate); file in rejected/
    PREPARED = "prepared"  # numbered and named, FS made: the number is spent
    UPLOADING = "uploading"  # an upload step (data, go) has started
    SENT = "sent"  # the GO is on the server
    FAILED = "failed"  # a permanent error while open; `flad resend` may put it back
    ACKNOWLEDGED = "acknowledged"  # positive receipt (ACRF ResultCode 1)
    REFUSED = "refused"  # negative receipt: the platform will not process it
    NOTIFIED = "notified"  # the application's (final) notification arrived


#: The state a submission is created in (`add_received`); no move leads into creation.
INITIAL = State.RECEIVED

_REPLY_VERDICTS = frozenset({State.ACKNOWLEDGED, State.REFUSED, State.NOTIFIED})

#: Every legal move, from -> the states it may go to. A state missing from a set on
#: the right is refused by `check`.
#: - A receipt or notification may arrive for any submission whose GO may have
#:   reached the server: while `uploading` (the GO went, `sent` not yet written),
#:   `sent`, and `failed` (an error met after the GO). A notified submission stays
#:   notified: a late receipt never moves it back.
#: - `received` is reached again only through `flad resend`, from `rejected` or
#:   `failed`; a sent or answered submission is never sent twice.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.RECEIVED: frozenset({State.PREPARED, State.REJECTED, State.FAILED}),
    State.REJECTED: frozenset({State.RECEIVED}),
    State.PREPARED: frozenset({State.UPLOADING, State.FAILED}),
    State.UPLOADING: frozenset({State.UPLOADING, State.SENT, State.FAILED}) | _REPLY_VERDICTS,
    State.SENT: _REPLY_VERDICTS,
    State.FAILED: frozenset({State.RECEIVED}) | _REPLY_VERDICTS,
    State.ACKNOWLEDGED: _REPLY_VERDICTS,
    State.REFUSED: _REPLY_VERDICTS,
    State.NOTIFIED: frozenset({State.NOTIFIED}),
}

STATES: tuple[State, ...] = tuple(State)
#: Submissions a channel worker still has to move forward.
OPEN_STATES: tuple[State, ...] = (State.RECEIVED, State.PREPARED, State.UPLOADING)
#: Content that reached (or may have reached) the platform: the duplicate check looks here.
SENT_STATES: tuple[State, ...] = (State.PREPARED, State.UPLOADING, State.SENT,
                                  State.ACKNOWLEDGED, State.NOTIFIED)


class TransitionError(ValueError):
    """A state change the transition table does not allow; nothing was written.

    A `ValueError`, as the journal's guards always raised, so callers that catch
    that keep working.
    """

    def __init__(self, sub_id: int, current: str | None, target: State) -> None:
        self.sub_id = sub_id
        self.current = current
        self.target = target
        sources = ", ".join(sources_of(target))
        found = current or "absent"
        if target is State.PREPARED:  # the numbering step's own words, as it always said
            message = (f"submission {sub_id} is not waiting to be prepared: it is {found}, "
                       f"expected {sources}")
        else:
            message = (f"submission {sub_id} is {found}, expected one of {sources}: it "
                       f"cannot become {target}")
        super().__init__(message)


def sources_of(target: State) -> tuple[State, ...]:
    """The states from which `target` may be reached, in declaration order."""
    return tuple(s for s in State if target in TRANSITIONS[s])


def allowed(current: str, target: State) -> bool:
    """Whether the table lets a submission in `current` move to `target`."""
    try:
        return target in TRANSITIONS[State(current)]
    except ValueError:  # a state this flad does not know: nothing is allowed from it
        return False


def check(sub_id: int, current: str | None, target: State) -> None:
    """Raise `TransitionError` unless the move `current` -> `target` is in the table.

    `current` is None when the submission does not exist.
    """
    if current is None or not allowed(current, target):
        raise TransitionError(sub_id, current, target)
