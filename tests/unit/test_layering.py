"""Layering rules that keep the library testable: no celery in vastkeep/, one clock.

Every ``.py`` file under ``vastkeep/`` is parsed with ``ast`` (not grepped), so comments and strings
do not count and aliases (``import time as t``, ``from time import sleep``) are still caught.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "vastkeep"
FILES = sorted(PACKAGE.rglob("*.py"))
CLOCK = PACKAGE / "core" / "clock.py"


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
    assert wall_clock_calls(tree) == [], f"{_rel(path)}: use a vastkeep.core.clock.Clock instead"


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


# ── the arrows: core ← state ← providers ← layer packages ← monitoring, admin, stack, soak, cli ────
RANK = {"core": 0, "state": 1, "providers": 2,
        "tokens": 3, "ports": 3, "ssh": 3, "keepalive": 3, "polling": 3, "supervision": 3, "pool": 3,
        "monitoring": 4, "admin": 4, "proxy": 4, "stack": 4, "soak": 4, "cli": 4}
LAYERS = {name for name, rank in RANK.items() if rank == 3}
#: The simulated cloud stands apart: it may use the foundation only, and only the tools above it use it.
SIM_MAY_IMPORT = {"core", "sim"}


def package_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def vastkeep_imports(tree: ast.AST, path: Path) -> list[tuple[int, str]]:
    """Every ``vastkeep.*`` module a file imports, absolute or relative, as (line, dotted name)."""
    found: list[tuple[int, str]] = []
    here = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "vastkeep"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "vastkeep":
                continue
            if module == "vastkeep":  # ``from vastkeep import ports``: the names are packages
                found += [(node.lineno, f"vastkeep.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, module))
    return found


def arrow_violations(path: Path, tree: ast.AST) -> list[str]:
    me = package_of(path)
    bad = []
    for line, module in vastkeep_imports(tree, path):
        parts = module.split(".")
        if len(parts) < 2:
            continue
        other = parts[1]
        if other == me or other in ("__init__",):
            continue
        if me == "sim":
            if other not in SIM_MAY_IMPORT:
                bad.append(f"line {line}: the simulator imports {module}; it may use vastkeep.core only")
            continue
        if other == "sim":
            if RANK.get(me, 0) < 4:
                bad.append(f"line {line}: {me} imports the simulator")
            continue
        if other not in RANK:
            continue
        if RANK[other] > RANK[me]:
            bad.append(f"line {line}: {me} (rank {RANK[me]}) imports {module} "
                       f"(rank {RANK[other]}): arrows point down")
        elif RANK[other] == RANK[me] and len(parts) > 2:
            bad.append(f"line {line}: {me} imports {module}; use the front door `vastkeep.{other}`")
    return bad


def test_every_package_has_a_rank():
    packages = {package_of(f) for f in FILES} - {"__init__", "sim"}
    assert packages <= set(RANK), f"give these a place in the arrows: {sorted(packages - set(RANK))}"
    assert {p for p in packages} >= LAYERS, "every planned layer has its home"


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_imports_follow_the_arrows(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert arrow_violations(path, tree) == []


def test_the_arrow_check_can_fail():
    cases = {
        PACKAGE / "core" / "x.py": "from vastkeep.state.keys import Keys\n",
        PACKAGE / "ports" / "x.py":
            "from vastkeep.tokens.manager import TokenManager\nfrom vastkeep import pool\n",
        PACKAGE / "sim" / "x.py": "from vastkeep.state import Keys\n",
        PACKAGE / "state" / "x.py": "from ..providers import http\n",
    }
    for path, src in cases.items():
        assert arrow_violations(path, ast.parse(src)), src
    ok = arrow_violations(PACKAGE / "pool" / "x.py", ast.parse(
        "from vastkeep.tokens import TokenManager\nfrom vastkeep.state.store import StateStore\n"))
    assert ok == []


# ── one explicit logger name per package, so moving a module never changes what operators filter on ──
def logger_names(tree: ast.AST) -> list[str | None]:
    names: list[str | None] = []
    for node in ast.walk(tree):
        func = getattr(node, "func", None)
        if isinstance(node, ast.Call) and getattr(func, "attr", getattr(func, "id", "")) == "getLogger":
            arg = node.args[0] if node.args else None
            literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            names.append(arg.value if literal else None)
    return names


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_loggers_are_named_after_their_package(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    expected = f"vastkeep.{package_of(path)}"
    for name in logger_names(tree):
        assert name is not None, f"{_rel(path)}: getLogger needs a literal name ({expected}), not __name__"
        assert name == expected or name.startswith(expected + "."), f"{_rel(path)}: logger {name!r}"


# ── docs/ARCHITECTURE.md is the only module map: every module is on it ─────────────────────────────
def test_every_module_is_on_the_module_map():
    doc = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [_rel(f) for f in FILES if f.name != "__init__.py" and _rel(f) not in doc]
    assert missing == [], f"add these to docs/ARCHITECTURE.md's module map: {missing}"


# ── the provider seam: Vast.ai's words stay in vastkeep/providers/ (and the simulated cloud) ───────
#: Vast.ai's own vocabulary: its row fields, endpoints, rent env keys and the classes that carry its rows.
#: Matched as whole words in every token of the source (names, strings, docstrings, comments). Not listed:
#: ``no_such_instance``, kept in the stored reason ``gone at provider: no_such_instance`` (records and alerts
#: compare that text, so it keeps its wording).
VAST_WORDS = (
    "actual_status", "intended_status", "cur_state", "next_state", "status_msg", "public_ipaddr",
    "direct_port_count", "direct_port_start", "direct_port_end", "ssh_host", "ssh_port", "dph_total",
    "reliability2", "new_contract", "extra_env", "request_logs", "/bundles/", "/asks/",
    "-p 8188:8188", "-p 22:22", "VastInstance", "VastOffer", "VastApi",
)
#: Every cloud's own words (a second cloud adds its list here: docs/ARCHITECTURE.md, "The provider seam").
PROVIDER_WORDS: dict[str, tuple[str, ...]] = {"Vast.ai": VAST_WORDS}
#: Where those words belong; ``state/legacy.py`` only names the record fields stored before the seam.
VOCABULARY_HOMES = ("vastkeep/providers/", "vastkeep/sim/")
VOCABULARY_EXEMPT = {"vastkeep/state/legacy.py"}
_WORD_RES = [(w, re.compile(rf"(?<![\w-]){re.escape(w)}(?![\w])"))
             for words in PROVIDER_WORDS.values() for w in words]


def vast_words(source: str) -> list[str]:
    """``line N: word`` for each cloud word (:data:`PROVIDER_WORDS`) in the source's tokens."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT) and \
                tok.type != getattr(tokenize, "FSTRING_MIDDLE", -1):
            continue
        found += [f"line {tok.start[0]}: {word}" for word, rx in _WORD_RES if rx.search(tok.string)]
    return found


