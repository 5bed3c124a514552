"""The suite's own layout: a test file never imports another test file.

What tests share (fixtures, rigs, helpers, Celery apps for subprocess workers) lives in ``tests/fixtures/``;
importing from a ``test_*.py`` runs that module's tests' imports and fixtures in the importer, and couples two
files that look independent.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(source: str) -> set[str]:
    """Every module a source imports, at any depth (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.update(f"{'.' * node.level}{node.module or ''}.{alias.name}" for alias in node.names)
            found.add(f"{'.' * node.level}{node.module or ''}")
    return found


def test_module_names(source: str) -> set[str]:
    """The imported modules whose last component is a test file's name (``test_*``)."""
    return {m for m in imported_modules(source) if m.rsplit(".", 1)[-1].startswith("test_")}


test_module_names.__test__ = False  # a helper named like a test


@pytest.mark.parametrize(("source", "expected"), [
    ("from tests.integration.test_admin_api import KEY\n", {"tests.integration.test_admin_api"}),
    ("import tests.unit.test_docs\n", {"tests.unit.test_docs"}),
    ("def f():\n    from tests.integration import test_sim_ssh\n", {"tests.integration.test_sim_ssh"}),
    ("from .test_store import store\n", {".test_store"}),
    ("from tests.fixtures.helpers import wait_for\nimport pytest\n", set()),
    ("from vastkeep.state.store import StateStore\n", set()),
])
def test_the_checker_sees_every_form_of_import(source: str, expected: set[str]) -> None:
    assert test_module_names(source) == expected


def test_no_test_file_imports_another_test_file() -> None:
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        names = test_module_names(path.read_text(encoding="utf-8"))
        if names:
            offenders[str(path.relative_to(TESTS.parent))] = sorted(names)
    assert offenders == {}, f"move what these share into tests/fixtures/: {offenders}"
