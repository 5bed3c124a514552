"""The benches run with the package alone: no script in ``bench/`` imports ``tests`` (and through it pytest)
or pytest itself; what they share lives in ``bench/support.py`` or the library."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
FORBIDDEN = ("tests", "pytest")


def imported_roots(source: str) -> set[str]:
    """The top-level package of every import in ``source`` (at any depth: inside functions too)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            roots.add(str(node.args[0].value).split(".")[0])
    return roots


def test_the_checker_sees_every_form_of_import() -> None:
    src = ("import pytest\nfrom tests.fixtures.redis_server import start_redis_server\n"
           "def f():\n    import tests.fixtures.helpers\n    importlib.import_module('pytest')\n")
    assert imported_roots(src) == {"pytest", "tests"}
    ok = "from bench.support import start_redis_server\nimport redis\n"
    assert imported_roots(ok) == {"bench", "redis"}


def test_no_bench_imports_tests_or_pytest() -> None:
    scripts = sorted(BENCH.glob("*.py"))
    assert len(scripts) >= 12, scripts
    offenders = {p.name: sorted(imported_roots(p.read_text()) & set(FORBIDDEN)) for p in scripts}
    assert {name: bad for name, bad in offenders.items() if bad} == {}
