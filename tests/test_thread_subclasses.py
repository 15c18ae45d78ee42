"""No subclass of `threading.Thread` may shadow a name of the base class.

Python 3.13's `Thread.__init__` sets `self._handle`, which hid a method of that name on
flad's channel worker: every lone file stayed `prepared`. The base class's private names
change between versions, so a subclass defines no private name at all and none of the
base's public ones (`run` is the one meant to be overridden).
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"__init__", "run"}
# names Thread's instances carry on some supported version, whatever runs this test
KNOWN_BASE = {"_handle", "_started", "_is_stopped", "_tstate_lock", "_ident", "_name",
              "_target", "_args", "_kwargs", "_daemonic", "_native_id", "_stderr",
              "_invoke_excepthook", "_initialized"}


def base_names() -> set[str]:
    return set(dir(threading.Thread)) | set(vars(threading.Thread())) | KNOWN_BASE


def is_thread_base(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "Thread"
    return isinstance(node, ast.Name) and node.id == "Thread"


def defined_names(cls: ast.ClassDef) -> set[str]:
    """Names the class body defines and every `self.X = ...` in its methods."""
    names: set[str] = set()
    for item in cls.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(item.name)
        elif isinstance(item, ast.Assign):
            names.update(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == "self"):
                names.add(target.attr)
    return names


def shadowing(source: str) -> list[str]:
    found = []
    base = base_names()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and any(is_thread_base(b) for b in node.bases):
            for name in sorted(defined_names(node) - ALLOWED):
                private = name.startswith("_") and not name.startswith("__")
                if private or name in base:
                    found.append(f"{node.name}.{name}")
    return found


def test_no_thread_subclass_shadows_the_base_class() -> None:
    problems = []
    for folder in ("flad", "tests", "bench", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            problems += [f"{path.relative_to(ROOT)}: {p}"
                         for p in shadowing(path.read_text(encoding="utf-8"))]
    assert problems == []


def test_the_guard_sees_the_313_crash() -> None:
    """The shape that crashed on 3.13 is caught on every version."""
    crashed = (
        "import threading\n"
        "class Worker(threading.Thread):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.ready = 1\n"
        "    def _handle(self):\n"
        "        pass\n"
        "    def name(self):\n"
        "        pass\n"
    )
    assert shadowing(crashed) == ["Worker._handle", "Worker.name"]
