"""Commands beside the running service: ask it through its control socket, print its answer.

Used by `flad replies` and `flad resend` when the state lock is taken. A lock holder
that takes no requests (a `flad run --once`, or a service whose socket is gone) is
named with the lock's own message, so the admin knows whom to wait for.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flad import control
from flad.cli.common import EXIT_PROBLEM
from flad.statelock import StateLocked


def ask(state_dir: Path, request: dict[str, Any], command: str, locked: StateLocked) -> int:
    """Exit code of the service's answer; 1 with the lock's message when none comes."""
    try:
        answer = control.ask(state_dir, request)
    except control.ControlUnavailable as exc:
        print(f"flad {command}: {locked}", file=sys.stderr)
        print(f"flad {command}: and it takes no requests ({exc}); try again when it ends",
              file=sys.stderr)
        return EXIT_PROBLEM
    except TimeoutError:
        print(f"flad {command}: the running service did not answer within "
              f"{control.ANSWER_SECONDS:.0f} s; it goes on by itself (see its log)",
              file=sys.stderr)
        return EXIT_PROBLEM
    for line in answer.out:
        print(line)
    for line in answer.err:
        print(line, file=sys.stderr)
    return answer.code
