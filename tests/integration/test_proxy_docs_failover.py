"""docs/proxy.md's failover example, run exactly as written (its code blocks taken from the page) against a
real proxy process, the admin API, the simulated cloud and Redis, with two ready instances (the lease's and a
spare), from a folder holding a ``.vastkeep/stack.json`` the way ``vastkeep up`` leaves it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.fixtures.comfy import png_size
from tests.fixtures.proxy import ADMIN_KEY
from vastkeep.state import EventLog

DOC = Path(__file__).parents[2] / "docs" / "proxy.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def write_stack_json(rig, folder: Path) -> None:
    """``.vastkeep/stack.json`` in ``folder`` the way ``vastkeep up`` leaves it, pointing at the rig."""
    (folder / ".vastkeep").mkdir(exist_ok=True)
    info = rig.sim.info
    (folder / ".vastkeep" / "stack.json").write_text(json.dumps({
        "admin_api_url": rig.admin_url, "admin_api_key": ADMIN_KEY, "proxy_url": rig.url, "simulated": True,
        "simulator": {"control_url": info["control_url"], "control_token": info["control_token"]}}))


def run_docs_example(rig, folder: Path) -> str:
    """The page's setup blocks and its failover example, run as written in ``folder``; its output."""
    admin_setup = [b for b in blocks("bash") if "stack.json" in b and "export ADMIN_URL" in b]
    sim_setup = [b for b in blocks("bash") if "stack.json" in b and "export SIM_URL" in b]
    example = [b for b in blocks("python") if b.startswith("# failover example:")]
    assert len(admin_setup) == 1 and len(sim_setup) == 1 and len(example) == 1
    (folder / "example.py").write_text(example[0])
    env = {k: v for k, v in rig.env.items() if k not in ("ADMIN_URL", "ADMIN_KEY", "SIM_URL", "SIM_TOKEN")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    done = subprocess.run(["bash", "-c", admin_setup[0] + "\n" + sim_setup[0] + "\npython3 example.py\n"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_failover_example_runs_as_written(proxy_rig, redis_client, tmp_path):
    rig = proxy_rig
    first, spare = rig.ready_instance(), rig.ready_instance()
    write_stack_json(rig, tmp_path)
    out = run_docs_example(rig, tmp_path)
    assert f"crashed instance {first['id']}" in out
    assert f"failover: {first['id']} -> {spare['id']}" in out and "re-submitted: True" in out
    assert "PNG: True" in out and "released: True" in out
    assert png_size((tmp_path / "doc-failover.png").read_bytes()) == (64, 64)
    kinds = [e.kind for e in EventLog(redis_client).read(count=10_000)]
    assert kinds.count("failover-done") == 1 and kinds.count("prompt-resubmitted") == 1
