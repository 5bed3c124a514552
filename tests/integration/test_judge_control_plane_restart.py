"""A control-plane restart: every process of ``vastkeep up`` stopped (SIGINT) and started again in the same
folder, with 20 live instances and a client lease: all re-attached, nothing new rented, the lease kept.

The cloud is the session's simulator, outside the stack (a real cloud does not restart with the control
plane); the embedded Redis (AOF ``everysec``) keeps the records and leases in the stack's folder. Rents are
counted from the simulator's own request log (``PUT /asks/{id}`` and ``POST /asks/bulk``). Slow: run with
``pytest -m slow``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fixtures.chaos import report
from tests.fixtures.helpers import wait_for
from tests.fixtures.stack import Stack, start_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
LIVE = 20


def counts(stack: Stack) -> dict[str, int]:
    status = stack.api("GET", "/warm-pool/status").json()
    out: dict[str, int] = {"leased": 0}
    for i in status.get("instances", []):
        out[i["status"]] = out.get(i["status"], 0) + 1
        out["leased"] += i.get("leasedUntil") is not None
    return out


def wait_live(stack: Stack, want: int, timeout_s: float) -> dict[str, int]:
    def live() -> dict[str, int] | None:
        c = counts(stack)
        return c if c.get("ready", 0) >= want else None

    return wait_for(live, timeout_s, f"{want} live instances", interval_s=1.0)


def rents(sim) -> int:
    return sum(1 for r in sim.control.requests_seen(service="vast")
               if (r["method"], r["path"].rstrip("/").rsplit("/", 1)[0]) == ("PUT", "/api/v0/asks")
               or (r["method"], r["path"].rstrip("/")) == ("POST", "/api/v0/asks/bulk"))


def test_a_control_plane_restart_reattaches_every_instance_and_keeps_the_lease(tmp_path: Path, sim,
                                                                               slow_selected) -> None:
    env = {**sim.env(), "WARM_POOL_DESIRED_SIZE": str(LIVE), "WARM_POOL_MAX_SPEND_DPH": "200",
           "WARM_POOL_MAX_DPH": "5"}  # enough offers for 20
    stack = start_stack(tmp_path, env, timeout_s=180)
    try:
        wait_live(stack, LIVE, 600)
        lease = stack.api("POST", "/warm-pool/leases", json={"durationS": 1800, "client": "judge"})
        assert lease.status_code == 201, lease.text
        lease = lease.json()
        before = {"rents": rents(sim)}
    finally:
        assert stack.stop() == 0, stack.log()[-3000:]
    stopped_at = time.monotonic()
    stack = start_stack(tmp_path, env, timeout_s=180)
    try:
        up_s = time.monotonic() - stopped_at
        after_counts = wait_live(stack, LIVE, 300)
        live_s = time.monotonic() - stopped_at
        renewed = stack.api("POST", f"/warm-pool/leases/{lease['leaseId']}/renew", json={"durationS": 600})
        time.sleep(20)  # a reconcile round or two: a restart that lost track would rent now
        rents_after = rents(sim)
        final = counts(stack)
    finally:
        assert stack.stop() == 0, stack.log()[-3000:]
    report("judge: control-plane restart", live=LIVE, back_up_after=up_s, all_live_after=live_s,
           rents_before=before["rents"], new_rents=rents_after - before["rents"],
           lease_renew=renewed.status_code)
    assert renewed.status_code == 200, renewed.text
    assert rents_after == before["rents"]
    assert after_counts["leased"] == 1 and final.get("ready", 0) == LIVE
