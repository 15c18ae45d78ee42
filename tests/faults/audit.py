"""What the fault suites count: lost files, GO sent twice, replies seen twice."""

from __future__ import annotations

import collections
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from flad import journal, naming
from tests.harness import Install
from tests.sshd import SshServer

DONE = (journal.SENT, journal.ACKNOWLEDGED, journal.REFUSED, journal.NOTIFIED)


def audit_sending(inst: Install, sshd: SshServer, dropped: list[str]) -> dict[str, int]:
    subs = inst.submissions()
    states = {s.drop_name: s.state for s in subs}
    sent = sum(1 for name in dropped if states.get(name) in DONE)
    refused = sum(1 for name in dropped if states.get(name) == journal.REJECTED)
    lost = len(dropped) - sent - refused
    go_opens = collections.Counter(
        p.split("/", 1)[1] for op, p in sshd.sftp_operations()
        if op == "open" and p.startswith(("IN/GO.", "INTEST/GO.")))
    duplicates = sum(c - 1 for c in go_opens.values() if c > 1)
    on_server = [n for folder in ("IN", "INTEST") for n in os.listdir(sshd.root / folder)
                 if n.startswith("GO.")]
    keys = collections.Counter(naming.parse(n).set_key for n in on_server)
    duplicates += sum(c - 1 for c in keys.values() if c > 1)  # a sequence number reused
    for sub in subs:  # a GO on the server whose FI is not whole counts as lost
        folder = "IN" if sub.environment == "production" else "INTEST"
        if sub.go_name and (sshd.root / folder / sub.go_name).exists():
            fi = sshd.root / folder / (sub.fi_name or "")
            if not fi.is_file() or fi.stat().st_size != sub.size:
                lost += 1
    return {"dropped": len(dropped), "sent": sent, "refused": refused, "lost": lost,
            "go_duplicates": duplicates}


class Consumer(threading.Thread):
    """Payroll software reading the inbox: takes each set as soon as its GO is there."""

    def __init__(self, inbox: Path, into: Path) -> None:
        super().__init__(daemon=True)
        self.inbox = inbox
        self.into = into
        self.seen: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.take()
            time.sleep(0.02)

    def take(self) -> None:
        if not self.inbox.is_dir():
            return
        for go in [n for n in os.listdir(self.inbox) if n.startswith("GO.")]:
            key = naming.parse(go).set_key
            self.seen[key] += 1
            target = self.into / f"{key}.{self.seen[key]}"
            target.mkdir(parents=True)
            for name in os.listdir(self.inbox):
                if naming.parse(name).set_key == key and name != go:
                    shutil.move(self.inbox / name, target / name)
            shutil.move(self.inbox / go, target / go)

    def finish(self) -> None:
        self.stop.set()
        self.join(5)
        self.take()


def audit_replies(consumer: Consumer, sshd: SshServer, expected: list[str]) -> dict[str, Any]:
    twice = sum(c - 1 for c in consumer.seen.values() if c > 1)
    missing = [k for k in expected if consumer.seen[k] == 0]
    left = [n for n in os.listdir(sshd.root / "OUTTEST")]
    return {"replies": sum(1 for k in expected if consumer.seen[k]), "replies_twice": twice,
            "replies_lost": len(missing), "left_on_server": len(left)}
