"""Named points where the crash suite kills flad; off unless a test turns them on.

`FLAD_FAULT_POINT=name` makes the process SIGKILL itself when it reaches that point
(`FLAD_FAULT_SKIP=n` lets the first n passes go by). Unset, `point` is one dictionary
lookup on an empty set.
"""

from __future__ import annotations

import os
import signal

_ARMED: dict[str, int] = {}


def _arm_from_environment() -> None:
    name = os.environ.get("FLAD_FAULT_POINT")
    if name:
        _ARMED[name] = int(os.environ.get("FLAD_FAULT_SKIP", "0"))


def point(name: str) -> None:
    if not _ARMED or name not in _ARMED:
        return
    if _ARMED[name] > 0:
        _ARMED[name] -= 1
        return
    os.kill(os.getpid(), signal.SIGKILL)


_arm_from_environment()
