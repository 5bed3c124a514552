"""Layering rules that keep the library testable: no celery in vastkeep/, one clock.

Every ``.py`` file under ``vastkeep/`` is parsed with ``ast`` (not grepped), so comments and strings
do not count and aliases (``import time as t``, ``from time import sleep``) are still caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "vastkeep"
FILES = sorted(PACKAGE.rglob("*.py"))
CLOCK = PACKAGE / "clock.py"


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def celery_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "celery"]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] == "celery":
                found.append(node.module or "")
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in
              ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and str(node.args[0].value).split(".")[0] == "celery"):
            found.append(str(node.args[0].value))
    return found


def wall_clock_calls(tree: ast.AST) -> list[str]:
    """Calls of time.time / time.sleep, however ``time`` or the function was imported."""
    time_aliases: set[str] = set()
    func_aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            time_aliases |= {a.asname or a.name for a in node.names if a.name == "time"}
        elif isinstance(node, ast.ImportFrom) and node.module == "time" and node.level == 0:
            func_aliases |= {a.asname or a.name: a.name for a in node.names if a.name in ("time", "sleep")}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call | ast.Attribute | ast.Name):
            continue
        if (isinstance(node, ast.Attribute) and node.attr in ("time", "sleep")
                and isinstance(node.value, ast.Name) and node.value.id in time_aliases):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in func_aliases and isinstance(node.ctx, ast.Load):
            found.append(f"line {node.lineno}: {node.id} (time.{func_aliases[node.id]})")
    return found


def test_the_scan_covers_the_package():
    assert CLOCK in FILES and len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_no_module_under_vastkeep_imports_celery(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert celery_imports(tree) == [], f"{_rel(path)} imports celery; Celery belongs in worker/ and tasks/"


@pytest.mark.parametrize("path", [f for f in FILES if f != CLOCK], ids=_rel)
def test_only_clock_py_reads_the_wall_clock_or_sleeps(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert wall_clock_calls(tree) == [], f"{_rel(path)}: use a vastkeep.clock.Clock instead"


def test_the_detectors_catch_what_they_look_for():
    """The scanners must be able to fail, or the tests above prove nothing."""
    bad = ast.parse(
        "import celery\nfrom celery.app import task\nimport importlib\nimportlib.import_module('celery')\n"
        "import time as t\nfrom time import sleep as nap, monotonic\n"
        "def f():\n    t.time(); t.sleep(1); nap(2); monotonic()\n"
    )
    assert celery_imports(bad) == ["celery", "celery.app", "celery"]
    calls = wall_clock_calls(bad)
    assert len(calls) == 3 and any("nap" in c for c in calls)
    good = ast.parse("import time\nx = time.monotonic()\n# time.sleep(1)\ns = 'time.time()'\n")
    assert celery_imports(good) == [] and wall_clock_calls(good) == []
