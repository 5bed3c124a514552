"""Two beats and three worker hosts on one Redis at once: no poll, shard, collector, rent or lease twice.

Real parts: the stack as ``vastkeep up`` starts it (embedded AOF Redis, the simulated cloud with its sshd, a
worker per queue, beat, the admin API) plus two more worker hosts (a control, a keepalive and an SSH worker
each, node names ``<queue>-b@…`` / ``<queue>-c@…``) and a second beat, all supervised. The pool warms from
nothing to 4 instances while all of them run, then clients' leases by name race across the three hosts.

Each duplicate is counted from a source other than vastkeep's own records:

* rents: the cloud's ledger (a label rented again while alive; more rents than the pool's size);
* polls: the cloud's request log (listings in a steady window against the single-flight bound: one per
  snapshot refresh and one per reconcile round; the two callers send the same request);
* shards and collectors: the kernel's socket table (``ss``): two keepalive processes holding a connection
  to one instance's ComfyUI, or two SSH worker processes holding a session to one instance, in two samples
  in a row (the same connection in both: held, not a passing probe);
* leases: the answers of the lease tasks (one instance granted twice, a fence handed out twice) and the
  pool's lease entries in Redis;
* beat: the ``Sending due task`` lines of both beats (a sweep sent more often than its interval allows).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from collections import defaultdict

import pytest
from celery import Celery

from tests.fixtures.helpers import wait_for
from vastkeep.sim.control import SimControl
from vastkeep.soak.between import pids_of_group
from vastkeep.soak.counters import double_rents
from vastkeep.soak.observe import Observer
from vastkeep.soak.stackrun import SoakStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
POOL = 4
WINDOW_S = 45.0
HOSTS = ("b", "c")
SWEEP = "vastkeep.supervision.sweep"
_SS = re.compile(r"\s(\S+):(\d+)\s+(\S+):(\d+)\s+users:\(\(\"[^\"]*\",pid=(\d+)")


def _connections() -> list[tuple[str, int, str, int, int]]:
    """Established TCP connections: (local ip, local port, peer ip, peer port, pid)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True,
                         timeout=10).stdout
    rows = []
    for line in out.splitlines():
        m = _SS.search(line)
        if m:
            rows.append((m[1], int(m[2]), m[3], int(m[4]), int(m[5])))
    return rows


