"""Layer 4 against the real simulator and a real redis-server: one shard runner, each fault kind.

The runner runs in a thread of its own (its own event loop, as in the Celery task) with short intervals,
so what the guide measures in minutes is seen here in seconds; the fast path (a crash seen through the
held ``/ws``) runs at its real speed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from tests.fixtures.helpers import wait_for
from tests.fixtures.keepalive_rig import kinds, ready_instance
from vastkeep.core.clock import SystemClock
from vastkeep.keepalive import (
    CONNECTION_CLOSED,
    PING_FAILURES,
    KeepalivePolicy,
    RunnerConfig,
    ShardRunner,
    lease_name,
    read_states,
)
from vastkeep.state.keys import Keys
from vastkeep.state.leases import LeaseManager
from vastkeep.state.store import InstanceRecord

FAST = KeepalivePolicy(interval_s=0.5, timeout_s=0.4, max_failures=3)


class Running:
    """A ShardRunner in a background thread, with what it reported."""

    def __init__(self, redis_client: Any, store: Any, events: Any, *, policy: KeepalivePolicy = FAST,
                 run_s: float = 30.0, shard: int = 0, shards: int = 1, fast_path: bool = True,
                 acquire_wait_s: float = 3.0, announced: set[str] | None = None) -> None:
        self.lost: list[tuple[str, dict[str, Any]]] = []
        self.runner = ShardRunner(redis=redis_client, keys=Keys(), store=store, events=events, shard=shard,
                                  policy=policy, clock=SystemClock(),
                                  config=RunnerConfig(shards=shards, run_s=run_s, refresh_s=0.2,
                                                      fast_path=fast_path, flush_s=0.05,
                                                      acquire_wait_s=acquire_wait_s),
                                  on_lost=lambda iid, f: self.lost.append((iid, f)), announced=announced)
        self.result: dict[str, Any] | None = None
        self.thread = threading.Thread(target=self._go, daemon=True)

    def _go(self) -> None:
        import asyncio  # noqa: PLC0415

        self.result = asyncio.run(self.runner.run())

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=60)


def seconds_until(cond: Any, timeout_s: float, every_s: float = 0.02) -> float:
    """How long ``cond`` took to hold (the shared ``wait_for``, timed)."""
    start = time.monotonic()
    wait_for(cond, timeout_s, "condition", interval_s=every_s)
    return time.monotonic() - start


def test_a_healthy_instance_is_pinged_at_its_cadence(sim, redis_client, store, events):
    iid = ready_instance(sim, store)
    with Running(redis_client, store, events, run_s=2.6):
        pass
    state = read_states(redis_client, Keys(), [iid])[iid]
    assert 4 <= state.total_pings <= 7 and state.total_failures == 0 and not state.lost
    assert kinds(events, iid) == []


def test_a_crash_is_seen_in_under_two_seconds_through_the_held_connection(sim, redis_client, store, events):
    slow = KeepalivePolicy(interval_s=30, timeout_s=1, max_failures=5)  # the pings alone would take minutes
    iid = ready_instance(sim, store)
    with Running(redis_client, store, events, policy=slow, run_s=6) as r:
        seconds_until(lambda: read_states(redis_client, Keys(), [iid])[iid].total_pings >= 1, 5)
        time.sleep(0.3)  # the websocket is held
        sim.control.crash_comfy(int(iid))
        took = seconds_until(lambda: "connection-lost" in kinds(events, iid), 5)
    assert took < 2.0
    lost = [e for e in events.read(after="0-0") if e.kind == "connection-lost"][0]
    assert lost.fields["detectedBy"] == CONNECTION_CLOSED
    extra = store.get_instance(iid).extra  # the warm pool replaces it once this is older than its grace
    assert extra["keepalive_detected_by"] == CONNECTION_CLOSED and extra["keepalive_lost_since"] > 0
    assert r.lost and r.lost[0][0] == iid  # the immediate poll was asked for


def test_a_crash_between_two_runs_is_seen_at_once_through_the_refused_handshake(sim, redis_client, store,
                                                                                  events):
    """The continuation starts after ComfyUI died: no held socket can close, but the refused handshake is
    confirmed by one ping and reported at once, not 5 intervals later."""
    slow = KeepalivePolicy(interval_s=30, timeout_s=1, max_failures=5)  # the pings alone would take minutes
    iid = ready_instance(sim, store)
    with Running(redis_client, store, events, policy=slow, run_s=1.5):
        seconds_until(lambda: read_states(redis_client, Keys(), [iid])[iid].total_successes >= 1, 5)
    sim.control.crash_comfy(int(iid))
    with Running(redis_client, store, events, policy=slow, run_s=4):
        took = seconds_until(lambda: "connection-lost" in kinds(events, iid), 4)
    assert took < 2.0
    lost = [e for e in events.read(after="0-0") if e.kind == "connection-lost"]
    assert len(lost) == 1 and lost[0].fields["detectedBy"] == CONNECTION_CLOSED


@pytest.mark.parametrize("fault", ["hang", "error500", "wrong_body", "blackhole", "refuse", "slow_over"])
def test_each_failure_kind_is_lost_after_max_failures(sim, redis_client, store, events, fault):
    iid = ready_instance(sim, store)
    c = sim.control
    with Running(redis_client, store, events, run_s=8, fast_path=False):
        seconds_until(lambda: read_states(redis_client, Keys(), [iid])[iid].total_successes >= 1, 5)
        {"hang": lambda: c.hang_comfy(int(iid)), "error500": lambda: c.comfy_error(int(iid), 500),
         "wrong_body": lambda: c.comfy_wrong_body(int(iid)), "blackhole": lambda: c.blackhole(int(iid)),
         "refuse": lambda: c.refuse(int(iid)), "slow_over": lambda: c.slow_comfy(int(iid), 0.6)}[fault]()
        seconds_until(lambda: "connection-lost" in kinds(events, iid), 6)
        # shown lost at once (never ready meanwhile), and still watched so its recovery is seen
        seconds_until(lambda: store.get_instance(iid).status == "unhealthy", 2)
        assert store.get_instance(iid).status_reason == "keepalive: connection lost"
        c.restore_comfy(int(iid))
        c.open_path(int(iid))
        seconds_until(lambda: "connection-restored" in kinds(events, iid), 6)
        seconds_until(lambda: "keepalive_lost_since" not in store.get_instance(iid).extra, 2)
        back = store.get_instance(iid)
        assert (back.status, back.status_reason) == ("ready", None)
        assert back.extra["keepalive_last_loss_at"] > 0  # the pool trims a flapping one first
    seen = kinds(events, iid)
    assert seen.count("connection-lost") == 1 and seen.count("ping-failure") >= FAST.max_failures
    lost = [e for e in events.read(after="0-0") if e.kind == "connection-lost"][0]
    assert lost.fields["detectedBy"] == PING_FAILURES


def test_slow_just_under_the_timeout_is_alive(sim, redis_client, store, events):
    iid = ready_instance(sim, store)
    sim.control.slow_comfy(int(iid), 0.15)
    with Running(redis_client, store, events, run_s=2.5, fast_path=False):
        pass
    state = read_states(redis_client, Keys(), [iid])[iid]
    assert state.total_pings >= 3 and state.total_failures == 0


def test_a_dead_instance_does_not_delay_the_others(sim, redis_client, store, events):
    dead = ready_instance(sim, store)
    sim.control.blackhole(int(dead))
    alive = [ready_instance(sim, store) for _ in range(5)]
    with Running(redis_client, store, events, run_s=2.6, fast_path=False):
        pass
    states = read_states(redis_client, Keys(), alive)
    assert all(s.total_pings >= 4 and s.total_failures == 0 for s in states.values())


def test_one_runner_per_shard(sim, redis_client, store, events):
    iid = ready_instance(sim, store)
    with Running(redis_client, store, events, run_s=2.0) as first:
        seconds_until(lambda: LeaseManager(redis_client, Keys()).current(lease_name(0)) is not None, 3)
        with Running(redis_client, store, events, run_s=2.0, acquire_wait_s=0.5) as second:
            pass
    assert second.result == {"shard": 0, "result": "busy"}
    assert first.result and first.result["result"] == "done"
    # a handover keeps the schedule: one interval's pings, not two
    state = read_states(redis_client, Keys(), [iid])[iid]
    with Running(redis_client, store, events, run_s=1.0, fast_path=False):
        pass
    after = read_states(redis_client, Keys(), [iid])[iid]
    assert after.total_pings - state.total_pings <= 3


def test_flapping_never_raises_connection_lost(sim, redis_client, store, events):
    """A route that drops and comes back every second (held connections freeze, no close): pings fail now and
    then, never max_failures in a row, so no connection-lost; the held socket survives the flaps."""
    iid = ready_instance(sim, store)
    stop = threading.Event()

    def flap() -> None:
        while not stop.is_set():
            sim.control.blackhole(int(iid))
            time.sleep(0.25)
            sim.control.open_path(int(iid))
            time.sleep(1.0)

    t = threading.Thread(target=flap, daemon=True)
    with Running(redis_client, store, events, run_s=7):
        t.start()
        time.sleep(6.5)
        stop.set()
    t.join()
    assert "connection-lost" not in kinds(events, iid)
    assert read_states(redis_client, Keys(), [iid])[iid].total_failures >= 1


def open_fds() -> int:
    import os  # noqa: PLC0415

    return len(os.listdir("/proc/self/fd"))


def test_file_descriptors_return_to_baseline_after_1000_instances_come_and_go(sim, redis_client, store,
                                                                                 events):
    from vastkeep.core.settings import Secret  # noqa: PLC0415
    from vastkeep.providers.vast import VastClient  # noqa: PLC0415

    sim.control.bulk_create(1000)
    with VastClient(Secret(sim.api_key), sim.vast_api_url) as vast:
        rows = vast.list_instances()
    ids = []
    for vi in rows:
        ids.append(str(vi.id))
        store.put_instance(InstanceRecord(instance_id=ids[-1], status="ready",
                                          connection_url=f"http://{vi.public_ip}:{vi.ports['8188/tcp']}"))
    baseline = open_fds()
    policy = KeepalivePolicy(interval_s=2, timeout_s=2, max_failures=3)
    with Running(redis_client, store, events, policy=policy, run_s=40) as r:
        # reading 1,000 states is itself CPU in this process (the runner's): poll it sparingly
        seconds_until(lambda: sum(s.total_pings > 0 for s in read_states(redis_client, Keys(), ids).values())
                 == len(ids), 10, every_s=0.5)
        held = open_fds()
        for iid in ids:  # the instances go away (destroyed, failed ...): the runner lets go of them
            store.delete_instance(iid)
        seconds_until(lambda: not r.runner.watches, 5)
        # idle keep-alive connections expire after interval + timeout + 2 s; aiohttp sweeps at that period
        seconds_until(lambda: open_fds() <= baseline + 20, 2 * (2 + 2 + 2) + 4, every_s=0.2)
        after = open_fds()
        r.runner.request_stop()
    assert held >= baseline + len(ids) // 2  # keep-alive connections and held /ws sockets were open
    assert after <= baseline + 20, (baseline, held, after)
    assert "connection-lost" not in {e.kind for e in events.read(after="0-0", count=10_000)}


def test_the_runner_logs_the_guides_start_line_once_per_shard(sim, redis_client, store, events, caplog):
    caplog.set_level(logging.INFO, logger="vastkeep.keepalive")
    ready_instance(sim, store)
    announced: set[str] = set()  # what the worker process keeps (worker.wiring.Resources.announced)
    for _ in range(2):  # a continuation in the same process: no second line
        with Running(redis_client, store, events, run_s=0.5, announced=announced):
            pass
    assert caplog.text.count("[Keepalive] Starting ComfyUI connection monitoring") == 1
