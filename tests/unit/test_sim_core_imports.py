"""The simulator's core stands without its web layer: ``vastkeep.sim.core`` (and what it imports) never
imports aiohttp, and the route modules reach the simulator through the core, never through ``server.py``.

Checked twice: statically (``ast`` over the modules, so an import hidden in a function still counts) and
for real (a child interpreter where importing ``aiohttp`` raises).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SIM = Path(__file__).parents[2] / "vastkeep" / "sim"
ROUTE_MODULES = ("vast_api", "tokens_api", "control_api")


def sim_imports(path: Path) -> set[str]:
    """Every module a file imports, absolute names, including imports inside functions and TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def core_closure() -> dict[str, set[str]]:
    """The core and every ``vastkeep.sim`` module it reaches, each with what it imports."""
    seen: dict[str, set[str]] = {}
    todo = ["core"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = sim_imports(SIM / f"{name}.py")
        todo += [m.rsplit(".", 1)[1] for m in seen[name] if m.startswith("vastkeep.sim.")]
    return seen


def test_the_core_and_what_it_imports_never_import_aiohttp():
    closure = core_closure()
    assert {"core", "state", "faults", "net", "ssh"} <= set(closure)
    bad = {name: sorted(m for m in mods if m.split(".")[0] == "aiohttp") for name, mods in closure.items()}
    assert {k: v for k, v in bad.items() if v} == {}
    assert "server" not in closure and "comfy" not in closure


@pytest.mark.parametrize("module", ROUTE_MODULES)
def test_route_modules_import_the_core_never_the_server(module: str):
    mods = sim_imports(SIM / f"{module}.py")
    assert "vastkeep.sim.server" not in mods
    assert "vastkeep.sim.core" in mods


def test_the_detector_sees_a_hidden_import(tmp_path: Path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from aiohttp import web\n    import vastkeep.sim.server\n")
    assert {"aiohttp", "vastkeep.sim.server"} <= sim_imports(probe)


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "aiohttp" or name.startswith("aiohttp."):
            raise ImportError("aiohttp is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
"""


def test_the_core_runs_with_aiohttp_blocked(tmp_path: Path):
    """A Simulator is built and an instance created, stopped and destroyed without aiohttp importable."""
    script = BLOCKER + f"""
import asyncio
from pathlib import Path
from vastkeep.sim.core import SimConfig, Simulator
assert not any(m == "aiohttp" or m.startswith("aiohttp.") for m in sys.modules)

async def main():
    sim = Simulator(SimConfig(state_dir=Path({str(tmp_path)!r}), ssh_backend="off"))
    await sim.start()
    inst = sim.new_instance(sim.offers[0], {{"label": "core-only", "env": {{"A": "1"}}, "disk": 20}})
    await sim.make_running(inst)
    sim.append_log(inst, ["hello"])
    row = inst.to_api(sim.clock.now())
    assert row["actual_status"] == "running" and row["extra_env"] == [["A", "1"]] and row["disk_space"] == 20
    inst.lifecycle.stop_s = 0
    await sim.set_intended(inst, "stopped")
    assert (inst.actual_status, inst.intended_status, inst.cur_state) == ("exited", "stopped", "stopped")
    assert sim.container_log(inst, tail=1) == "hello\\n"
    await sim.destroy(inst)
    await sim.stop_instances()
    print("core ok")

asyncio.run(main())
try:
    import vastkeep.sim.server  # noqa: F401
except ImportError:
    print("server needs aiohttp")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["core", "ok", "server", "needs", "aiohttp"]


COMFY_CORE = ("engine", "host", "plan", "validate", "nodes", "execute", "png")


@pytest.mark.parametrize("module", COMFY_CORE)
def test_the_simulated_comfyuis_engine_has_no_web_layer(module: str):
    """Only ``comfy/app.py`` and ``comfy/routes.py`` speak HTTP; the prompt engine runs without them."""
    mods = sim_imports(SIM / "comfy" / f"{module}.py")
    assert not [m for m in mods if m.split(".")[0] == "aiohttp"]
    assert not mods & {"vastkeep.sim.comfy.app", "vastkeep.sim.comfy.routes", "vastkeep.sim.server"}


def test_the_comfy_engine_validates_and_plans_with_aiohttp_blocked():
    script = BLOCKER + """
from vastkeep.sim.comfy import engine, host, plan  # noqa: F401
from vastkeep.sim.comfy.validate import validate_prompt
graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p"}}}
assert validate_prompt(graph, [], lambda f: False)[0] is True
assert plan.order(graph, ["2"], set()) == ["1", "2"]
assert not any(m == "aiohttp" or m.startswith("aiohttp.") for m in sys.modules)
print("engine ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["engine", "ok"]
