"""Layer 5 chaos with real processes: ``celery worker`` and ``celery beat`` subprocesses of the product's
app, a private redis-server (AOF where it restarts), the simulated cloud.

* ``kill -9`` of the worker running the dispatcher → every instance is polled again within its interval
  + 30 s (claim timeout 15 s, dispatcher lease TTL 10 s, beat's ensure every 10 s), not after the 1-hour
  visibility timeout.
* two workers and two beats → one poll in flight per instance: no stale finish, and no instance polled
  more often than its interval allows (counted per instance).
* Redis restarted (AOF) under load → polling resumes by itself.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from tests.fixtures.chaos import Chaos, Proc, Worker, report
from tests.fixtures.helpers import wait_for
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.state import State
from vastkeep.state import Keys, StateStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

ACTIVE_S, IDLE_S, DEFAULT_S = 1.0, 3.0, 2.0
POLL_ENV = {"WARM_POOL_POLL_ACTIVE_INTERVAL_MS": str(int(ACTIVE_S * 1000)),
            "WARM_POOL_POLL_IDLE_INTERVAL_MS": str(int(IDLE_S * 1000)),
            "WARM_POOL_POLL_INTERVAL_MS": str(int(DEFAULT_S * 1000)),
            "PORT_TCP_TIMEOUT_MS": "1000", "PORT_HTTP_TIMEOUT_MS": "2000"}
BOUND_S = 30.0  # the bound on top of the interval


def beat(chaos: Chaos, env: dict[str, str], name: str) -> Proc:
    argv = [sys.executable, "-m", "celery", "-A", "worker", "beat", "-s", str(chaos.dir / f"{name}-schedule"),
            "-l", "INFO"]
    proc = Proc(argv, env, chaos.dir, chaos.dir / f"{name}.log")
    chaos.procs.append(proc)
    return proc


def make_instances(sim, n: int) -> list[str]:
    return [str(sim.control.create_instance(label="vastkeep:chaos", running=True, ssh=False,
                                            ssh_proxy=False)["id"]) for _ in range(n)]


def all_ready(store: StateStore, ids: list[str]) -> bool:
    recs = store.get_instances(ids)
    return len(recs) == len(ids) and all(r.status == "ready" for r in recs.values())


def last_polls(r, ids: list[str]) -> dict[str, float]:
    values = r.hmget(Keys().poll_last(), ids)
    return {i: float(v) for i, v in zip(ids, values, strict=True) if v is not None}


def dispatcher_pid(r) -> int | None:
    owner = r.hget(Keys().lease("poll-dispatcher"), "owner")
    return int(owner.split(":")[2]) if owner else None  # poll-dispatcher:<host>:<pid>:<rand>


def polled_and_ready(chaos: Chaos, sim: Any, n: int, workers: list[str], beats: list[str], *,
                     aof: bool = False) -> tuple[RedisServer, list[str], list[Worker], list[Proc]]:
    """A private Redis, ``n`` simulated instances, the named workers (two pool children each) and beats;
    returns once polling found every instance and marked it ready."""
    rs = chaos.redis(aof=aof)
    env = chaos.env(rs.url, **sim.env(), **POLL_ENV)
    ids = make_instances(sim, n)
    started = [chaos.worker("worker", label, env, concurrency=2) for label in workers]
    for w in started:
        w.wait_ready(60)
    procs = [beat(chaos, env, name) for name in beats]
    store = State(rs.client()).store
    wait_for(lambda: all_ready(store, ids), 150, "every instance discovered and ready")
    return rs, ids, started, procs


def test_kill_9_of_the_dispatcher_worker_every_instance_polled_again_within_the_bound(chaos, sim) -> None:
    rs, ids, workers, _beats = polled_and_ready(chaos, sim, 20, ["poll-a", "poll-b"], ["beat"])
    r = rs.client()
    store = State(r).store
    pid = wait_for(lambda: dispatcher_pid(r), 20, "a dispatcher holds the lease")
    victim = next(w for w in workers if pid in w.pool_children() or pid == w.pid)
    survivor = next(w for w in workers if w is not victim)
    t_kill = time.time()
    victim.kill_group()
    deadline_s = IDLE_S + BOUND_S + 5.0  # + slack for a loaded 2-core machine
    wait_for(lambda: len([t for t in last_polls(r, ids).values() if t > t_kill]) == len(ids), deadline_s,
             "every instance polled again after kill -9")
    took = max(last_polls(r, ids).values()) - t_kill
    survivor.assert_alive()
    assert all_ready(store, ids), "nothing turned failed because a worker died"
    assert int(r.hget(Keys().poll_stats(), "stale_finishes") or 0) == 0
    report("kill -9 dispatcher worker", repolled_all_within=took, bound=IDLE_S + BOUND_S)
    assert took <= IDLE_S + BOUND_S


def test_two_workers_two_beats_one_poll_in_flight_per_instance(chaos, sim) -> None:
    rs, ids, _workers, beats = polled_and_ready(chaos, sim, 15, ["twin-a", "twin-b"], ["beat-a", "beat-b"])
    r = rs.client()
    r.delete(Keys().poll_counts())
    t0 = time.time()
    time.sleep(20.0)
    elapsed = time.time() - t0
    counts = {i: int(v) for i, v in r.hgetall(Keys().poll_counts()).items()}
    for b in beats:
        b.assert_alive()
    assert set(counts) == set(ids), "every instance polled"
    # each ready instance is idle: one poll every IDLE_S; a second poller in flight would double it
    ceiling = elapsed / IDLE_S + 2
    assert max(counts.values()) <= ceiling, (counts, ceiling)
    assert min(counts.values()) >= elapsed / IDLE_S - 2, counts
    assert int(r.hget(Keys().poll_stats(), "stale_finishes") or 0) == 0
    report("two workers + two beats", polls_per_instance_max=max(counts.values()),
           polls_per_instance_min=min(counts.values()), ceiling=round(ceiling, 1))


def test_redis_restart_under_load_polling_resumes(chaos, sim) -> None:
    rs, ids, [worker], _beats = polled_and_ready(chaos, sim, 40, ["restart"], ["beat"], aof=True)
    time.sleep(1.5)  # AOF everysec: the schedule is on disk
    rs.stop()
    time.sleep(2.0)
    rs2 = chaos.redis(aof=True, port=rs.port, data_dir=rs.dir)
    t_back = time.time()
    r2 = rs2.client()
    wait_for(lambda: len([t for t in last_polls(r2, ids).values() if t > t_back]) == len(ids),
             IDLE_S + BOUND_S + 10.0, "every instance polled after the restart")
    took = max(last_polls(r2, ids).values()) - t_back
    worker.assert_alive()
    assert all_ready(State(r2).store, ids)
    report("redis restart under load", repolled_all_within=took)
