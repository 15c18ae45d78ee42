"""Files dropped where flad does not look: said once, with the folder that would take them.

A payroll system that writes into `outbox/test/dmfa/` on a channel without a `dmfa`
application, or straight into `outbox/test/`, would otherwise wait for a receipt that
never comes. flad reads no such file (it may not be meant for it); it only names it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from flad.config import ChannelConfig, Config
from flad.droplayout import OWN_FOLDERS, is_ignored
from flad.platform import ENVIRONMENTS

#: Entries looked at per folder at most: a folder of millions is named, not listed.
_SCAN_LIMIT = 10_000


@dataclass(frozen=True)
class Stray:
    channel: str
    folder: Path
    files: int
    fix: str

    def line(self) -> str:
        plural = "s" if self.files != 1 else ""
        return f"{self.files} file{plural} in {self.folder}, where flad does not look: {self.fix}"


def _files_in(folder: Path) -> int:
    """Regular files that are not being written (temporary names and dot files aside)."""
    count = 0
    try:
        with os.scandir(folder) as entries:
            for seen, entry in enumerate(entries):
                if seen >= _SCAN_LIMIT:
                    break
                if is_ignored(entry.name):
                    continue
                try:
                    if stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                        count += 1
                except OSError:
                    continue
    except OSError:
        return 0
    return count


def _subfolders(folder: Path) -> list[str]:
    """Folder names in `folder` (links not followed), at most _SCAN_LIMIT of them looked at:
    whoever writes the outbox could fill it with folders."""
    names = []
    try:
        with os.scandir(folder) as entries:
            for seen, entry in enumerate(entries):
                if seen >= _SCAN_LIMIT:
                    break
                if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
    except OSError:
        return []
    return sorted(names)


def find_for(ch: ChannelConfig) -> list[Stray]:
    """The folders of one channel's outbox that hold files flad will never take."""
    apps = [a.name for a in ch.applications]
    example = f"{ch.outbox}/test/{apps[0]}/" if apps else "an application's folder"
    found: list[Stray] = []

    def note(folder: Path, fix: str) -> None:
        files = _files_in(folder)
        if files:
            found.append(Stray(ch.name, folder, files, fix))

    note(ch.outbox, f"drop files into <outbox>/<environment>/<application>/, e.g. {example}")
    for name in _subfolders(ch.outbox):
        if name in ENVIRONMENTS or name in OWN_FOLDERS:
            continue
        note(ch.outbox / name, f"{name!r} is not an environment "
             f"({', '.join(ENVIRONMENTS)}); use e.g. {example}")
    for env in ENVIRONMENTS:
        env_folder = ch.outbox / env
        note(env_folder, f"put them in an application's folder: "
             f"{', '.join(f'{env_folder}/{a}/' for a in apps)}")
        for name in _subfolders(env_folder):
            if name in apps:
                continue
            note(env_folder / name,
                 f"channel {ch.name} has no application {name!r} (it has "
                 f"{', '.join(apps) or 'none'}); add a [[channel.application]] with "
                 f"name = {name!r}, or move them into {env_folder}/<application>/")
    return found


def find(config: Config) -> list[Stray]:
    """Every folder of every outbox that holds files flad will never take."""
    return [stray for ch in config.channels for stray in find_for(ch)]


class StrayNotices:
    """Says each stray folder once while it stays stray, again if it comes back."""

    def __init__(self) -> None:
        self._said: set[Path] = set()

    def new(self, strays: list[Stray]) -> list[Stray]:
        now = {s.folder for s in strays}
        fresh = [s for s in strays if s.folder not in self._said]
        self._said = now
        return fresh
