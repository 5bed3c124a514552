"""Fenced leases against a real redis-server: races, ownership, expiry, fencing."""

from __future__ import annotations

import json
import threading

import pytest

from tests.fixtures.helpers import race_threads, wait_for
from vastkeep.core.clock import FakeClock, SystemClock
from vastkeep.core.errors import LeaseBusy, LeaseLost, StaleFence
from vastkeep.state.connection import connect
from vastkeep.state.keys import Keys
from vastkeep.state.leases import Lease, LeaseManager, new_owner


@pytest.fixture
def leases(redis_client, redis_server) -> LeaseManager:
    return LeaseManager(connect(redis_server.url), Keys(), FakeClock())




def test_acquire_grants_a_fenced_lease_and_records_it(leases, redis_client):
    lease = leases.acquire("pool:plan", "owner-a", 10_000)
    assert isinstance(lease, Lease) and (lease.fence, lease.owner, lease.ttl_ms) == (1, "owner-a", 10_000)
    assert lease.acquired_at == FakeClock().now()
    assert redis_client.hgetall("vastkeep:lease:pool:plan") == {
        "owner": "owner-a", "fence": "1", "ttl_ms": "10000", "acquired_at": repr(FakeClock().now())}
    assert 9_000 < redis_client.pttl("vastkeep:lease:pool:plan") <= 10_000
    assert redis_client.ttl("vastkeep:fence:pool:plan") == -1  # the counter never expires
    assert leases.current("pool:plan") == lease and leases.check_fence("pool:plan", 1)
    assert Lease.from_dict(lease.to_dict(), owner="owner-a") == lease


def test_lease_dict_and_repr_never_carry_the_owner_token(leases) -> None:
    """The dict is what may travel (task args/results show in Flower); the owner is a capability."""
    owner = new_owner("pool")
    lease = leases.acquire("pool:plan", owner, 10_000)
    data = lease.to_dict()
    assert data == {"name": "pool:plan", "fence": lease.fence, "ttl_ms": 10_000,
                    "acquired_at": lease.acquired_at}
    assert owner not in json.dumps(data) and owner not in repr(lease) and owner not in str(lease)
    with pytest.raises(TypeError):
        Lease.from_dict(data)  # type: ignore[call-arg] - the owner never comes from the dict
    with pytest.raises(ValueError):
        Lease.from_dict(data, owner="")
    rebuilt = Lease.from_dict(json.loads(json.dumps(data)), owner=owner)
    assert rebuilt == lease and leases.is_held(rebuilt) and leases.renew(rebuilt)


def test_busy_lease_is_refused_and_same_owner_reacquire_keeps_the_fence(leases, redis_client):
    first = leases.acquire("x", "owner-token-a7", 1_000)
    assert leases.acquire("x", "b", 1_000) is None
    with pytest.raises(LeaseBusy) as busy:
        leases.require("x", "b", 1_000)
    assert busy.value.name == "x" and 0 < busy.value.retry_after_ms <= 1_000
    assert "owner-token-a7" not in repr(busy.value.to_dict())  # owner tokens are capabilities
    again = leases.acquire("x", "owner-token-a7", 60_000)
    assert again.fence == first.fence and again.acquired_at == first.acquired_at and again.ttl_ms == 60_000
    assert redis_client.pttl("vastkeep:lease:x") > 30_000
    assert leases.last_fence("x") == 1


def race(url: str, name: str, contenders: int) -> list[Lease]:
    """``contenders`` threads, each with its own connection, call acquire at the same instant."""
    barrier = threading.Barrier(contenders)
    wins: list[Lease] = []
    lock = threading.Lock()

    def contend(i: int) -> None:
        mgr = LeaseManager(connect(url), Keys(), SystemClock())
        try:
            barrier.wait(5)
            got = mgr.acquire(name, f"worker-{i}", 5_000)
            if got is not None:
                with lock:
                    wins.append(got)
        finally:
            mgr.redis.close()

    race_threads(contend, ((i,) for i in range(contenders)))
    return wins


@pytest.mark.parametrize("contenders", [2, 8])
def test_clients_racing_exactly_one_wins_and_fences_increase(redis_client, redis_server, contenders):
    releaser = LeaseManager(redis_client)
    fences: dict[str, list[int]] = {"race:a": [], "race:b": []}
    for r in range(20):
        name = "race:a" if r % 2 else "race:b"
        wins = race(redis_server.url, name, contenders)
        assert len(wins) == 1, wins
        fences[name].append(wins[0].fence)
        assert releaser.current(name) == wins[0]
        assert releaser.release(wins[0])
    for per_name in fences.values():  # strictly increasing, no gaps, per name
        assert per_name == list(range(1, len(per_name) + 1))


def test_renew_and_release_by_a_non_owner_are_refused(leases, redis_client):
    lease = leases.acquire("job", "owner-a", 5_000)
    impostor = Lease("job", "owner-b", lease.fence, 5_000, lease.acquired_at)
    old_grant = Lease("job", "owner-a", lease.fence - 1, 5_000, lease.acquired_at)
    assert leases.renew(impostor, 60_000) is False and leases.renew(old_grant, 60_000) is False
    assert redis_client.pttl("vastkeep:lease:job") <= 5_000
    assert leases.release(impostor) is False and leases.release(old_grant) is False
    assert leases.current("job") == lease
    assert leases.renew(lease, 60_000) is True and redis_client.pttl("vastkeep:lease:job") > 5_000
    assert leases.release(lease) is True and leases.current("job") is None
    assert leases.release(lease) is False  # idempotent: nothing left to release


def test_a_holder_that_outlives_its_ttl_is_refused_and_fenced(leases):
    stale = leases.acquire("chain:poll:42", "slow-worker", 60)
    wait_for(lambda: leases.current("chain:poll:42") is None)
    assert leases.renew(stale) is False
    with pytest.raises(LeaseLost):
        leases.ensure_renewed(stale)
    with pytest.raises(LeaseLost) as lost:
        leases.assert_held(stale)
    assert not isinstance(lost.value, StaleFence)  # lapsed, nobody newer yet
    fresh = leases.acquire("chain:poll:42", "fast-worker", 5_000)
    assert fresh.fence == stale.fence + 1
    assert leases.renew(stale) is False and leases.release(stale) is False
    assert not leases.check_fence("chain:poll:42", stale.fence)
    assert leases.check_fence("chain:poll:42", fresh.fence)
    with pytest.raises(StaleFence):
        leases.assert_held(stale)
    # The same owner coming back after expiry gets a new grant, not its old fence.
    back = leases.acquire("chain:poll:43", "w", 50)
    wait_for(lambda: leases.current("chain:poll:43") is None)
    assert leases.acquire("chain:poll:43", "w", 1_000).fence == back.fence + 1


def test_hold_context_manager_releases_and_raises_busy(leases):
    with leases.hold("ctx", "a", 5_000) as lease:
        assert leases.is_held(lease)
        with pytest.raises(LeaseBusy), leases.hold("ctx", "b", 5_000):
            pass
    assert leases.current("ctx") is None


@pytest.mark.parametrize("ttl", [0, -1, 1.5, True])
def test_bad_ttl_is_refused(leases, ttl):
    with pytest.raises(ValueError):
        leases.acquire("x", "a", ttl)


def test_owner_tokens_are_unique():
    assert len({new_owner("w") for _ in range(100)}) == 100 and new_owner("beat").startswith("beat:")
