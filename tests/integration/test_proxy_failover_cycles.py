"""Failover, again and again on one pool: lease, prompt, the leased instance crashes mid-prompt, the prompt
ends on the spare, release; the pool is brought back to two ready instances (the crashed one retired, the
failover target checked again, a fresh one added) and the cycle repeats, so a later lease lands on an instance
an earlier lease failed over to (one that has already run the same kind of graph).

With consent this is docs/proxy.md's failover example run as written, once per cycle (the newcomer's
``vastkeep up`` run, three times in a row). Without consent: exactly one clear error per failover, and the
next prompt works, every cycle.
"""

from __future__ import annotations

import asyncio
import time

import requests

from tests.fixtures.failover import client_loop
from tests.fixtures.proxy_docs import run_docs_example, write_stack_json
from vastkeep.core.clock import iso

CYCLES = 3


def refill(rig, crashed: str, moved_to: str) -> None:
    """What the reconcile round does between cycles: the crashed instance retired, the released one checked
    again (a passing port validation after its lease ended), a fresh one added; two ready again."""
    rig.store.delete_instance(crashed)
    time.sleep(0.01)  # the check comes after the lease's end (ISO times compared as strings)
    checked = {"success": True, "checked_at": iso(time.time())}
    rig.store.update_instance(moved_to, {"port_validation": checked})
    rig.ready_instance()
    ready = [r for r in rig.store.list_instances() if r.status == "ready"]
    assert len(ready) == 2, ready


def test_the_docs_example_passes_cycle_after_cycle(proxy_rig, redis_client, tmp_path):
    rig = proxy_rig
    rig.ready_instance()
    rig.ready_instance()
    write_stack_json(rig, tmp_path)
    leased_before: list[str] = []
    targets: list[str] = []
    for n in range(CYCLES):
        out = run_docs_example(rig, tmp_path)
        first = out.split("crashed instance ", 1)[1].split()[0]
        moved = out.split(f"failover: {first} -> ", 1)[1].split()[0]
        assert "re-submitted: True" in out and "PNG: True" in out and "released: True" in out, (n, out)
        lost = [p for p in rig.sim.control.comfy_phases(int(first)) if p["phase"] == "lost"]
        assert len(lost) == 1, (n, lost)  # the crash came mid-prompt: the prompt was running, then lost
        leased_before.append(first)
        targets.append(moved)
        refill(rig, first, moved)
    # from the second cycle on, the lease went to the instance the previous cycle failed over to
    assert leased_before[1:] == targets[:-1], (leased_before, targets)


def test_without_consent_one_error_per_failover_and_the_next_prompt_works(proxy_rig, redis_client):
    rig, c = proxy_rig, proxy_rig.sim.control
    rig.ready_instance(prompt_s=1.5)
    rig.ready_instance(prompt_s=1.5)
    leased_before: list[str] = []
    targets: list[str] = []
    for n in range(CYCLES):
        lease = rig.lease()
        first = lease["instanceId"]
        c.set_prompt_s(int(first), 1.5)
        res = asyncio.run(client_loop(lease["endpointUrl"], prompts=2, strike_on=0,
                                      strike=lambda i=int(first): c.crash_comfy(i), consent=False))
        assert len(res.status_frames) == 1, (n, res.status_frames)
        moved = res.status_frames[0]["to_instance"]
        assert res.failed == 1 and res.ok == 1, (n, res.errors)
        assert "failover" in res.errors[0] and f"instance {moved}" in res.errors[0], res.errors
        assert [p["phase"] for p in c.comfy_phases(int(first))].count("lost") == 1, n  # struck mid-prompt
        gone = requests.delete(f"{rig.admin_url}/api/proxy/admin/warm-pool/leases/{lease['leaseId']}",
                               headers=rig.headers, timeout=10)
        assert gone.status_code == 200 and gone.json()["released"] is True
        leased_before.append(first)
        targets.append(moved)
        refill(rig, first, moved)
    assert leased_before[1:] == targets[:-1], (leased_before, targets)

