"""docs/proxy.md's failover example on the stack a new user starts: ``vastkeep up`` (embedded Redis, simulated
cloud, worker, beat, keepalive, admin API, the proxy) in a tmp folder with free ports and a pool of 2, the
example run as written from that folder (it reads ``.vastkeep/stack.json`` as ``vastkeep up`` left it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.comfy import png_size
from tests.fixtures.proxy_docs import blocks
from tests.fixtures.stack import start_stack
from vastkeep.core.clock import SYSTEM_CLOCK

pytestmark = [pytest.mark.timeout(420)]


def test_the_failover_example_works_under_vastkeep_up(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, {"WARM_POOL_DESIRED_SIZE": "2"})
    try:
        deadline = SYSTEM_CLOCK.monotonic() + 180
        while True:  # two ready: the lease's instance and its spare
            status = stack.api("GET", "/warm-pool/status").json()
            if sum(1 for i in status.get("instances", []) if i["status"] == "ready") >= 2:
                break
            assert SYSTEM_CLOCK.monotonic() < deadline, status.get("counts")
            SYSTEM_CLOCK.sleep(0.5)
        setup = [b for b in blocks("bash")
                 if "stack.json" in b and ("export ADMIN_URL" in b or "SIM_URL" in b)]
        example = [b for b in blocks("python") if b.startswith("# failover example:")]
        assert len(setup) == 2 and len(example) == 1
        (tmp_path / "example.py").write_text(example[0])
        env = {k: v for k, v in stack.env.items() if k not in ("ADMIN_URL", "ADMIN_KEY")}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        done = subprocess.run(["bash", "-c", "\n".join(setup) + "\npython3 example.py\n"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr + stack.log()[-3000:]
        assert "crashed instance" in done.stdout and "re-submitted: True" in done.stdout, done.stdout
        assert "PNG: True" in done.stdout and "released: True" in done.stdout
        assert png_size((tmp_path / "doc-failover.png").read_bytes()) == (64, 64)
        got = stack.api("GET", "/events", params={"after": "0-0", "count": 1000}).json()["events"]
        kinds = [e["kind"] for e in got]
        assert "failover-started" in kinds and "failover-done" in kinds and "prompt-resubmitted" in kinds
    finally:
        stack.stop()
