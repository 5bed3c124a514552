"""One pool sweep at a time: the ``ports-sweep`` fenced lease, on a real redis-server with real sockets.

Beat queues a sweep every poll interval and the admin API can queue more; two sweeps at once double the
probes and race on the verdicts. The sweep takes a fenced lease sized to its worst case, and a sweep that
finds it held does nothing. A sweep that loses its lease before writing writes nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.fixtures.helpers import wait_for
from tests.fixtures.state import State
from vastkeep.ports import flow as port_flow
from vastkeep.ports.flow import SWEEP_BUSY, SWEEP_LEASE, SWEEP_LOST
from vastkeep.ports.probe import ProbeConfig
from vastkeep.ports.validator import PortValidator
from vastkeep.providers.http import RetryPolicy
from vastkeep.state.connection import connect
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys
from vastkeep.state.leases import LeaseManager
from vastkeep.state.store import InstanceRecord, StateStore

DELAY_S = 0.4


def validator() -> PortValidator:
    config = ProbeConfig(tcp_timeout_s=0.5, http_timeout_s=1.5, allow_loopback=True)
    return PortValidator(config, concurrency=20)


def slow_records(store: StateStore, port_servers: Any, n: int = 4) -> list[Any]:
    """``n`` loading records whose ComfyUI answers after DELAY_S: a sweep lasts at least that long."""
    listeners = []
    for i in range(n):
        lst = port_servers.open("delay", delay_s=DELAY_S)
        store.put_instance(InstanceRecord(instance_id=f"s{i}", status="loading", public_ip=lst.ip,
                                          ports={"8188/tcp": lst.port}))
        listeners.append(lst)
    return listeners


def test_two_concurrent_sweeps_exactly_one_runs(store, events, redis_server, port_servers) -> None:
    listeners = slow_records(store, port_servers)
    start = threading.Barrier(2)
    results: list[dict[str, Any]] = []

    def sweep() -> None:
        own = connect(redis_server.url)  # each sweep on its own connection, as on two workers
        leases = LeaseManager(own, Keys())
        start.wait(5)
        results.append(port_flow.validate_pool(State(own).store, EventLog(own, Keys()), validator(),
                                               leases=leases))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert sorted(results, key=len) == [
        {"skipped": SWEEP_BUSY},
        {"checked": 4, "passed": 4, "failed": 0, "failed_ids": [], "firewall": 0}]
    assert [lst.accepted for lst in listeners] == [1, 1, 1, 1]  # every instance probed once, not twice
    leases = LeaseManager(store.redis, Keys())
    assert leases.current(SWEEP_LEASE) is None and leases.last_fence(SWEEP_LEASE) == 1  # released
    assert [e.kind for e in events.latest(10)] == ["port-validated"] * 4
    # the lease is free again: the next sweep runs
    again = port_flow.validate_pool(store, events, validator(), leases=leases)
    assert again["checked"] == 4 and leases.last_fence(SWEEP_LEASE) == 2


def test_a_sweep_that_lost_its_lease_writes_nothing(store, events, port_servers) -> None:
    slow_records(store, port_servers, n=2)
    leases = LeaseManager(store.redis, Keys())
    result: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: result.append(
        port_flow.validate_pool(store, events, validator(), leases=leases)))
    worker.start()
    wait_for(lambda: leases.current(SWEEP_LEASE) is not None, what="sweep lease taken")
    held = leases.current(SWEEP_LEASE)
    # the holder stalls past its TTL (simulated: the lease lapses) and another sweep takes over
    store.redis.delete(store.keys.lease(SWEEP_LEASE))
    newer = leases.acquire(SWEEP_LEASE, "newer-sweep", 30_000)
    worker.join(10)
    assert result == [{"skipped": SWEEP_LOST}]
    assert newer is not None and newer.fence > held.fence
    assert leases.is_held(newer)  # the stale sweep did not release the newer grant
    assert all(r.port_validation is None and r.status == "loading" for r in store.list_instances())
    assert events.latest(10) == []


def test_a_sweep_that_stalls_after_its_last_lease_check_cannot_overwrite_a_newer_sweep(
        store, events, redis_server, port_servers) -> None:
    """Sweep A passes its last lease check, then stalls (GC pause, frozen VM) right before writing. Its
    lease lapses, the instance moves to a dead address and sweep B records that. A's late "passed" verdict
    must be refused by the store (the writes are fenced by the sweep lease), not promote the instance."""
    ok = port_servers.open("ok")
    dead = port_servers.open("refused")
    store.put_instance(InstanceRecord(instance_id="7", status="loading", public_ip=ok.ip,
                                      ports={"8188/tcp": ok.port}))
    own = connect(redis_server.url)  # sweep A on its own connection, as on another worker
    a_store, a_leases = State(own).store, LeaseManager(own, Keys())
    b_leases = LeaseManager(store.redis, Keys())
    b_result: list[dict[str, Any]] = []
    real_modify = a_store.modify_instance

    def stalled_modify(*args: Any, **kwargs: Any) -> Any:
        if not b_result:  # A's first write: the stall happens here, after A's last lease check
            a_lease, used = a_leases.current(SWEEP_LEASE), kwargs.get("lease")
            assert a_lease is not None and used is not None  # the sweep writes under its lease
            assert (used.name, used.fence) == (a_lease.name, a_lease.fence) == (SWEEP_LEASE, 1)
            store.redis.delete(store.keys.lease(SWEEP_LEASE))  # A's lease lapses during the stall
            store.update_instance("7", {"public_ip": dead.ip, "ports": {"8188/tcp": dead.port}})
            b_result.append(port_flow.validate_pool(store, events, validator(), leases=b_leases))
        return real_modify(*args, **kwargs)

    a_store.modify_instance = stalled_modify  # type: ignore[method-assign]
    a_result = port_flow.validate_pool(a_store, EventLog(own, Keys()), validator(), leases=a_leases)
    assert b_result == [{"checked": 1, "passed": 0, "failed": 1, "failed_ids": ["7"], "firewall": 0}]
    assert a_result == {"skipped": SWEEP_LOST}
    rec = store.get_instance("7")
    assert rec.status == "loading" and rec.connection_url is None  # A's "passed" never landed
    assert rec.port_validation["success"] is False and rec.public_ip == dead.ip
    assert (rec.fence_name, rec.fence) == (SWEEP_LEASE, 2)  # B's grant wrote it last
    assert [e.kind for e in events.latest(10)] == ["port-validation-failed"]  # and A emitted nothing
    assert ok.accepted == 1  # A probed the old address once; B probed only the new one


@pytest.mark.parametrize(
    ("tcp_s", "http_s", "bound", "probes", "expected_s"),
    [
        (5.0, 10.0, 200, 3000, 5.0 + 15 * 15.0),  # 1,000 instances x 3 at the defaults: 15 rounds
        (5.0, 10.0, 200, 600, 5.0 + 3 * 15.0),
        (5.0, 10.0, 3000, 3000, 5.0 + 15.0),
        (1.0, 1.0, 200, 0, 5.0 + 2.0),  # an empty pool still gets one round
    ],
)
def test_probe_budget(tcp_s, http_s, bound, probes, expected_s) -> None:
    v = PortValidator(ProbeConfig(tcp_timeout_s=tcp_s, http_timeout_s=http_s), concurrency=bound)
    assert port_flow.probe_budget_s(v, probes) == pytest.approx(expected_s)


def test_refresh_budget_follows_the_client() -> None:
    class Client:
        timeout_s = (5.0, 30.0)
        retry = RetryPolicy(max_attempts=4)

    assert port_flow.refresh_budget_s(None) == 0.0
    assert port_flow.refresh_budget_s(Client()) == pytest.approx(4 * 35.0 + 3 * 10.0)
