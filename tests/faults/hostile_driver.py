"""flad's claimer on its own, run as the service user by test_hostile_users.

`python -m tests.faults.hostile_driver CONFIG NAME SECONDS`: offers NAME of the
channel's test/fla drop folder to the claimer, again and again, for SECONDS, while
the payroll user races it; prints how many claims were made, as JSON. No upload: the
race is between a drop and its claim.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from flad import config as config_mod
from flad.journal import Journal
from flad.outbox import Claimer, OutboxWatcher


def main(argv: list[str]) -> int:
    config = config_mod.load(Path(argv[0]))
    name, seconds = argv[1], float(argv[2])
    journal = Journal(config.daemon.state_dir / "journal.sqlite3")
    claimer = Claimer(config, journal)
    claimed: list[int] = []
    watcher = OutboxWatcher(config, claimer, lambda c: claimed.append(c.submission_id))
    watcher.prepare_folders()
    channel = config.channels[0]
    path = channel.outbox / "test" / "fla" / name
    deadline = time.monotonic() + seconds
    tries = 0
    while time.monotonic() < deadline:
        watcher.consider(path, immediate=True)
        tries += 1
    watcher.record_unrecorded()
    journal.close()
    print(json.dumps({"tries": tries, "claimed": len(claimed),
                      "stopped": sorted(str(p) for p in claimer.stopped)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
