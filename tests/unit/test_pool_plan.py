"""The warm pool's pure plan: a table of pools and what one reconcile round must do with each."""

from __future__ import annotations

import pytest

from tests.fixtures.pool_plan import NOW, P, R
from vastkeep.pool.plan import (
    OfferParams,
    PendingRent,
    PlanParams,
    make_label,
    offer_query,
    pick_offer,
    plan_pool,
    rank_offers,
    slot_of,
    spend_allows,
    spend_rate,
)
from vastkeep.providers import Offer
from vastkeep.providers.vast_map import to_offer
from vastkeep.providers.vast_models import VastOffer
from vastkeep.sim.query import filter_offers
from vastkeep.sim.state import make_offers
from vastkeep.state import InstanceRecord


def pend(slot: int, state: str = "sending") -> PendingRent:
    return PendingRent(slot=slot, label=make_label("vk", "p", slot), started_at=NOW - 5, state=state)


CASES = [
    # (name, records, desired, safe, pending, rent, destroy)
    ("empty pool rents the desired size", [], 3, False, [], (0, 1, 2), ()),
    ("full pool does nothing", [R("1", slot=0), R("2", slot=1)], 2, False, [], (), ()),
    ("starting and loading count", [R("1", "starting", 0), R("2", "loading", 1)], 2, False, [], (), ()),
    ("lowest free slots are reused", [R("1", slot=1), R("2", slot=3)], 4, False, [], (0, 2), ()),
    ("pending rents hold their slot", [R("1", slot=0)], 3, False, [pend(1)], (2,), ()),
    ("failed destroyed and replaced on a new slot", [R("1", "failed", 0), R("2", slot=1)], 2, False, [],
     (2,), (("1", "failed"),)),
    ("gone destroyed and replaced", [R("1", "gone", 0)], 1, False, [], (1,), (("1", "gone"),)),
    ("stuck provisioning replaced", [R("1", "loading", 0, created_at=NOW - 601)], 1, False, [], (1,),
     (("1", "provision-timeout"),)),
    ("provisioning within the timeout waits", [R("1", "loading", 0, created_at=NOW - 599)], 1, False, [],
     (), ()),
    # the provision timeout runs from when the record last entered provisioning (status_since), not from
    # created_at: an old instance bounced back to loading (ComfyUI restart, reboot) is not replaced at once
    ("old instance back in loading is given the timeout",
     [R("1", "loading", 0, created_at=NOW - 86_400, status_since=NOW - 30)], 1, False, [], (), ()),
    ("old instance stuck in loading since its bounce replaced",
     [R("1", "loading", 0, created_at=NOW - 86_400, status_since=NOW - 601)], 1, False, [], (1,),
     (("1", "provision-timeout"),)),
    ("old instance back in starting (host reboot) is given the timeout",
     [R("1", "starting", 0, created_at=NOW - 3_600, status_since=NOW - 599)], 1, False, [], (), ()),
    ("a record without status_since falls back to created_at",
     [R("1", "loading", 0, created_at=NOW - 601, status_since=None)], 1, False, [], (1,),
     (("1", "provision-timeout"),)),
    ("status_since does not shield a dead instance",
     [R("1", "failed", 0, created_at=NOW - 86_400, status_since=NOW - 1)], 1, False, [], (1,),
     (("1", "failed"),)),
    ("unhealthy past the grace replaced", [R("1", "unhealthy", 0, updated_at=NOW - 121)], 1, False, [], (1,),
     (("1", "unhealthy"),)),
    ("unhealthy within the grace counts", [R("1", "unhealthy", 0, updated_at=NOW - 30)], 1, False, [], (),
     ()),
    ("unhealthy_since wins over updated_at",
     [R("1", "unhealthy", 0, updated_at=NOW - 1, extra={"unhealthy_since": NOW - 500})], 1, False, [], (1,),
     (("1", "unhealthy"),)),
    ("keepalive lost past the grace replaced (Layer 4)",
     [R("1", "ready", 0, extra={"keepalive_lost_since": NOW - 121})], 1, False, [], (1,),
     (("1", "keepalive: connection lost"),)),
    ("keepalive lost within the grace: replaced at once, kept to recover",
     [R("1", "ready", 0, extra={"keepalive_lost_since": NOW - 30})], 1, False, [], (1,), ()),
    ("an interrupted destroy is retried", [R("1", "destroying", 0)], 0, False, [], (),
     (("1", "destroy-retry"),)),
    ("excess idle destroyed, not-ready and newest first",
     [R("1", slot=0, created_at=NOW - 9), R("2", slot=1, created_at=NOW - 7),
      R("3", "loading", 2, created_at=NOW - 8), R("4", slot=3, created_at=NOW - 6)], 2, False, [], (),
     (("3", "excess"), ("4", "excess"))),
    ("a leased instance is never destroyed as excess",
     [R("1", slot=0, leased_until=NOW + 60), R("2", slot=1, leased_until=NOW + 60)], 0, False, [], (), ()),
    ("an expired lease no longer protects", [R("1", slot=0, leased_until=NOW - 1)], 0, False, [], (),
     (("1", "excess"),)),
    ("a dead leased instance is still replaced", [R("1", "failed", 0, leased_until=NOW + 60)], 1, False, [],
     (1,), (("1", "failed"),)),
    ("safe mode rents nothing", [], 3, True, [], (), ()),
    ("safe mode still destroys the dead and the excess",
     [R("1", "failed", 0), R("2", slot=1), R("3", slot=2, created_at=NOW - 1)], 1, True, [], (),
     (("1", "failed"), ("3", "excess"))),
    ("other pools, unlabelled and destroyed records are ignored",
     [R("1", slot=None, label="vk:other:0"), R("2", slot=None, label=None), R("3", "failed", None,
                                                                             label="x:p:0"),
      R("4", "destroyed", 0)], 1, False, [], (0,), ()),
    ("scale to zero destroys all idle", [R("1", slot=0), R("2", "starting", 1)], 0, False, [], (),
     (("2", "excess"), ("1", "excess"))),
    ("pending rents are not destroyed when over size", [R("1", slot=0)], 1, False, [pend(1)], (),
     ()),
    ("negative desired is zero", [R("1", slot=0)], -3, False, [], (), (("1", "excess"),)),
]


