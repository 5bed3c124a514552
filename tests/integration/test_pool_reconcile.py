"""The warm pool's reconciler on the simulated cloud and a real redis-server.

Scale 0 → 5 → 2 → 0 with leased instances kept until their lease ends; rents whose answer is lost (a read
timeout, a 5xx) resolved by label with no double rent; the pool rebuilt from provider labels after FLUSHDB;
safe mode entered on each cause (rejected key, failures, spend cap) with 0 rents while on, and left as
configured. The simulator's instance listing is the ledger: what Vast.ai would bill.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fixtures.event_kinds import documented_fields
from tests.fixtures.helpers import wait_for
from tests.fixtures.pool_rig import Pool, destroy_all
from vastkeep.pool import safety
from vastkeep.state import InstanceRecord, LeaseManager

#: Search wide enough for the simulator's catalogue to hold 5+ offers (the defaults match only 3).
# the shared Vast.ai rate limiter off: these rigs run rounds back to back, far faster than real time


def check_events(pool: Pool) -> None:
    for ev in pool.events.read(count=1000):
        if ev.kind.startswith(("instance-", "lease-", "rent-", "safe-mode")):
            assert set(ev.fields) == documented_fields(ev.kind), ev.kind


@pytest.fixture(autouse=True)
def _empty_cloud_after(sim) -> Any:
    yield
    destroy_all(sim)


@pytest.fixture
def pool(sim, redis_client) -> Pool:
    sim.control.clear_requests()
    return Pool(sim, redis_client)


def test_scale_0_5_2_0_never_destroys_a_leased_instance_early(pool: Pool) -> None:
    pool.size(0)
    assert pool.run()["rented"] == [] and pool.provider() == []
    pool.size(5)
    out = pool.run()
    assert len(out["rented"]) == 5 and out["plan"]["rent"] == [0, 1, 2, 3, 4]
    assert pool.labels() == [f"vastkeep:default:{i}" for i in range(5)]
    records = {r.instance_id: r for r in pool.store.list_instances()}
    assert set(records) == {str(vi.id) for vi in pool.provider()}
    assert all(r.status == "starting" and r.price_per_hour for r in records.values())
    assert pool.run()["rented"] == []  # converged: nothing more
    # two clients lease the two oldest instances for 10 minutes
    leased = sorted(records, key=int)[:2]
    for iid in leased:
        pool.store.update_instance(iid, {"leased_until": pool.clock.now() + 600, "lease_owner": "client-a"})
    pool.size(2)
    out = pool.run()
    assert len(out["destroyed"]) == 3 and not set(leased) & {d[0] for d in out["destroyed"]}
    assert sorted(str(vi.id) for vi in pool.provider()) == leased
    pool.size(0)
    out = pool.run()
    assert out["destroyed"] == [] and any("leased" in w for w in out["wait"])
    assert sorted(str(vi.id) for vi in pool.provider()) == leased
    pool.clock.advance(601)  # the leases end
    out = pool.run()
    assert sorted(d[0] for d in out["destroyed"]) == leased
    assert pool.provider() == [] and pool.store.list_instances() == []
    assert pool.rents_sent() == 5
    kinds = pool.kinds()
    assert kinds.count("instance-rented") == 5 and kinds.count("instance-destroyed") == 5
    check_events(pool)


def test_dead_and_stuck_instances_are_replaced(pool: Pool) -> None:
    pool.size(2)
    pool.run()
    first = sorted(pool.store.list_instances(), key=lambda r: int(r.instance_id))
    dead, stuck = first
    pool.store.update_instance(dead.instance_id, {"status": "failed", "error": "exited",
                                                  "leased_until": pool.clock.now() + 10_000,
                                                  "lease_owner": "client-b"})
    pool.clock.advance(pool.settings.warm_pool_provision_timeout_s + 1)  # the other never got ready
    out = pool.run()
    assert sorted(out["destroyed"]) == sorted([[dead.instance_id, "failed"],
                                               [stuck.instance_id, "provision-timeout"]])
    assert len(out["rented"]) == 2
    # replacements took new slots while the dead held theirs, so labels never repeated
    assert pool.labels() == ["vastkeep:default:2", "vastkeep:default:3"]
    kinds = pool.kinds()
    assert kinds.count("instance-replaced") == 2 and kinds.count("lease-broken") == 1
    broken = [e for e in pool.events.read(count=1000) if e.kind == "lease-broken"][0]
    assert broken.fields["client"] == "client-b" and broken.fields["instance_id"] == dead.instance_id
    check_events(pool)


def test_a_rent_that_times_out_is_resolved_by_its_label(pool: Pool) -> None:
    """The answer is lost; Vast.ai acted anyway (the rent lands under our label): adopted, never re-rented.

    The simulator drops a request whose client hung up, so "acted anyway" is played by renting the same
    label directly, as the provider would have.
    """
    pool.size(1)
    pool.sim.control.api_fault("vast", None, count=1, delay_s=2.0, path_contains="/asks/")
    out = pool.run(read_timeout_s=0.5)
    assert out["rented"] == [] and out["unknown"] == ["vastkeep:default:0"]
    assert [p.state for p in pool.book.pending()] == ["unknown"]
    out = pool.run()  # nothing under the label yet: its slot stays blocked, nothing is rented
    assert out["rented"] == [] and out["adopted"] == [] and any("unknown outcome" in w for w in out["wait"])
    time.sleep(2.0)
    with pool.vast() as vast:
        offer = vast.search_offers({"rentable": {"eq": True}, "direct_port_count": {"gte": 1}})[0]
        landed = vast.rent(offer.id, image="x", label="vastkeep:default:0")
    out = pool.run()
    assert out["adopted"] == [str(landed)] and out["rented"] == [] and pool.book.pending() == []
    assert pool.labels() == ["vastkeep:default:0"]
    assert [r.instance_id for r in pool.store.list_instances()] == [str(landed)]
    resolved = [e.fields for e in pool.events.read(count=1000) if e.kind == "rent-resolved"]
    assert resolved == [{"label": "vastkeep:default:0", "outcome": "adopted", "instance_id": str(landed)}]
    check_events(pool)


def test_a_rent_that_timed_out_and_never_landed_is_retried_once_after_the_settle_time(pool: Pool) -> None:
    pool.size(1)
    pool.sim.control.api_fault("vast", None, count=1, delay_s=2.0, path_contains="/asks/")
    assert pool.run(read_timeout_s=0.5)["unknown"] == ["vastkeep:default:0"]
    time.sleep(2.0)
    assert pool.run()["rented"] == [] and pool.provider() == []
    pool.clock.advance(pool.settings.warm_pool_rent_settle_s + 1)
    out = pool.run()
    assert len(out["rented"]) == 1 and pool.labels() == ["vastkeep:default:0"] and pool.rents_sent() == 2
    assert pool.run()["rented"] == [] and len(pool.provider()) == 1


def test_a_rent_answered_5xx_waits_for_the_settle_time_then_rents_once(pool: Pool) -> None:
    pool.size(1)
    pool.sim.control.api_fault("vast", 503, count=1, path_contains="/asks/")
    out = pool.run()
    assert out["unknown"] == ["vastkeep:default:0"] and pool.provider() == []
    assert pool.run()["rented"] == []  # within the settle time: not rented again
    assert pool.rents_sent() == 1
    pool.clock.advance(pool.settings.warm_pool_rent_settle_s + 1)
    out = pool.run()  # the label never showed up: the rent did not happen, the slot is free
    assert len(out["rented"]) == 1 and pool.labels() == ["vastkeep:default:0"]
    assert pool.rents_sent() == 2 and len(pool.provider()) == 1
    check_events(pool)


def test_rebuilt_from_labels_after_flushdb_without_renting_twice(sim, redis_client) -> None:
    sim.control.clear_requests()
    pool = Pool(sim, redis_client, WARM_POOL_DESIRED_SIZE="3")
    pool.run()
    before = sorted(vi.id for vi in pool.provider())
    assert len(before) == 3
    # a rent whose worker died after Vast.ai acted and before anything was recorded
    with pool.vast() as vast:
        offer = vast.search_offers({"rentable": {"eq": True}, "direct_port_count": {"gte": 1}})[0]
        orphan = vast.rent(offer.id, image="x", label="vastkeep:default:3")
    redis_client.flushdb()
    pool.size(4)
    out = pool.run()
    assert out["rented"] == [] and sorted(int(i) for i in out["adopted"]) == sorted([*before, orphan])
    assert len(pool.provider()) == 4 and pool.rents_sent() == 4
    assert {r.label for r in pool.store.list_instances()} == {f"vastkeep:default:{i}" for i in range(4)}
    assert pool.run()["rented"] == []


def test_duplicate_labels_keep_one(pool: Pool) -> None:
    pool.size(1)
    pool.run()
    with pool.vast() as vast:
        offer = vast.search_offers({"rentable": {"eq": True}, "direct_port_count": {"gte": 1}})[0]
        dup = vast.rent(offer.id, image="x", label="vastkeep:default:0")
        other = pool.sim.control.create_instance(label="someone-else:0")["id"]
    out = pool.run()
    assert out["destroyed"] == [[str(dup), "duplicate"]]
    ids = {vi.id for vi in pool.provider()}
    assert dup not in ids and other in ids and len(ids) == 2


# ── safe mode ────────────────────────────────────────────────────────────────
def test_safe_mode_on_a_rejected_key_rents_nothing_and_leaves_when_it_is_valid(pool: Pool) -> None:
    pool.size(2)
    pool.sim.control.invalidate_token("vast")
    out = pool.run()
    assert out["safeMode"] is True and out["rented"] == []
    state = pool.store.get_pool()
    assert state.safe_mode and "key" in (state.safe_mode_reason or "") and pool.book.cause() == "token"
    assert pool.run()["rented"] == [] and pool.rents_sent() == 0
    pool.sim.control.reset_tokens()
    pool.store.delete_token_result("vastai")  # the cached verdict expires (TOKEN_VALIDATION_CACHE_MS)
    out = pool.run()  # the cause cleared: left automatically at the start of the round, then rents
    assert out["safeMode"] is False and len(out["rented"]) == 2
    on_off = [e.fields["on"] for e in pool.events.read(count=1000) if e.kind == "safe-mode"]
    assert on_off == [True, False]
    check_events(pool)


def test_safe_mode_on_failures_in_the_window(sim, redis_client) -> None:
    sim.control.clear_requests()
    pool = Pool(sim, redis_client, WARM_POOL_SAFE_MODE_FAILURES="2", WARM_POOL_SAFE_MODE_WINDOW_MS="60000")
    pool.size(2)
    pool.run()
    for rec in pool.store.list_instances():
        pool.store.update_instance(rec.instance_id, {"status": "failed", "error": "OCI runtime failed"})
    out = pool.run()
    assert len(out["destroyed"]) == 2 and out["rented"] == [] and out["safeMode"] is True
    assert pool.book.cause() == "failures" and pool.rents_sent() == 2
    assert pool.run()["rented"] == [] and pool.rents_sent() == 2
    pool.clock.advance(61)  # the failures leave the window
    out = pool.run()
    assert out["safeMode"] is False and len(out["rented"]) == 2


def test_safe_mode_on_the_spend_cap(sim, redis_client) -> None:
    sim.control.clear_requests()
    pool = Pool(sim, redis_client, WARM_POOL_MAX_DPH="0.5", WARM_POOL_MAX_SPEND_DPH="1.0")
    pool.size(5)
    out = pool.run()
    spend = sum(vi.dph_total for vi in pool.provider())
    assert out["safeMode"] is True and 1 <= len(out["rented"]) < 5 and spend <= 1.0
    assert pool.book.cause() == "spend"
    assert "WARM_POOL_MAX_SPEND_DPH" in pool.store.get_pool().safe_mode_reason
    sent = pool.rents_sent()
    assert pool.run()["rented"] == [] and pool.rents_sent() == sent
    pool.size(1)
    pool.run()  # excess destroyed (safe mode still destroys)
    out = pool.run()  # spend + WARM_POOL_MAX_DPH fits under the cap again: left automatically
    assert out["safeMode"] is False and len(pool.provider()) == 1


def test_no_auto_exit_when_configured_and_never_from_an_operators_safe_mode(sim, redis_client) -> None:
    pool = Pool(sim, redis_client, WARM_POOL_SAFE_MODE_AUTO_EXIT="false")
    pool.size(1)
    sim.control.invalidate_token("vast")
    pool.run()
    sim.control.reset_tokens()
    pool.store.delete_token_result("vastai")
    assert pool.run()["safeMode"] is True and pool.provider() == []
    auto = Pool(sim, redis_client)
    safety.leave(auto.store, auto.book, auto.events, "operator", auto.clock.now())
    safety.enter(auto.store, auto.book, auto.events, "operator", "maintenance", auto.clock.now())
    assert auto.run()["safeMode"] is True and auto.provider() == []
    assert auto.store.get_pool().safe_mode_reason == "maintenance"


def test_one_reconciler_at_a_time(pool: Pool) -> None:
    leases = LeaseManager(pool.redis, pool.keys, pool.clock)
    held = leases.acquire("pool-reconcile:default", "someone", 60_000)
    assert held is not None
    assert pool.run() == {"skipped": "another reconciler is running"}
    leases.release(held)
    assert "rented" in pool.run()


def test_records_of_other_pools_and_unlabelled_instances_are_left_alone(pool: Pool) -> None:
    other = pool.sim.control.create_instance(label="vastkeep:other:0")["id"]
    bare = pool.sim.control.create_instance()["id"]
    pool.store.put_instance(InstanceRecord(str(other), status="failed", label="vastkeep:other:0"))
    pool.size(0)
    out = pool.run()
    assert out["destroyed"] == [] and out["adopted"] == []
    assert {other, bare} <= {vi.id for vi in pool.provider()}


def test_the_status_says_why_the_pool_waits(pool: Pool) -> None:
    from vastkeep.pool import pool_figures

    pool.size(40)  # more than the simulated catalogue holds for this search
    pool.run()
    figures = pool_figures(pool.settings, pool.book, pool.store.list_instances(), False)
    assert figures["liveInstances"] == len(pool.provider()) < 40
    assert any("no offer matches" in w for w in figures["lastRound"]["wait"])


def test_a_long_round_keeps_its_short_lease_and_no_second_reconciler_runs(sim, redis_client) -> None:
    """The round lease's TTL is one reconcile interval (3 s here), renewed by the keeper thread while the
    round blocks in a slow Vast.ai listing three TTLs long: every other reconciler is refused all along."""
    import threading  # noqa: PLC0415

    from vastkeep.pool import round_lease_ttl_ms  # noqa: PLC0415

    pool = Pool(sim, redis_client, WARM_POOL_RECONCILE_INTERVAL_MS="1000")
    assert round_lease_ttl_ms(pool.settings) == 3_000
    pool.size(1)
    sim.control.api_fault("vast", None, count=1, delay_s=9.0, path_contains="/instances")
    out: dict[str, Any] = {}
    first = threading.Thread(target=lambda: out.update(pool.run(read_timeout_s=20.0)))
    first.start()
    leases = LeaseManager(pool.redis, pool.keys)
    held = wait_for(lambda: leases.current("pool-reconcile:default"), 5, "the first round holds the lease",
                    interval_s=0.02)
    assert held.ttl_ms == 3_000
    skipped = 0
    while first.is_alive():
        # a wake-up (an instance just failed) while the round runs: refused, and the running round goes once
        # more before it lets go (it listed before the failure)
        assert pool.run(wake=skipped == 3) == {"skipped": "another reconciler is running"}
        skipped += 1
        time.sleep(0.5)
    first.join()
    assert skipped >= 12  # about 9 s of refusals: three TTLs and more
    assert "error" not in out and len(out["rented"]) == 1 and out["rounds"] == 2, out
    assert leases.current("pool-reconcile:default") is None  # released at the end
