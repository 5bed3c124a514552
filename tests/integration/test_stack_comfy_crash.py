"""A ComfyUI crash on the stack as `vastkeep up` starts it, at the default settings, pool size 2.

The crashed instance shows as lost at once in ``warm-pool/status`` (``unhealthy``, reason ``keepalive:
connection lost``; never counted ``ready`` or ``idle``), on ``/metrics`` and in ``vastkeep status``; the pool
rents its replacement at once, so two usable instances (ready, ComfyUI answering) are back within detection +
provisioning, not after ``WARM_POOL_UNHEALTHY_GRACE_MS`` (300 s); the crashed one is destroyed once surplus.

Bounds, at the defaults on the simulated cloud: the fast path sees a crash in under a second
(``test_keepalive_runner``), a rent turns ready in about 5 s (measured: 3.5–6.9 s from the crash to the
replacement ready), or about 35 s when its first Layer 3 probe comes before ComfyUI answers (the probe is
retried at the next active poll, 30 s; seen once in eight crashes), and a reconcile round runs every 15 s.
The bounds below are those figures with room for a loaded two-core machine, far from the five minutes a
crash took before.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.helpers import wait_for
from tests.fixtures.stack import Stack, start_stack
from vastkeep.sim.control import SimControl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DETECT_S = 5.0  # crash → shown lost (the fast path: under 1 s; the status poll and a loaded machine)
RENT_S = 10.0  # crash → the replacement's record exists (detection + one woken reconcile round)
USABLE_S = 60.0  # crash → 2 usable again: detection + provisioning (~5 s, ~35 s after an early probe) + load
SURPLUS_S = 40.0  # replacement usable → the crashed one destroyed (one reconcile interval, 15 s, + load)


def answers(url: str | None) -> bool:
    if not url:
        return False
    try:
        return requests.get(f"{url}/system_stats", timeout=3).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def stack(tmp_path: Path):
    s = start_stack(tmp_path, {"WARM_POOL_DESIRED_SIZE": "2"})
    yield s
    assert s.stop() == 0, s.log()[-3000:]


def test_a_crashed_comfyui_is_shown_lost_at_once_and_replaced_within_provisioning(stack: Stack) -> None:
    sim_info = stack.stack_json["simulator"]
    sim = SimControl(sim_info["control_url"], sim_info["control_token"])

    def status() -> dict[str, Any]:
        return stack.get("/api/proxy/admin/warm-pool/status")

    def usable(doc: dict[str, Any]) -> list[str]:
        return [i["contractId"] for i in doc["instances"]
                if i["status"] == "ready" and answers(i["connectionUrl"])]

    wait_for(lambda: len(usable(status())) == 2, 90, "2 ready instances", interval_s=0.5)

    def watched() -> bool:  # the keepalive holds both instances (its first ping answered)
        view = stack.get("/api/proxy/admin/keepalive/status")
        return sum(1 for v in view["instances"].values() if v["totalSuccesses"] >= 1) >= 2

    wait_for(watched, 60, "the keepalive watching both", interval_s=0.5)
    time.sleep(1.0)  # the fast path's /ws opens beside the first ping
    before = status()
    first_ids = {i["contractId"] for i in before["instances"]}
    victim = sorted(first_ids)[0]
    sim.crash_comfy(int(victim))
    crashed = time.monotonic()

    def lost_doc() -> dict[str, Any] | None:
        doc = status()
        view = next(i for i in doc["instances"] if i["contractId"] == victim)
        return doc if view["status"] != "ready" else None

    doc = wait_for(lost_doc, DETECT_S, "the crashed instance shown lost")
    shown_s = time.monotonic() - crashed
    view = next(i for i in doc["instances"] if i["contractId"] == victim)
    assert view["status"] == "unhealthy" and view["statusReason"] == "keepalive: connection lost", view
    assert view["comfyuiLostSince"] is not None
    counts = doc["counts"]
    assert counts["comfyuiLost"] == 1 and counts["byStatus"].get("ready", 0) <= 1, counts
    assert counts["idle"] <= 1, counts  # the healthy one only (a replacement may already be ready)

    metrics = requests.get(f"{stack.admin_url}/metrics", timeout=10).text
    assert 'vastkeep_instances{status="unhealthy"} 1' in metrics, metrics

    cli = stack.cli("status")
    row = next(line for line in cli.stdout.splitlines() if line.strip().startswith(victim))
    assert "unhealthy" in row and "ComfyUI down since" in row, cli.stdout
    assert "ComfyUI lost 1" in cli.stdout, cli.stdout  # the pool's line, from the same document

    def replacement() -> list[str]:
        return sorted({i["contractId"] for i in status()["instances"]} - first_ids)

    wait_for(replacement, RENT_S - (time.monotonic() - crashed), "a replacement rented at once")
    rented_s = time.monotonic() - crashed

    def two_usable_without_victim() -> list[str] | None:
        ids = [i for i in usable(status()) if i != victim]
        return ids if len(ids) == 2 else None

    wait_for(two_usable_without_victim, USABLE_S - (time.monotonic() - crashed), "2 usable instances again")
    usable_s = time.monotonic() - crashed
    wait_for(lambda: victim not in {i["contractId"] for i in status()["instances"]}, SURPLUS_S,
         "the crashed instance destroyed once replaced")
    gone_s = time.monotonic() - crashed
    final = status()
    assert final["counts"]["byStatus"] == {"ready": 2}, final["counts"]
    assert final["counts"]["comfyuiLost"] == 0, final["counts"]
    assert len(replacement()) == 1  # one rent for one crash
    print(f"crash → shown lost {shown_s:.2f} s, replacement rented {rented_s:.2f} s, "
          f"2 usable {usable_s:.2f} s, crashed one destroyed {gone_s:.2f} s")
