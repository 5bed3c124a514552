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


def test_the_failover_example_runs_as_written(proxy_rig, redis_client, tmp_path):
    rig = proxy_rig
    first, spare = rig.ready_instance(), rig.ready_instance()
    admin_setup = [b for b in blocks("bash") if "stack.json" in b and "export ADMIN_URL" in b]
    sim_setup = [b for b in blocks("bash") if "stack.json" in b and "export SIM_URL" in b]
    example = [b for b in blocks("python") if b.startswith("# failover example:")]
    assert len(admin_setup) == 1 and len(sim_setup) == 1 and len(example) == 1
    (tmp_path / "example.py").write_text(example[0])
    (tmp_path / ".vastkeep").mkdir()
    info = rig.sim.info
    (tmp_path / ".vastkeep" / "stack.json").write_text(json.dumps({
        "admin_api_url": rig.admin_url, "admin_api_key": ADMIN_KEY, "proxy_url": rig.url, "simulated": True,
        "simulator": {"control_url": info["control_url"], "control_token": info["control_token"]}}))
    env = {k: v for k, v in rig.env.items() if k not in ("ADMIN_URL", "ADMIN_KEY", "SIM_URL", "SIM_TOKEN")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    done = subprocess.run(["bash", "-c", admin_setup[0] + "\n" + sim_setup[0] + "\npython3 example.py\n"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"crashed instance {first['id']}" in out
    assert f"failover: {first['id']} -> {spare['id']}" in out and "re-submitted: True" in out
    assert "PNG: True" in out and "released: True" in out
    assert png_size((tmp_path / "doc-failover.png").read_bytes()) == (64, 64)
    kinds = [e.kind for e in EventLog(redis_client).read(count=10_000)]
    assert kinds.count("failover-done") == 1 and kinds.count("prompt-resubmitted") == 1
