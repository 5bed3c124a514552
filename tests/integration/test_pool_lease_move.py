"""Failover's lease move (``lease_move.lua``) on a real redis-server: the lease leaves its lost instance for a
ready one under a fresh fence, keeps its lease id (renew and release still work) and its endpoint token (which
now names the new grant); the move is a compare-and-set on the old fence and answers a repeat (a re-send, a
second process deciding the same failover) with its first answer.
"""

from __future__ import annotations

import pytest

from tests.fixtures.event_kinds import documented_fields
from vastkeep.core.errors import NotFound
from vastkeep.pool import PoolLeases
from vastkeep.pool.moving import Moved, move_lease
from vastkeep.proxy import endpoints
from vastkeep.state import InstanceRecord, Keys

K = Keys()


def ready(store, iid: str, slot: int, lost: bool = False) -> None:
    store.put_instance(InstanceRecord(iid, status="ready", label=f"vastkeep:default:{slot}",
                                      connection_url=f"http://127.0.0.1:{9000 + slot}",
                                      extra={"keepalive_lost_since": 1.0} if lost else {}))


@pytest.fixture
def leases(redis_client, store):
    return PoolLeases(redis_client, K, "default", "vastkeep", store=store)


def resolve(redis_client, token: str, now: float) -> tuple[str, int] | None:
    grant = endpoints.parse_grant(redis_client.get(K.endpoint(endpoints.digest(token))))
    if grant is None:
        return None
    entry = redis_client.hget(K.pool_leases("default"), grant.instance_id)
    return (grant.instance_id, grant.fence) if endpoints.lease_matches(entry, grant, now) else None


def test_the_lease_and_its_token_move_to_a_ready_instance(redis_client, store, leases):
    ready(store, "1", 0)
    ready(store, "2", 1, lost=True)  # lost ComfyUI: never a failover target
    ready(store, "3", 2)
    g = leases.grant(600, "svc")
    token = endpoints.issue(redis_client, K, "default", g.instance_id, g.fence, g.leased_until)
    now = leases.clock.now()
    assert resolve(redis_client, token, now) == ("1", g.fence)
    moved = move_lease(leases, "1", g.fence, "keepalive-lost")
    assert isinstance(moved, Moved)
    assert (moved.instance_id, moved.from_instance, moved.replayed) == ("3", "1", False)
    assert moved.fence > g.fence and moved.connection_url == "http://127.0.0.1:9002"
    assert resolve(redis_client, token, now) == ("3", moved.fence)
    assert store.get_instance("3").leased_until == pytest.approx(g.leased_until, abs=0.01)
    assert store.get_instance("1").leased_until is None
    # the same failover decided again (another proxy, a re-send): the first answer, nothing moves twice
    again = move_lease(leases, "1", g.fence, "upstream-refused")
    assert isinstance(again, Moved) and again.replayed and again.instance_id == "3"
    assert again.fence == moved.fence
    # the lease id still renews and releases it, now on instance 3
    renewed = leases.renew(g.lease_id, 300)
    assert renewed["instanceId"] == "3" and renewed["fence"] == moved.fence
    assert endpoints.follow_lease(redis_client, K, "default", "3", moved.fence)
    # the lost instance needs a health check before it is leased again; the next grant takes nothing
    ready(store, "1", 0)
    with pytest.raises(Exception) as busy:
        leases.grant(60, "other")
    assert "health-checked" in str(busy.value) or "leased" in str(busy.value)
    assert leases.release(g.lease_id)["instanceId"] == "3"
    assert resolve(redis_client, token, now) is None
    with pytest.raises(NotFound):
        leases.release(g.lease_id)


def test_a_move_is_fenced_and_waits_for_a_ready_instance(redis_client, store, leases):
    ready(store, "1", 0)
    g = leases.grant(600, "svc")
    assert move_lease(leases, "1", g.fence + 1, "keepalive-lost") == "gone"  # not the lease's grant
    assert move_lease(leases, "1", g.fence, "keepalive-lost") == "none-ready"  # refusals are not memoised
    ready(store, "2", 1)
    moved = move_lease(leases, "1", g.fence, "keepalive-lost")
    assert isinstance(moved, Moved) and moved.instance_id == "2"
    ready(store, "3", 2)  # a second failover of the moved lease is a new grant, a new move
    second = move_lease(leases, "2", moved.fence, "upstream-refused")
    assert isinstance(second, Moved) and second.instance_id == "3" and second.fence > moved.fence
    first = move_lease(leases, "1", g.fence, "keepalive-lost")  # the memo answers the first move again
    assert isinstance(first, Moved) and first.replayed and first.instance_id == "2"
    leases.release(g.lease_id)
    assert move_lease(leases, "3", second.fence, "keepalive-lost") == "gone"


def test_the_reconcile_rounds_pass_moves_a_lease_off_a_lost_instance(redis_client, store, events):
    """With no proxy traffic the lease still moves (before the lost instance is destroyed): the round's pass
    over the leases fails it over once a ready instance exists, and says so in the events."""
    leases = PoolLeases(redis_client, K, "default", "vastkeep", store=store, events=events)
    ready(store, "1", 0)
    g = leases.grant(600, "svc")
    token = endpoints.issue(redis_client, K, "default", g.instance_id, g.fence, g.leased_until)
    ready(store, "1", 0, lost=True)  # the keepalive declared it lost
    assert "moved" not in leases.settle()  # nothing ready to move to: the lease stays, the next round retries
    assert resolve(redis_client, token, leases.clock.now()) == ("1", g.fence)
    ready(store, "2", 1)
    assert leases.settle()["moved"] == 1
    moved = resolve(redis_client, token, leases.clock.now())
    assert moved is not None and moved[0] == "2"
    assert "moved" not in leases.settle()  # once
    got = [e for e in events.read(count=100) if e.kind.startswith("failover-")]
    assert [e.kind for e in got] == ["failover-started", "failover-done"]
    for e in got:
        assert set(e.fields) == documented_fields(e.kind)
    assert got[1].fields["to_instance"] == "2" and got[1].fields["reason"] == "keepalive-lost"
    assert g.lease_id not in str(got) and token not in str(got)