class SocketWatch:
    """Samples, once a second, which worker process holds a connection to which instance endpoint."""

    def __init__(self, stack: SoakStack, control: SimControl, obs: Observer) -> None:
        self.stack, self.control, self.obs = stack, control, obs
        self.endpoints: dict[tuple[str, int], tuple[str, str]] = {}  # (ip, port) -> (instance, comfy|ssh)
        self.samples: list[dict[tuple[str, str], set[tuple[int, int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _groups(self, kind: str) -> set[int]:
        pids = self.stack.pids()
        leaders = [pids.get(f"worker-{kind}"), *(pids.get(f"host{h}-{kind}") for h in HOSTS)]
        return set().union(*(pids_of_group(p) for p in leaders))

    def _learn(self) -> None:
        for iid in self.obs.cloud_ids():
            if any(v[0] == iid for v in self.endpoints.values()):
                continue
            try:
                eps = self.control.instance(int(iid))["sim"]["endpoints"]  # type: ignore[index]
            except Exception:  # noqa: BLE001 - destroyed meanwhile
                continue
            for name, ep in eps.items():
                kind = "ssh" if "22" in name or "ssh" in name else "comfy"
                self.endpoints[(str(ep["ip"]), int(ep["port"]))] = (iid, kind)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            if n % 5 == 0:
                self._learn()
            n += 1
            keep, ssh = self._groups("keepalive"), self._groups("ssh")
            sample: dict[tuple[str, str], set[tuple[int, int]]] = defaultdict(set)
            for _lip, lport, pip, pport, pid in _connections():
                where = self.endpoints.get((pip, pport))
                if where is None:
                    continue
                if (where[1] == "comfy" and pid in keep) or (where[1] == "ssh" and pid in ssh):
                    sample[where].add((pid, lport))
            self.samples.append(sample)
            self._stop.wait(1.0)

    def start(self) -> SocketWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def duplicates(self) -> dict[str, list[dict[str, object]]]:
        """Per kind: an instance held by two processes in two samples in a row (one runner may hold two
        connections to one ComfyUI, its ``/ws`` and a pooled HTTP one: that is one shard, not two)."""
        found: dict[str, list[dict[str, object]]] = {"comfy": [], "ssh": []}
        for prev, cur in zip(self.samples, self.samples[1:], strict=False):
            for where, conns in cur.items():
                held = conns & prev.get(where, set())  # the same connection twice: held, not a probe
                pids = sorted({p for p, _ in held})
                if len(pids) > 1:
                    found[where[1]].append({"instance": where[0], "pids": pids})
        return found

    def held(self, kind: str) -> int:
        """Instance-samples with a held connection of this kind (so the figure shows what was watched)."""
        return sum(1 for s in self.samples for w in s if w[1] == kind)


def _sweeps_sent(stack: SoakStack) -> list[float]:
    times = []
    for cid in ("beat", "beat-b"):
        path = stack.home / "logs" / f"{cid}.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            if "Sending due task" in line and f"({SWEEP})" in line:
                m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
                if m:
                    times.append(time.mktime(time.strptime(m[1][:19], "%Y-%m-%d %H:%M:%S")))
    return sorted(times)


def _lease_race(redis_url: str, n: int) -> list[dict[str, object]]:
    client = Celery("judge-race", broker=redis_url, backend=redis_url)
    client.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    try:
        results = [client.send_task("vastkeep.pool.lease", queue="vastkeep.control",
                                    kwargs={"duration_s": 60, "client": f"race-{i}",
                                            "request_id": uuid.uuid4().hex})
                   for i in range(n)]
        return [dict(r.get(timeout=60)) for r in results]
    finally:
        client.close()


def test_two_beats_and_three_hosts_duplicate_no_poll_shard_collector_rent_or_lease(slow_selected) -> None:
    stack = SoakStack(dict(os.environ), POOL)
    stack.start()
    try:
        running = stack.running
        for h in HOSTS:
            running.spawn_worker(f"host{h}-control", "control", node=f"control-{h}@%h", concurrency=2)
            running.spawn_worker(f"host{h}-keepalive", "keepalive", node=f"keepalive-{h}@%h")
            running.spawn_worker(f"host{h}-ssh", "ssh", node=f"ssh-{h}@%h", concurrency=8)
        running.spawn_beat("beat-b")
        info = stack.endpoints
        control = SimControl(info.sim_control_url, info.sim_control_token)
        obs = Observer(info.redis_url, info.admin_api_url, info.admin_api_key, control)
        watch = SocketWatch(stack, control, obs).start()
        t0 = time.time()

        def ready() -> bool:
            obs.sample()
            return len(obs.ready_and_leased()[0]) >= POOL

        warm_s = wait_for(lambda: ready() and time.time() - t0, 240, f"{POOL} instances ready", interval_s=2)
        steady = (time.time(), time.time() + WINDOW_S)
        time.sleep(WINDOW_S)  # every host and both beats running over a warm pool
        answers = _lease_race(info.redis_url, 3 * POOL)
        time.sleep(5)
        watch.stop()
        obs.sample()
        requests = control.requests_seen(service="vast")
        ledger = control.ledger()
        sweeps = _sweeps_sent(stack)
    finally:
        stack.stop()
        stack.cleanup()

    rents = [e for e in ledger if e.get("action") == "rent"]
    lists = sorted(float(r["ts"]) for r in requests if r.get("method") == "GET"  # type: ignore[arg-type]
                   and str(r.get("path", "")).rstrip("/").endswith("/instances"))
    steady_lists = [x for x in lists if steady[0] <= x <= steady[1]]
    # one listing per snapshot refresh (single-flight, at most every 5 s while instances are active) plus one
    # per reconcile round (every 15 s): three hosts each polling on their own would list three times as often
    most = WINDOW_S / 5.0 + WINDOW_S / 15.0 + 2
    granted = [a for a in answers if a.get("ok")]
    sweep_gaps = [b - a for a, b in zip(sweeps, sweeps[1:], strict=False)]
    dups = watch.duplicates()
    print(f"\n[judge] two beats, three hosts: pool warm after {warm_s:.0f} s; rents {len(rents)} for a pool "
          f"of {POOL}, double rents {len(double_rents(ledger))}; listings {len(steady_lists)} in "
          f"{WINDOW_S:.0f} s steady (single-flight bound {most:.0f}); "
          f"keepalive connections seen {watch.held('comfy')}, "
          f"duplicated shards {len(dups['comfy'])}; SSH sessions seen {watch.held('ssh')}, duplicated "
          f"collectors {len(dups['ssh'])}; leases granted {len(granted)} of {len(answers)} asked, "
          f"instances {len({a['instanceId'] for a in granted})}, "
          f"fences {len({a['fence'] for a in granted})}; "
          f"sweeps sent {len(sweeps)}, closest two {min(sweep_gaps, default=0):.0f} s apart")
    assert not double_rents(ledger) and len(rents) == POOL
    assert 0 < len(steady_lists) <= most, steady_lists
    assert dups == {"comfy": [], "ssh": []}, dups
    assert watch.held("comfy") > 0  # the keepalive connections were there to be counted
    assert 0 < len(granted) <= POOL
    assert len({a["instanceId"] for a in granted}) == len(granted)
    assert len({a["fence"] for a in granted}) == len(granted)
    assert sweeps and min(sweep_gaps, default=99) >= 0.5, sweep_gaps  # one beat sends (the redbeat lock)
