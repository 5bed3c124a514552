"""The warm pool with real worker processes: ``vastkeep.pool.reconcile`` by name on two prefork workers.

Rounds sent many at once from any number of producers run one at a time (the fenced lease): the simulated
cloud's ledger then holds exactly the desired number of instances, each recorded, each label once, whatever
5xx faults were injected on the way. Scaling down never destroys a leased instance before its lease ends.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fixtures.chaos import Chaos
from tests.fixtures.helpers import wait_for
from tests.fixtures.pool_rig import destroy_all
from tests.fixtures.state import State
from vastkeep.core.settings import Secret
from vastkeep.providers.vast import VastClient
from vastkeep.state import Keys, connect


@pytest.fixture(autouse=True)
def _empty_cloud_after(sim) -> Any:
    yield
    destroy_all(sim)


pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
TASK = "vastkeep.pool.reconcile"


def ledger(sim: Any) -> list[Any]:
    with VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(2.0, 5.0)) as vast:
        return vast.list_instances()


def rounds(client: Any, n: int) -> list[dict[str, Any]]:
    """``n`` rounds sent at once; their results (each a round, a skip, or an error dict)."""
    results = [client.send_task(TASK) for _ in range(n)]
    return [r.get(timeout=60) for r in results]


def converge(client: Any, sim: Any, want: int, timeout_s: float = 60.0) -> list[Any]:
    """Rounds until the provider holds ``want`` instances (one round per 0.2 s, like a fast beat)."""
    def done() -> list[Any] | None:
        rounds(client, 1)
        found = ledger(sim)
        return found if len(found) == want else None
    return wait_for(done, timeout_s, f"{want} instances at the provider", interval_s=0.2)


def test_two_workers_racing_rounds_rent_exactly_the_desired_size(chaos: Chaos, sim) -> None:
    server = chaos.redis()
    env = chaos.env(server.url, **sim.env(), WARM_POOL_MIN_RELIABILITY="0.9", WARM_POOL_DESIRED_SIZE="0",
                   WARM_POOL_RENT_SETTLE_MS="2000")
    workers = [chaos.worker("worker", f"pool{i}", env, concurrency=2) for i in range(2)]
    for w in workers:
        w.wait_ready(120)
    client = chaos.client(server.url, env)
    store = State.on(server.url).store
    sim.control.clear_requests()

    store.set_desired_size(5)
    sim.control.api_fault("vast", 503, count=2, path_contains="/asks/")  # two rents answered 5xx
    out = rounds(client, 8)
    assert all("error" not in o for o in out), out
    assert sum(len(o.get("rented", [])) for o in out) <= 5
    fences = sorted(o["fence"] for o in out if "fence" in o)
    assert len(fences) == len(set(fences))  # every round that ran had its own grant
    found = converge(client, sim, 5)
    # the unknown rents block their slots until the settle time; the pool filled the free ones
    labels = sorted(vi.label for vi in found)
    assert len(set(labels)) == 5 and all(label.startswith("vastkeep:default:") for label in labels)
    assert {str(vi.id) for vi in found} == {r.instance_id for r in store.list_instances()}

    leased = str(found[0].id)
    store.update_instance(leased, {"leased_until": time.time() + 3600, "lease_owner": "client-a"})
    store.set_desired_size(2)
    rounds(client, 4)
    found = ledger(sim)
    assert len(found) == 2 and leased in {str(vi.id) for vi in found}
    store.set_desired_size(0)
    rounds(client, 4)
    assert [str(vi.id) for vi in ledger(sim)] == [leased]  # kept until its lease ends
    store.update_instance(leased, {"leased_until": time.time() - 1})
    rounds(client, 2)
    assert ledger(sim) == [] and store.list_instances() == []
    rents = [r for r in sim.control.requests_seen(service="vast")
             if r.get("method") == "PUT" and "/asks/" in (r.get("path") or "")]
    assert len(rents) == 5 + 2  # every instance paid for filled a slot; the two 5xx rented nothing
    for w in workers:
        w.assert_alive()


def test_a_worker_killed_mid_rent_never_leads_to_paying_twice(chaos: Chaos, sim) -> None:
    """SIGKILL while the rent request is in flight: the pending rent (written before the request) blocks
    its slot; once the dead round's lease has expired, the next round looks the label up, waits out the
    settle time, and rents once."""
    server = chaos.redis()
    env = chaos.env(server.url, **sim.env(), WARM_POOL_MIN_RELIABILITY="0.9", WARM_POOL_DESIRED_SIZE="1",
                    WARM_POOL_RENT_SETTLE_MS="2000", WARM_POOL_RECONCILE_INTERVAL_MS="3000")
    victim = chaos.worker("worker", "victim", env, concurrency=1)
    victim.wait_ready(120)
    client = chaos.client(server.url, env)
    r = connect(server.url)
    keys = Keys()
    sim.control.clear_requests()
    sim.control.api_fault("vast", None, count=1, delay_s=20.0, path_contains="/asks/")
    client.send_task(TASK)
    def rent_sent() -> bool:
        return any("/asks/" in (q.get("path") or "") for q in sim.control.requests_seen(service="vast"))

    wait_for(rent_sent, 30, "the rent request reached the provider")
    assert r.hlen(keys.pool_pending("default")) == 1  # recorded before the request was sent
    lease_key = keys.lease("pool-reconcile:default")
    assert 0 < r.pttl(lease_key) <= 3_000  # the round lease: one reconcile interval, renewed by its keeper
    time.sleep(3.5)  # longer than the TTL: the keeper thread kept it up while the rent blocked
    assert r.exists(lease_key)
    victim.kill_group()
    killed_at = time.monotonic()
    victim.reap_group()
    wait_for(lambda: not r.exists(lease_key), 10, "the killed round's lease lapsed")
    assert time.monotonic() - killed_at <= 3.5  # a killed round blocks the pool one TTL at most
    survivor = chaos.worker("worker", "survivor", env, concurrency=1)
    survivor.wait_ready(120)
    out = rounds(client, 1)[0]
    if not out["rented"]:  # still within the settle time (a slow host may already be past it)
        assert any("in flight" in w for w in out["wait"])
    found = converge(client, sim, 1)
    assert [vi.label for vi in found] == ["vastkeep:default:0"] and r.hlen(keys.pool_pending("default")) == 0
    time.sleep(0.5)
    rounds(client, 2)
    assert len(ledger(sim)) == 1
    rents = [q for q in sim.control.requests_seen(service="vast")
             if q.get("method") == "PUT" and "/asks/" in (q.get("path") or "")]
    assert len(rents) == 2  # the killed one (dropped by the provider with its connection) and one more
