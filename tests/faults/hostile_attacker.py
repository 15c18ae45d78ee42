"""The payroll user's side of test_hostile_users: what a hostile dropper can do.

Run as the payroll user (`runuser`), one attack per sub-command; each writes what it
dropped last under each name to a JSON log, so that the test can tell a file lost
from one the dropper itself replaced.

- `swap DIR NAME TARGET SECONDS`: drop NAME, then swap it for a link to TARGET (and
  try a hard link to it), again and again.
- `replace DIR NAME SECONDS LOG`: drop a big NAME, then drop a newer one over it,
  again and again, so that newer files land while flad copies the older ones.
- `hold DIR NAME GO`: drop NAME keeping a descriptor open, wait for the file GO,
  then write other bytes through the descriptor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path


def _drop(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, folder / name)


def swap(folder: Path, name: str, target: str, seconds: float) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    swaps = hard = 0
    link = folder / f".{name}.lnk"
    while time.monotonic() < deadline:
        _drop(folder, name, f"<not-xml>{swaps}</not-xml>\n".encode())
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.symlink(target, link)
        os.rename(link, folder / name)
        swaps += 1
        with contextlib.suppress(OSError):  # refused by protected_hardlinks, as it should
            os.link(target, folder / f"hard-{swaps}.xml")
            hard += 1
    return {"swaps": swaps, "hard_links": hard}


def replace(folder: Path, name: str, seconds: float, log: Path) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    drops = 0
    last = ""
    while time.monotonic() < deadline:
        data = (f"<older>{drops}</older>\n".encode() * 200_000)  # ~3.6 MB: a slow copy
        _drop(folder, name, data)
        time.sleep(0.002 * (drops % 7))
        newer = f"<newer>{drops}</newer>\n".encode() * 1000
        _drop(folder, name, newer)
        last = hashlib.sha256(newer).hexdigest()
        drops += 1
        time.sleep(0.01)
    log.write_text(json.dumps({"last": {name: last}, "drops": drops}))
    return {"drops": drops}


def hold(folder: Path, name: str, go: Path, first: bytes, then: bytes) -> None:
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
    os.write(fd, first)
    os.rename(tmp, folder / name)
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.pwrite(fd, then, 0)
    os.fsync(fd)
    os.close(fd)


def main(argv: list[str]) -> int:
    command, folder, name = argv[0], Path(argv[1]), argv[2]
    if command == "swap":
        print(json.dumps(swap(folder, name, argv[3], float(argv[4]))))
    elif command == "replace":
        print(json.dumps(replace(folder, name, float(argv[3]), Path(argv[4]))))
    elif command == "hold":
        hold(folder, name, Path(argv[3]), Path(argv[4]).read_bytes(),
             Path(argv[5]).read_bytes())
    else:
        raise SystemExit(f"unknown attack {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
