"""The plan for an instance whose ComfyUI is lost (Layer 4): replaced at once, kept within its grace, trimmed
once replaced; a flapping ComfyUI costs one replacement, not one per loss."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.pool_plan import NOW, P, R
from vastkeep.core.clock import FakeClock
from vastkeep.pool.plan import PlanParams, is_sick, plan_pool, was_lost

CAPPED = PlanParams(prefix="vk", pool="p", provision_timeout_s=600, unhealthy_grace_s=120, max_spend_dph=1.5,
                    max_offer_dph=0.75)
ROOMY = PlanParams(prefix="vk", pool="p", provision_timeout_s=600, unhealthy_grace_s=120, max_spend_dph=10.0,
                   max_offer_dph=1.0)
LOST = "keepalive: connection lost"
REPLACED = "keepalive: connection lost, replaced"


def sick(iid: str, slot: int = 0, lost_s: float = 5, **kw: Any) -> R:
    """ComfyUI lost ``lost_s`` ago: what the keepalive writes (unhealthy + the loss times)."""
    return R(iid, "unhealthy", slot, extra={"keepalive_lost_since": NOW - lost_s,
                                            "keepalive_last_loss_at": NOW - lost_s}, **kw)


def recovered(iid: str, slot: int = 0, **kw: Any) -> R:
    """Lost once, answering again: ready, the last loss kept."""
    return R(iid, "ready", slot, extra={"keepalive_last_loss_at": NOW - 30}, **kw)


CASES = [
    # (name, records, desired, safe, params, rent, destroy)
    ("lost: replaced at once, the sick one kept within its grace", [sick("1")], 1, False, P, (1,), ()),
    ("lost, one of two: one rent", [sick("1"), R("2", slot=1)], 2, False, P, (2,), ()),
    ("lost, replacement loading: nothing more", [sick("1"), R("2", "loading", 1)], 1, False, P, (), ()),
    ("lost, replacement ready: the sick one is surplus", [sick("1"), R("2", slot=1)], 1, False, P, (),
     (("1", REPLACED),)),
    ("lost past the grace: destroyed, no second rent", [sick("1", lost_s=121), R("2", "loading", 1)], 1,
     False, P, (), (("1", LOST),)),
    ("lost and leased: kept after the replacement is ready",
     [sick("1", leased_until=NOW + 60), R("2", slot=1)], 1, False, P, (), ()),
    ("lost and leased past the grace: destroyed (the holder is told)",
     [sick("1", lost_s=121, leased_until=NOW + 60), R("2", slot=1)], 1, False, P, (), (("1", LOST),)),
    ("recovered while its replacement loads: both kept", [recovered("1"), R("2", "loading", 1)], 1, False, P,
     (), ()),
    ("recovered, replacement ready: the recovered one is trimmed", [recovered("1"), R("2", slot=1)], 1, False,
     P, (), (("1", "excess"),)),
    ("recovered and leased, replacement ready: nothing trimmed in its place",
     [recovered("1", leased_until=NOW + 60), R("2", slot=1)], 1, False, P, (), ()),
    ("recovered, no replacement (the pool is exactly full): kept", [recovered("1")], 1, False, P, (), ()),
    ("scale down: the recovered one goes first", [R("1", slot=0, created_at=NOW - 5),
                                                  recovered("2", slot=1, created_at=NOW - 500)],
     1, False, P, (), (("2", "excess"),)),
    ("safe mode: no replacement, the sick one kept", [sick("1")], 1, True, P, (), ()),
    ("spend cap with room: rented beside the sick one", [sick("1"), R("2", slot=1)], 2, False, ROOMY, (2,),
     ()),
    ("spend cap without room: the sick one goes first, the rent still comes", [sick("1"), R("2", slot=1)], 2,
     False, CAPPED, (2,), (("1", REPLACED),)),
    ("spend cap: a leased sick one is never cut short", [sick("1", leased_until=NOW + 60), R("2", slot=1)], 2,
     False, CAPPED, (2,), ()),
    ("a lost one's grace counts from the loss, not its last write",
     [sick("1", lost_s=5, updated_at=NOW - 500), R("2", "loading", 1)], 1, False, P, (), ()),
    ("a provider-unhealthy instance (no loss) still counts", [R("1", "unhealthy", 0)], 1, False, P, (), ()),
]


@pytest.mark.parametrize(("name", "records", "desired", "safe", "params", "rent", "destroy"), CASES,
                         ids=[c[0] for c in CASES])
def test_lost_table(name, records, desired, safe, params, rent, destroy):
    plan = plan_pool(records, desired, safe, [], NOW, params)
    assert (plan.rent, plan.destroy) == (rent, destroy)


def test_sick_and_recovered_are_read_from_the_record():
    assert is_sick(sick("1")) and not was_lost(sick("1"))
    assert was_lost(recovered("1")) and not is_sick(recovered("1"))
    assert not is_sick(R("1", "loading", extra={"keepalive_lost_since": NOW})), "provisioning: not sick"
    assert not is_sick(R("1", extra={"keepalive_lost_since": "garbage"}))


def test_wait_reasons_name_the_sick_and_the_kept():
    text = " ".join(plan_pool([sick("1"), R("2", "loading", 1)], 1, False, [], NOW, P).wait_reasons)
    assert "ComfyUI lost on 1" in text
    text = " ".join(plan_pool([recovered("1"), R("2", "loading", 1)], 1, False, [], NOW, P).wait_reasons)
    assert "kept until its replacement is ready" in text


class World:
    """Carries plans out the way a reconcile round does: a rent is an instance that turns ready after
    ``provision_s``, a destroy removes it. Losses and recoveries are written as Layer 4 writes them."""

    def __init__(self, clock: FakeClock, provision_s: float) -> None:
        self.clock, self.provision_s = clock, provision_s
        self.records: dict[str, R] = {}
        self.rents = 0
        self.destroyed: list[tuple[str, str]] = []

    def add(self, iid: str, slot: int, status: str = "ready") -> None:
        self.records[iid] = R(iid, status, slot, created_at=self.clock.now())

    def lose(self, iid: str) -> None:
        rec = self.records[iid]
        rec.status = "unhealthy"
        rec.extra.update(keepalive_lost_since=self.clock.now(), keepalive_last_loss_at=self.clock.now())

    def restore(self, iid: str) -> None:
        rec = self.records[iid]
        rec.status = "ready"
        rec.extra.pop("keepalive_lost_since", None)

    def round(self, desired: int) -> None:
        now = self.clock.now()
        for rec in self.records.values():
            if rec.status == "loading" and now - (rec.created_at or now) >= self.provision_s:
                rec.status = "ready"
        plan = plan_pool(list(self.records.values()), desired, False, [], now, P)
        for iid, reason in plan.destroy:
            del self.records[iid]
            self.destroyed.append((iid, reason))
        for slot in plan.rent:
            self.rents += 1
            self.add(f"r{self.rents}", slot, "loading")

    def usable(self) -> int:
        return sum(1 for r in self.records.values() if r.status == "ready" and not is_sick(r))


@pytest.mark.parametrize(("name", "flap_every_s"), [("fast flapping", 1.0), ("slow flapping", 4.0)])
def test_a_flapping_comfyui_costs_one_replacement(name, flap_every_s):
    """lost, back, lost, back ... every ``flap_every_s`` while the replacement provisions (10 s), a round
    after each change and every second: one rent, the flapping instance trimmed once the replacement is
    ready, the pool whole again."""
    clock = FakeClock(NOW)
    world = World(clock, provision_s=10.0)
    world.add("a", 0)
    lost = False
    for step in range(40):
        if step * 1.0 % flap_every_s == 0 and "a" in world.records:
            lost = not lost
            (world.lose if lost else world.restore)("a")
        world.round(desired=1)
        clock.advance(1.0)
    assert world.rents == 1
    assert "a" not in world.records and world.usable() == 1
    assert [reason for iid, reason in world.destroyed if iid == "a"] in (["excess"], [REPLACED])


def test_lost_then_recovered_for_good_keeps_the_pool_at_size():
    """A single loss: replacement rented at once; the sick one recovers before the replacement is ready and
    is trimmed when it is; the pool never holds fewer usable instances than it did."""
    clock = FakeClock(NOW)
    world = World(clock, provision_s=10.0)
    world.add("a", 0)
    world.add("b", 1)
    world.lose("a")
    world.round(desired=2)
    assert world.rents == 1 and "a" in world.records  # replaced at once, kept within its grace
    clock.advance(3)
    world.restore("a")
    for _ in range(15):
        world.round(desired=2)
        assert world.usable() >= 2 - 0  # a recovered, b healthy, r1 arriving: never below the desired size
        clock.advance(1)
    assert world.rents == 1 and sorted(world.records) == ["b", "r1"] and world.usable() == 2


def test_a_lost_instance_that_never_recovers_goes_when_replaced():
    clock = FakeClock(NOW)
    world = World(clock, provision_s=10.0)
    world.add("a", 0)
    world.lose("a")
    seen_usable = []
    for _ in range(15):
        world.round(desired=1)
        seen_usable.append(world.usable())
        clock.advance(1)
    assert world.rents == 1 and world.destroyed == [("a", REPLACED)] and seen_usable[-1] == 1
