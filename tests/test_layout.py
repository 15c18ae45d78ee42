"""README's "How the code is laid out" holds: imports go downward only.

The table says what each room may import; this reads every module's imports (at the top
and inside functions, since a lazy import is still a dependency) and refuses a room
reaching one it may not, so a newcomer's shortcut shows in the suite, not in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FLAD = Path(__file__).resolve().parent.parent / "flad"

SHELL = ("flad.config", "flad.journal", "flad.remote", "flad.channel", "flad.outbox",
         "flad.spool", "flad.daemon", "flad.cli", "flad.init", "flad.status",
         "flad.sandbox", "flad.strays")

#: room (a module or a package, as a path under flad/) -> rooms it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "sftp_settings.py": ("flad.",),  # nothing of flad
    "droplayout.py": ("flad.",),
    "safedir.py": ("flad.",),
    "taking.py": ("flad.",),
    "filemodes.py": SHELL,  # safedir only, below every room of the shell
    "sharedhost.py": tuple(m for m in SHELL if m != "flad.config"),
    "secrets.py": ("flad.",),
    "proxy_address.py": ("flad.",),
    "listen_address.py": ("flad.",),
    "naming.py": SHELL,
    "identity.py": SHELL,
    "signing.py": SHELL,
    "xmlcheck.py": SHELL,
    "filecheck.py": tuple(m for m in SHELL if m != "flad.config"),
    "config.py": tuple(m for m in SHELL if m != "flad.config"),
    "remote": tuple(m for m in SHELL if m != "flad.remote"),
    "journal": tuple(m for m in SHELL if m != "flad.journal"),
    "spool.py": ("flad.remote", "flad.channel", "flad.outbox", "flad.daemon", "flad.cli",
                 "flad.init", "flad.sandbox"),
    "strays.py": ("flad.outbox", "flad.spool", "flad.journal", "flad.remote",
                  "flad.channel", "flad.daemon", "flad.cli"),
    "outbox.py": ("flad.remote", "flad.channel", "flad.daemon", "flad.cli", "flad.init"),
    "channel": ("flad.daemon", "flad.cli", "flad.init", "flad.sandbox"),
    "metrics": ("flad.channel", "flad.outbox", "flad.spool", "flad.daemon", "flad.cli",
                "flad.init", "flad.sandbox"),
    "control.py": ("flad.",),
    "overdue.py": ("flad.remote", "flad.channel", "flad.outbox", "flad.spool", "flad.daemon",
                   "flad.cli", "flad.init", "flad.sandbox"),
    "retention.py": ("flad.remote", "flad.channel", "flad.outbox", "flad.spool",
                     "flad.daemon", "flad.cli", "flad.init", "flad.sandbox"),
    "servicecalls.py": ("flad.daemon", "flad.cli", "flad.init", "flad.sandbox"),
    "daemon.py": ("flad.cli", "flad.init"),
    "init": ("flad.cli",),
    "sandbox": ("flad.config", "flad.journal", "flad.channel", "flad.outbox", "flad.spool",
                "flad.daemon", "flad.cli", "flad.init"),
}


def _imports(path: Path, root: Path = FLAD) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _modules(room: str) -> list[Path]:
    target = FLAD / room
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_only_what_the_readme_allows(room: str) -> None:
    modules = _modules(room)
    assert modules and all(m.exists() for m in modules), f"flad/{room} is gone: update the table"
    wrong = []
    for module in modules:
        for name in sorted(_imports(module)):
            if not name.startswith("flad"):
                continue
            if any(name == bad.rstrip(".") or name.startswith(bad.rstrip(".") + ".")
                   or (bad == "flad." and name.startswith("flad"))
                   for bad in FORBIDDEN[room]):
                wrong.append(f"{module.relative_to(FLAD.parent)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The reading above can see a lazy, relative import reaching upward."""
    sample = tmp_path / "flad" / "remote" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("def f():\n    from ..journal import Journal\n    import flad.config\n")
    found = _imports(sample, tmp_path / "flad")
    assert {"flad.journal", "flad.journal.Journal", "flad.config"} <= found