LAYER_FILES = [f for f in FILES
               if not _rel(f).startswith(VOCABULARY_HOMES) and _rel(f) not in VOCABULARY_EXEMPT]


def test_the_vocabulary_scan_covers_the_layers():
    scanned = {_rel(f) for f in LAYER_FILES}
    assert {"vastkeep/polling/decide.py", "vastkeep/pool/reconcile.py", "vastkeep/ports/flow.py",
            "vastkeep/ssh/routes.py", "vastkeep/state/store.py", "vastkeep/state/keys.py"} <= scanned
    assert not any(f.startswith(VOCABULARY_HOMES) for f in scanned)


@pytest.mark.parametrize("path", LAYER_FILES, ids=_rel)
def test_vast_words_stay_in_the_provider_package(path: Path):
    assert vast_words(path.read_text(encoding="utf-8")) == [], (
        f"{_rel(path)} speaks a cloud's own words: read vastkeep.providers.Instance / Offer instead "
        "(docs/ARCHITECTURE.md, 'The provider seam')")


def test_the_vocabulary_scan_can_fail():
    bad = ('def f(row):\n    return row.actual_status == "running"  # cur_state too\n'
           'Q = {"dph_total": {"lte": 1}}\nENV = {"-p 8188:8188": "1"}\nURL = f"/bundles/?x={1}"\n'
           '"""Docstring naming ssh_host."""\nfrom vastkeep.providers import VastInstance\n')
    words = {hit.split(": ", 1)[1] for hit in vast_words(bad)}
    assert words >= {"actual_status", "cur_state", "dph_total", "-p 8188:8188", "/bundles/", "ssh_host",
                     "VastInstance"}
    fine = ('def ssh_host_key(x): ...\nssh_proxy_host = "h"\nprice_per_hour = 1\nreliability = 0.9\n'
            'a = "-p 18188:18188"\nvastkeep_status = "actual_statusx"\n')
    assert vast_words(fine) == []


# ── one place chooses the cloud: a layer never imports a cloud's own module ────────────────────────
#: a cloud's own modules inside ``vastkeep/providers/`` (``vast.py``, ``vast_map.py``, ...): a second cloud
#: adds its prefix here, beside its words in :data:`PROVIDER_WORDS`
CLOUD_MODULE_PREFIXES = ("vast",)
#: who may import them outside ``providers/``: Vast.ai's builder for the registry (with its token pre-flight)
#: and the token-check pools that pace Vast.ai's endpoints. Everyone else asks ``vastkeep.providers`` (the
#: front door, the seam) and gets its client from ``providers.registry.build_provider``.
CLOUD_MODULE_IMPORTERS = {"vastkeep/tokens/preflight.py", "vastkeep/tokens/pools.py"}


def cloud_module_imports(path: Path, tree: ast.AST) -> list[str]:
    """``line N: module`` for each import of a cloud's own module (``vastkeep.providers.vast*``)."""
    found = []
    for line, module in vastkeep_imports(tree, path):
        parts = module.split(".")
        if len(parts) >= 3 and parts[1] == "providers" and parts[2].startswith(CLOUD_MODULE_PREFIXES):
            found.append(f"line {line}: {module}")
    return found


@pytest.mark.parametrize("path", [f for f in LAYER_FILES if _rel(f) not in CLOUD_MODULE_IMPORTERS], ids=_rel)
def test_layers_reach_a_cloud_only_through_the_seam(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert cloud_module_imports(path, tree) == [], (
        f"{_rel(path)} imports a cloud's own module: use vastkeep.providers (Provider, Instance, Offer) and "
        "get the client from vastkeep.providers.registry.build_provider")


def test_the_cloud_module_check_can_fail():
    bad = ast.parse("from vastkeep.providers.vast import VastClient\nimport vastkeep.providers.vast_map\n"
                    "from ..providers.vast_models import VastOffer\n")
    found = cloud_module_imports(PACKAGE / "pool" / "x.py", bad)
    assert len(found) == 3, found
    ok = ast.parse("from vastkeep.providers import Provider\n"
                   "from vastkeep.providers.base import COMFYUI_PORT\n"
                   "from vastkeep.providers.registry import build_provider\n")
    assert cloud_module_imports(PACKAGE / "pool" / "x.py", ok) == []