@pytest.mark.parametrize(("name", "records", "desired", "safe", "pending", "rent", "destroy"), CASES,
                         ids=[c[0] for c in CASES])
def test_plan_table(name, records, desired, safe, pending, rent, destroy):
    plan = plan_pool(records, desired, safe, pending, NOW, P)
    assert plan.rent == rent
    assert plan.destroy == destroy


def test_wait_reasons_say_why():
    plan = plan_pool([R("1", slot=0, leased_until=NOW + 5)], 0, False, [pend(3, "unknown")], NOW, P)
    text = " ".join(plan.wait_reasons)
    assert "1 leased instance(s)" in text and "unknown outcome" in text
    assert "safe mode" in " ".join(plan_pool([], 2, True, [], NOW, P).wait_reasons)
    assert plan_pool([R("1", slot=0)], 1, False, [], NOW, P).wait_reasons == ()


def test_plan_reads_real_store_records():
    recs = [InstanceRecord("11", status="ready", label="vk:p:0", created_at=NOW - 5),
            InstanceRecord("12", status="failed", label="vk:p:1", created_at=NOW - 5)]
    plan = plan_pool(recs, 2, False, [], NOW, P)
    assert plan.rent == (2,) and plan.destroy == (("12", "failed"),) and plan.slots == {"11": 0, "12": 1}


@pytest.mark.parametrize(("label", "slot"), [
    ("vk:p:0", 0), ("vk:p:17", 17), ("vk:p:", None), ("vk:p:x", None), ("vk:p:-1", None), ("vk:q:1", None),
    ("vkx:p:1", None), (None, None), ("vk:p:１", None), ("vk:p:1234567", None),
])
def test_slot_of(label, slot):
    assert slot_of(label, "vk", "p") == slot


def test_pending_roundtrip():
    p = PendingRent(slot=2, label="vk:p:2", started_at=1.5, offer_id=7, dph=0.3, state="unknown")
    assert PendingRent.from_dict(p.to_dict()) == p


