"""The channels a configuration already has, and the refusal of a second one per quality.

The platform allows one SFTP channel per quality (guide §3.3): a second `flad init` for
the same company and quality is refused with step 3b, before anything is written. The
file is read leniently here, since it may not load yet.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flad import identity
from flad.init import guide
from flad.init.request import EXIT_PROBLEM, InitError, InitRequest
from flad.init.steps import render_lines

__all__ = ["Existing", "read_existing", "refusal"]


@dataclass(frozen=True)
class Existing:
    """The channels a configuration already has, read leniently (it may not load yet)."""

    channels: tuple[Mapping[str, Any], ...]

    def same_quality(self, company: str, quality: str) -> Mapping[str, Any] | None:
        for table in self.channels:
            raw_company = table.get("company_id")
            if not isinstance(raw_company, str):
                continue
            if (identity.normalize_enterprise_number(raw_company) == company
                    and table.get("quality") == quality):
                return table
        return None

    def names(self) -> set[str]:
        return {t["name"] for t in self.channels if isinstance(t.get("name"), str)}


def read_existing(path: Path) -> Existing:
    if not path.exists():
        return Existing(())
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InitError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InitError(f"{path} is not valid TOML ({exc}); fix it first "
                        f"(flad check -c {path} --offline lists the problems)") from None
    tables = raw.get("channel", [])
    if not isinstance(tables, list):
        return Existing(())
    return Existing(tuple(t for t in tables if isinstance(t, dict)))


def _article(word: str) -> str:
    """ "an employer channel", "a service_provider channel" """
    return "an" if word[:1] in "aeiou" else "a"


def refusal(req: InitRequest, path: Path, existing: Mapping[str, Any]) -> InitError:
    """Why a second channel for one quality is refused, and what step 3b says to do."""
    name = existing.get("name", "?")
    raw_apps = existing.get("application", [])
    apps = [a for a in raw_apps if isinstance(a, dict)] if isinstance(raw_apps, list) else []
    has_fla = any(a.get("name") == guide.FLA_APPLICATION for a in apps)
    details = []
    if "sender_id" in existing:
        details.append(f"sender {existing['sender_id']}")
    sftp = existing.get("sftp")
    if isinstance(sftp, dict) and "username" in sftp:
        details.append(f"user {sftp['username']}")
    shown = f" ({', '.join(details)})" if details else ""
    lines = [
        f"refused: company {req.company_id} already has {_article(req.quality)} "
        f"{req.quality} channel in {path}: {name!r}{shown}.",
        f"The platform allows one SFTP channel per quality (the official guide {guide.GUIDE}, "
        f"{guide.SECTIONS['step3']}): the same channel carries every application (DmfA, "
        "DIMONA, FLA, ...), so a second one can be neither created nor used. Nothing was "
        "written.",
        f"Follow step 3b instead (guide {guide.SECTIONS['3b']}):",
        *(f"  - {line}" for line in render_lines(guide.STEP_3B_LINES, req.quality)),
    ]
    if has_fla:
        lines.append(f"  - channel {name!r} already has an application "
                     f"{guide.FLA_APPLICATION!r} in flad's configuration: nothing to add there.")
    else:
        lines += [
            f"  - in {path}, add to channel {name!r} an FLA application:",
            "        [[channel.application]]",
            f'        name = "{guide.FLA_APPLICATION}"',
            '        code = "...."   # the FLA code from the FLA batch manual (not public here)',
        ]
    return InitError("\n".join(lines), EXIT_PROBLEM)
