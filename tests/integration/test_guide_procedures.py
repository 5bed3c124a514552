"""The guide's own Testing procedures, run on the whole stack as ``vastkeep up`` starts it, asserting the
guide's log lines in the stack's logs (``.vastkeep/logs/*.log`` and ``up.out``, the supervisor's output).

One stack serves the module (its start is the slow part); each procedure rents its own instance by raising
the warm pool's desired size, so the procedures do not share an instance. The collector kill runs last: it
kills the SSH worker. ``SSH_COLLECT_WHILE_READY=1`` keeps a collector on each ready instance, so there is
always one to kill.

1. Layer 1: the SSH link dies during provisioning: ``[LogCollector] N consecutive failures, backing off Xs
   before retry`` with growing N, then provisioning completes and the remote log is collected without loss.
2. Layer 2: an invalid token: ``❌ civitai token validation FAILED``; updated through the admin API without
   a restart (``🔑 civitai token updated at runtime``), the next validation logs ``✅ civitai token validated
   successfully`` (same API process).
3. Layer 3: a firewalled instance stays ``loading`` (``⚠️  Port validation failed``) and turns ``ready``
   when its ports open (``✅ Port 8188 (direct) validated and accessible``) with no operator action.
4. Layers 4/6: kill the log collector (``kill -9`` of the SSH worker that runs it): restarted after 10 s,
   then 20 s and 40 s on repeated kills (``Restarted worker-ssh (attempt N, ...)``), and the collector
   itself runs again afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.helpers import wait_for
from tests.fixtures.stack import Stack, start_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

BACKING_OFF = re.compile(r"\[LogCollector\] (\d+) consecutive failures, backing off (\d+)s before retry "
                         r"\(instance (\d+)\)")
RESTARTED = re.compile(r"WARNING vastkeep\.stack: Restarted worker-ssh \(attempt (\d+), (\d+) crashes\)")
SSH_ENDPOINTS = ("22/tcp", "ssh_proxy")
COMFY_ENDPOINTS = ("8188/tcp", "direct")  # the mapped ComfyUI port and direct 8188


def wait(cond: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.25) -> Any:
    """The suite's ``wait_for`` at the stack's pace: each check reads log files or asks the API."""
    return wait_for(cond, timeout_s, what, interval_s=every_s)


def logs(stack: Stack, name: str) -> str:
    """One log of the stack: ``up`` (the supervisor's output) or a child's ``.vastkeep/logs/<name>.log``."""
    path = stack.out_path if name == "up" else stack.folder / ".vastkeep" / "logs" / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def instances(stack: Stack) -> dict[str, dict[str, Any]]:
    return {i["contractId"]: i for i in stack.get("/api/proxy/admin/warm-pool/status")["instances"]}


def rent_one(stack: Stack) -> str:
    """Raise the desired size by one; the new instance's contract id (once the sim has it)."""
    before = set(instances(stack))
    res = stack.api("PUT", "/warm-pool/size", json={"desiredSize": len(before) + 1})
    assert res.status_code == 200, res.text
    new = wait(lambda: sorted(set(instances(stack)) - before), 30, "the new instance rented")
    return str(new[0])


def status_of(stack: Stack, iid: str) -> str:
    return str(instances(stack).get(iid, {}).get("status"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("guide"), {"WARM_POOL_DESIRED_SIZE": "0",
                                                       "SSH_COLLECT_WHILE_READY": "1"})
    yield s
    assert s.stop() == 0, s.log()[-3000:]


def test_an_invalid_token_fails_validation_and_is_updated_through_the_api_without_a_restart(stack: Stack):
    sim = stack.sim()
    api_pid = stack.get("/api/proxy/admin/watchdog/status")["processes"]["api"]["pid"]
    sim.invalidate_token("civitai")  # the configured token is now an invalid one
    try:
        res = stack.api("POST", "/validate-tokens")
        assert res.status_code in (200, 207, 503), res.text
        failed = "❌ civitai token validation FAILED: Token authentication failed (401)"
        wait(lambda: failed in logs(stack, "api"), 10, "the FAILED line")
        sim.set_valid_tokens(civitai=["civitai-new-token-for-the-guide"])
        res = stack.api("POST", "/update-token", json={"service": "civitai",
                                                          "token": "civitai-new-token-for-the-guide"})
        assert res.status_code == 200, res.text
        assert "🔑 civitai token updated at runtime (validation: valid)" in logs(stack, "api")
        res = stack.api("POST", "/validate-tokens")  # real API calls, not the cache
        assert res.status_code == 200, res.text
        ok = "✅ civitai token validated successfully"
        text = logs(stack, "api")
        assert ok in text[text.index(failed):], text[-2000:]
        tokens = stack.get("/api/proxy/admin/tokens")
        assert "civitai-new-token" not in str(tokens) and "civitai-new-token" not in logs(stack, "api")
        # no restart: the same API process answered both
        assert stack.get("/api/proxy/admin/watchdog/status")["processes"]["api"]["pid"] == api_pid
    finally:
        sim.reset_tokens()


def test_the_ssh_link_killed_during_provisioning_backs_off_and_provisioning_completes(stack: Stack):
    sim = stack.sim()
    sim.set_lifecycle(boot_s=15.0, log_interval_s=0.2)  # a provisioning long enough to break its SSH
    iid = rent_one(stack)
    wait(lambda: f"SSH connected to instance {iid}" in logs(stack, "worker-ssh"), 30,
         "the collector streaming")
    assert status_of(stack, iid) != "ready"
    for ep in SSH_ENDPOINTS:
        sim.net(int(iid), "refuse", ep)
    sim.kill_ssh_sessions(int(iid))
    killed = time.monotonic()

    def backoffs() -> list[tuple[int, int]]:
        return [(int(n), int(d)) for n, d, i in BACKING_OFF.findall(logs(stack, "worker-ssh")) if i == iid]

    seen = wait(lambda: (b := backoffs()) and max(n for n, _ in b) >= 3 and b, 30, "3 backing-off lines")
    counts = [n for n, _ in seen]
    assert counts == sorted(counts) and counts[:3] == [1, 2, 3], seen  # consecutive failures grow
    assert all(d <= 2 ** n for n, d in seen), seen  # full jitter under 1 s, 2 s, 4 s ...
    for ep in SSH_ENDPOINTS:
        sim.open_path(int(iid), ep)
    wait(lambda: logs(stack, "worker-ssh").count(f"SSH connected to instance {iid}") >= 2, 40,
         "the collector connected again")
    wait(lambda: status_of(stack, iid) == "ready", 90, "the instance ready", every_s=0.5)
    ready_s = time.monotonic() - killed
    remote = Path(str(sim.instance(int(iid))["log_path"])).read_text(errors="replace").splitlines()
    assert remote, "the simulator wrote no provisioning log"

    def collected() -> list[str]:
        got = stack.get(f"/api/proxy/admin/instances/{iid}/logs?limit=5000")
        return [str(line["text"]).rstrip("\n") for line in got["lines"]]

    wait(lambda: len(collected()) >= len(remote), 20, "the whole remote log collected")
    got = collected()
    assert got[:len(remote)] == remote, (len(remote), len(got))  # nothing lost, nothing doubled, in order
    print(f"backing off: {seen}; ready {ready_s:.1f} s after the kill; {len(remote)} lines, none lost")


def test_a_firewalled_instance_stays_loading_and_turns_ready_when_its_ports_open(stack: Stack):
    sim = stack.sim()
    sim.set_lifecycle(boot_s=4.0)
    sim.set_rent_defaults(direct_8188=True)  # the guide's direct 8188 route, as on a host with open ports
    iid = rent_one(stack)
    for ep in COMFY_ENDPOINTS:
        sim.firewall(int(iid), ep)
    failed = "⚠️  Port validation failed: All ports blocked - firewall detected"
    before = logs(stack, "worker-control").count(failed)
    wait(lambda: logs(stack, "worker-control").count(failed) > before, 60, "the port validation failed line",
         every_s=0.5)
    time.sleep(3.0)
    assert status_of(stack, iid) == "loading", instances(stack)[iid]
    for ep in COMFY_ENDPOINTS:
        sim.open_path(int(iid), ep)
    opened = time.monotonic()
    wait(lambda: status_of(stack, iid) == "ready", 75, "ready once the ports opened", every_s=0.5)
    print(f"ready {time.monotonic() - opened:.1f} s after the ports opened")
    assert "✅ Port 8188 (direct) validated and accessible" in logs(stack, "worker-control")


def test_a_killed_log_collector_is_restarted_after_10_then_20_then_40_s(stack: Stack):
    sim = stack.sim()
    sim.set_lifecycle(boot_s=0.5)
    if not instances(stack):
        rent_one(stack)

    def ssh_pid() -> int:
        return int(stack.get("/api/proxy/admin/watchdog/status")["processes"]["worker-ssh"]["pid"])

    def collectors_beating() -> list[str]:
        daemons = stack.get("/api/proxy/admin/watchdog/status").get("daemons") or {}
        return [n for n, d in daemons.items()
                if n.startswith("ssh-collector:") and d.get("status") == "running"]

    wait(collectors_beating, 60, "a running log collector", every_s=0.5)
    killed_pids: list[int] = []

    def restarts() -> list[tuple[int, int]]:
        return [(int(a), int(c)) for a, c in RESTARTED.findall(logs(stack, "up"))]

    delays: list[float] = []
    for attempt in (1, 2, 3):
        pid = wait(lambda: (p := ssh_pid()) not in killed_pids and p, 30, "the new worker-ssh pid published")
        os.kill(pid, signal.SIGKILL)
        killed_pids.append(pid)
        killed = time.monotonic()
        found = wait(lambda n=attempt: len(restarts()) >= n and restarts(), 70,
                     f"Restarted worker-ssh (kill {attempt})", every_s=0.1)
        delays.append(time.monotonic() - killed)
        assert found[-1][0] == attempt, found  # attempt N: consecutive crashes, the backoff doubles
    print(f"worker-ssh restarted after {[round(d, 1) for d in delays]} s")
    for got, want in zip(delays, (10.0, 20.0, 40.0), strict=True):
        assert want - 1.0 <= got <= want * 1.25 + 3.0, delays
    up = logs(stack, "up")
    for wait_s in ("10.0", "20.0", "40.0"):
        line = f"[Watchdog] Process Worker-ssh exited (exit code -9); restarting in {wait_s}s"
        assert line in up, up[-3000:]
    # the collector itself (a logical daemon, Layer 6's sweep): restarted once its worker is back
    wait(lambda: "Restarted ssh-collector:" in logs(stack, "worker-control"), 60,
         "Restarted ssh-collector:<id>", every_s=0.5)
    assert "[Watchdog] Process LogCollector-" in logs(stack, "worker-control")
    wait(collectors_beating, 60, "the log collector running again", every_s=0.5)