# ── offers ───────────────────────────────────────────────────────────────────
def test_offer_query_shape():
    q = offer_query(OfferParams(gpu_name="RTX 4090", max_dph=0.6, min_reliability=0.97, disk_gb=80))
    assert q["direct_port_count"] == {"gte": 1} and q["rentable"] == {"eq": True}
    assert q["verified"] == {"eq": True}
    assert q["gpu_name"] == {"eq": "RTX 4090"} and q["dph_total"] == {"lte": 0.6}
    assert q["reliability2"] == {"gte": 0.97} and q["disk_space"] == {"gte": 80}
    assert q["order"] == [["dph_total", "asc"]] and q["num_gpus"] == {"eq": 1}
    assert "gpu_name" not in offer_query(OfferParams(gpu_name=None))


def test_offer_params_any_gpu():
    class S:
        warm_pool_gpu_name = " Any "
        warm_pool_num_gpus, warm_pool_min_gpu_ram_gb, warm_pool_disk_gb = 1, 16, 60
        warm_pool_max_dph, warm_pool_min_reliability = 1.0, 0.9
    assert OfferParams.from_settings(S()).gpu_name is None


def _offer(oid: int, dph: float | None, rel: float = 0.99, ports: int = 10, gpu: str = "RTX 4090",
           machine: int | None = None) -> Offer:
    return to_offer(VastOffer(id=oid, dph_total=dph, reliability=rel, direct_port_count=ports, gpu_name=gpu,
                              machine_id=machine if machine is not None else oid))


def test_pick_offer_cheapest_first_and_rechecks_filters():
    params = OfferParams(gpu_name="RTX 4090", max_dph=1.0, min_reliability=0.98)
    offers = [_offer(1, 0.9), _offer(2, 0.4, rel=0.99), _offer(3, 0.4, rel=0.995), _offer(4, 0.1, rel=0.5),
              _offer(5, 0.05, ports=0), _offer(6, None), _offer(7, 0.01, gpu="RTX 3090"), _offer(8, 1.5)]
    assert [o.id for o in rank_offers(offers, params)] == [3, 2, 1]
    assert pick_offer(offers, params).id == 3
    assert pick_offer(offers, params, exclude_machines={3}).id == 2
    assert pick_offer([], params) is None


def test_default_query_matches_the_simulators_catalogue():
    """The simulated cloud has offers for the default search (the demo rents at defaults)."""
    params = OfferParams()
    found = [to_offer(VastOffer.from_api(o)) for o in filter_offers(make_offers(), offer_query(params))]
    assert found and [o.id for o in rank_offers(found, params)] == [o.id for o in found]


def test_spend_rate_and_cap():
    recs = [R("1", slot=0, price_per_hour=0.5), R("2", "failed", 1, price_per_hour=0.25),
            R("3", "destroyed", 2), R("4", slot=None, label="someone-else", price_per_hour=9.0)]
    rate = spend_rate(recs, [PendingRent(3, "vk:p:3", 0.0, dph=0.25)], "vk")
    assert rate == 1.0
    assert spend_allows(rate, 1.0, 2.0) and not spend_allows(rate, 1.01, 2.0)


def test_store_stamps_status_since_on_phase_changes_only(redis_client):
    """The store (real Redis) stamps ``status_since`` when a record enters a status; starting → loading is
    one provisioning phase (one clock), ready → loading starts it again (what the plan's timeout reads)."""
    from tests.fixtures.state import State  # noqa: PLC0415
    from vastkeep.core.clock import FakeClock  # noqa: PLC0415

    clock = FakeClock(1_000.0)
    store = State(redis_client, clock=clock).store
    store.create_instance(InstanceRecord("7", status="starting", label="vk:p:0"))
    assert store.get_instance("7").status_since == 1_000.0
    clock.advance(50)
    assert store.update_instance("7", {"status": "loading"}).status_since == 1_000.0  # same phase
    clock.advance(50)
    assert store.update_instance("7", {"status": "ready"}).status_since == 1_100.0
    clock.advance(5_000)
    assert store.update_instance("7", {"error": None}).status_since == 1_100.0  # no status change
    bounced = store.update_instance("7", {"status": "loading"})
    assert bounced.status_since == 6_100.0 and bounced.created_at == 1_000.0
    plan = plan_pool([bounced], 1, False, [], 6_200.0, PlanParams(prefix="vk", pool="p",
                                                                    provision_timeout_s=600))
    assert plan.destroy == ()
