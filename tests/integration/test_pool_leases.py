"""Client leases on a real redis-server: racing clients over real HTTP, fences, renew, release, expiry with a
health check before the instance is handed out again (queued by the release or the expiry itself and run by
the real worker's port validation against a real ComfyUI stand-in), the reconcile round noticing expiries
(index entry dropped, check queued, a failed check retired), and the reconciler never taking a leased
instance. The whole cycle on `vastkeep up`: tests/integration/test_stack_lease_cycles.py."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.fixtures.admin_api import KEY
from tests.fixtures.helpers import wait_for
from tests.fixtures.pool_rig import Pool, destroy_all
from tests.fixtures.state import State
from vastkeep.admin import HEADER
from vastkeep.core.clock import SYSTEM_CLOCK, FakeClock, iso
from vastkeep.core.errors import InvalidInput, LeaseBroken, LeaseBusy, NotFound
from vastkeep.core.settings import load_settings
from vastkeep.pool import PoolLeases, Reconciler
from vastkeep.ports.flow import record_validation, validate_instance
from vastkeep.ports.validator import PortValidation, PortValidator
from vastkeep.state import EventLog, InstanceRecord, Keys, LeaseManager, StateStore

H = {HEADER: KEY}


def ready(store: StateStore, n: int, *, checked_at: str = "2026-01-01T00:00:00.000Z",
          first: int = 100, comfy: list[Any] | None = None) -> list[str]:
    """``n`` ready records of the pool; with ``comfy`` (port_servers listeners) each at a real ComfyUI."""
    ids = []
    for i in range(n):
        iid = str(first + i)
        where = {} if comfy is None else {"public_ip": comfy[i].ip, "ports": {"8188/tcp": comfy[i].port}}
        store.put_instance(InstanceRecord(iid, status="ready", label=f"vastkeep:default:{i}",
                                          connection_url=f"http://127.0.0.{i + 1}:8188",
                                          port_validation={"success": True, "checked_at": checked_at},
                                          **where))
        ids.append(iid)
    return ids


class Checks:
    """The leasing flow's check port, recording what it was asked (the wiring sends the task instead)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, instance_id: str) -> None:
        self.asked.append(instance_id)


def pool_leases(redis_client: Any, clock: FakeClock,
                check: Checks | None = None) -> tuple[StateStore, EventLog, PoolLeases]:
    """The pool's leasing flow on the test database and ``clock``, with the store and events it writes."""
    state = State(redis_client, clock=clock)
    return state.store, state.events, PoolLeases(redis_client, state.keys, "default", "vastkeep", clock,
                                                 state.store, state.events, check=check)


def test_20_clients_race_for_5_instances_over_http(served, redis_client, port_servers) -> None:  # noqa: F811
    s, store = served
    ids = ready(store, 5, comfy=[port_servers.open("ok") for _ in range(5)])
    barrier = threading.Barrier(20)

    def take(i: int) -> requests.Response:
        barrier.wait()
        return requests.post(f"{s.url}/api/proxy/admin/warm-pool/leases",
                             json={"durationS": 600, "client": f"svc-{i}"}, headers=H, timeout=10)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(take, range(20)))
    won = [a.json() for a in answers if a.status_code == 201]
    lost = [a for a in answers if a.status_code != 201]
    assert len(won) == 5 and sorted(w["instanceId"] for w in won) == ids  # each leased exactly once
    assert sorted(w["fence"] for w in won) == [1, 2, 3, 4, 5]
    assert all(w["connectionUrl"] and w["leasedUntil"] and w["leaseId"].startswith("lse_") for w in won)
    assert {a.status_code for a in lost} == {409} and len(lost) == 15
    assert all(1 <= a.json()["retryAfterS"] <= 30 and a.headers["Retry-After"] for a in lost)
    for w in won:  # the record mirrors the lease (status view, polling)
        rec = store.get_instance(w["instanceId"])
        assert rec.lease_owner.startswith("svc-") and rec.leased_until
    status = requests.get(f"{s.url}/api/proxy/admin/warm-pool/status", headers=H, timeout=5).json()
    assert status["counts"]["leased"] == 5 and status["counts"]["idle"] == 0
    views = status["pool"]["leases"]
    assert sorted(v["instanceId"] for v in views) == ids
    assert all(v["client"].startswith("svc-") for v in views)
    assert "lse_" not in str(status)  # lease ids are the holders' capabilities: never shown
    # renew, release; the release queues the instance's health check (a port validation on the real worker);
    # the next grant of that instance carries a higher fence and comes only after that check passed
    lid, iid = won[0]["leaseId"], won[0]["instanceId"]
    r = requests.post(f"{s.url}/api/proxy/admin/warm-pool/leases/{lid}/renew", json={"durationS": 1200},
                      headers=H, timeout=5)
    assert r.status_code == 200 and r.json()["instanceId"] == iid and r.json()["fence"] == won[0]["fence"]
    released_at = iso(SYSTEM_CLOCK.now())
    assert requests.delete(f"{s.url}/api/proxy/admin/warm-pool/leases/{lid}", headers=H,
                           timeout=5).json()["released"] is True
    assert requests.delete(f"{s.url}/api/proxy/admin/warm-pool/leases/{lid}", headers=H,
                           timeout=5).status_code == 404
    refusals = []

    def granted() -> requests.Response | None:
        """One lease request: the grant, or None after checking the refusal says why and when to retry."""
        again = requests.post(f"{s.url}/api/proxy/admin/warm-pool/leases",
                              json={"durationS": 60, "client": "x"}, headers=H, timeout=5)
        if again.status_code == 201:
            return again
        assert again.status_code == 503 and "health-checked" in again.json()["reason"], again.text
        assert again.headers["Retry-After"] == "1"
        refusals.append(again)
        return None

    # within one keepalive interval
    again = wait_for(granted, timeout_s=30, what="a grant once the health check passed", interval_s=0.05)
    assert again.status_code == 201 and again.json()["instanceId"] == iid and again.json()["fence"] == 6
    checked = store.get_instance(iid).port_validation
    assert checked["success"] is True and checked["checked_at"] > released_at  # the real check ran


def test_lease_request_validation_and_empty_pool(served) -> None:  # noqa: F811
    s, _ = served
    url = f"{s.url}/api/proxy/admin/warm-pool/leases"
    for body in ({"durationS": 0, "client": "a"}, {"durationS": 600}, {"durationS": "600", "client": "a"},
                 {"durationS": 600, "client": "bad name"}, {"durationS": 600, "client": "a", "x": 1}):
        assert requests.post(url, json=body, headers=H, timeout=5).status_code == 422, body
    empty = requests.post(url, json={"durationS": 600, "client": "a"}, headers=H, timeout=5)
    assert empty.status_code == 503 and empty.json()["retryAfterS"] == 30
    assert requests.post(f"{url}/lse_nosuchleaseatall0000/renew", json={"durationS": 5}, headers=H,
                         timeout=5).status_code == 404
    assert requests.post(f"{url}/../x/renew", json={}, headers=H, timeout=5).status_code == 404


def test_expiry_returns_the_instance_after_a_health_check(redis_client, port_servers) -> None:
    clock, checks = FakeClock(SYSTEM_CLOCK.now()), Checks()
    store, events, leases = pool_leases(redis_client, clock, checks)
    [iid] = ready(store, 1, comfy=[port_servers.open("ok")])
    first = leases.grant(10, "svc-a")
    with pytest.raises(LeaseBusy) as busy:
        leases.grant(10, "svc-b")
    assert busy.value.data["reason"] == "all-leased" and busy.value.data["retry_after_s"] == 10
    clock.advance(11)
    with pytest.raises(NotFound):
        leases.renew(first.lease_id, 10)
    with pytest.raises(LeaseBusy) as busy:
        leases.grant(10, "svc-b")
    assert busy.value.data["reason"] == "checking" and busy.value.data["retry_after_s"] == 1
    assert checks.asked == [iid]  # the grant that met the expired lease queued its check, once
    with pytest.raises(LeaseBusy):
        leases.grant(10, "svc-b")
    assert checks.asked == [iid]
    simulated = load_settings(environ={"VASTKEEP_SIMULATED": "1"}, env_file=False)
    validator = PortValidator.from_settings(simulated, clock=clock)
    assert validate_instance(store, events, validator, iid, clock=clock)["success"] is True  # the check
    second = leases.grant(10, "svc-b")
    assert second.instance_id == iid and second.fence > first.fence
    with pytest.raises(InvalidInput):
        leases.grant(10**6, "svc")
    granted = [e.fields for e in events.read() if e.kind == "pool-lease-granted"]
    assert [g["client"] for g in granted] == ["svc-a", "svc-b"]
    assert all("lease_id" not in g and "lse_" not in str(g) for g in granted)  # the capability stays private


def test_a_claimed_instance_breaks_its_lease(redis_client) -> None:
    clock = FakeClock()
    store = State(redis_client, clock=clock).store
    leases = PoolLeases(redis_client, Keys(), "default", "vastkeep", clock, store)
    ready(store, 1)
    grant = leases.grant(600, "svc")
    assert leases.claim(grant.instance_id, "excess", force=False) is False  # never taken from a holder
    assert leases.claim(grant.instance_id, "failed", force=True) is True
    with pytest.raises(LeaseBroken):
        leases.renew(grant.lease_id, 600)


@pytest.fixture
def cloud(sim):
    yield sim
    destroy_all(sim)


def test_the_reconciler_honours_a_client_lease_even_without_its_record_mirror(cloud, redis_client) -> None:
    pool = Pool(cloud, redis_client)
    pool.size(2)
    pool.run()
    for rec in pool.store.list_instances():  # pretend the port sweep validated them
        pool.store.update_instance(rec.instance_id, {"status": "ready", "connection_url": "http://127.0.0.1:1",
                                                     "port_validation": {"success": True, "checked_at": "x"}})
    leases = PoolLeases(redis_client, Keys(), "default", "vastkeep", pool.clock, pool.store, pool.events)
    grant = leases.grant(600, "svc-keep")
    pool.store.update_instance(grant.instance_id, {"leased_until": None, "lease_owner": None})  # lost mirror
    pool.size(0)
    out = pool.run()
    assert [d[0] for d in out["destroyed"]] != [grant.instance_id] and len(out["destroyed"]) == 1
    assert [str(vi.id) for vi in pool.provider()] == [grant.instance_id]
    pool.store.update_instance(grant.instance_id, {"status": "failed", "error": "exited"})
    out = pool.run()  # it died: destroyed even though leased, and its holder is told
    assert out["destroyed"] == [[grant.instance_id, "failed"]]
    broken = [e.fields for e in pool.events.read(count=1000) if e.kind == "lease-broken"]
    assert broken == [{"instance_id": grant.instance_id, "client": "svc-keep", "reason": "failed"}]
    with pytest.raises(NotFound):
        leases.renew(grant.lease_id, 60)


def test_a_duplicate_label_keeps_the_leased_instance(cloud, redis_client) -> None:
    pool = Pool(cloud, redis_client)
    pool.size(1)
    pool.run()
    [first] = pool.store.list_instances()
    with pool.vast() as vast:
        offer = vast.search_offers({"rentable": {"eq": True}, "direct_port_count": {"gte": 1}})[0]
        dup = str(vast.rent(offer.id, image="x", label=first.label))
    pool.store.put_instance(InstanceRecord(dup, status="ready", label=first.label, connection_url="http://x:1"))
    leases = PoolLeases(redis_client, Keys(), "default", "vastkeep", pool.clock, pool.store)
    assert leases.grant(600, "svc").instance_id == dup  # the duplicate is the only ready one: leased
    out = pool.run()
    assert out["destroyed"] == [[first.instance_id, "duplicate"]]
    assert [str(vi.id) for vi in pool.provider()] == [dup]


def test_an_instance_whose_comfyui_is_lost_is_not_leased_until_it_answers_again(redis_client) -> None:
    """Layer 4 marks a ready instance whose ComfyUI stopped answering (``extra.keepalive_lost_since``); its
    provider still says running, so it stays ``ready`` until the pool replaces it after the grace. Leasing it
    meanwhile hands a client a dead URL (seen in `vastkeep up`: a crash, then 5 minutes of grants)."""
    clock = FakeClock()
    store = State(redis_client, clock=clock).store
    leases = PoolLeases(redis_client, Keys(), "default", "vastkeep", clock, store)
    lost, healthy = ready(store, 2)
    store.update_instance(lost, {"extra": {"keepalive_lost_since": clock.now()}})
    assert leases.grant(60, "svc-a").instance_id == healthy
    with pytest.raises(LeaseBusy) as busy:
        leases.grant(60, "svc-b")
    assert busy.value.data["reason"] == "all-leased"  # the lost one is not counted as ready
    store.update_instance(healthy, {"status": "failed"})
    with pytest.raises(LeaseBusy) as busy:
        leases.grant(60, "svc-b")
    assert busy.value.data["reason"] == "none-ready" and "keepalive lost" in str(busy.value)
    store.update_instance(lost, {"extra": {}})  # a ping answered again: the runner drops the mark
    assert leases.grant(60, "svc-b").instance_id == lost


def test_the_round_notices_an_expiry_and_replaces_an_instance_whose_check_failed(cloud, redis_client) -> None:
    """An expiry is an ``until`` field: the reconcile round is the process that notices it (the lease ends,
    its id leaves the index, its check is queued); a check that fails after the end retires the instance
    and the same round's plan destroys and replaces it."""
    cloud.control.set_lifecycle(created_s=0.1, loading_s=0.3, boot_s=0.1)
    cloud.control.set_rent_defaults(ssh=False, ssh_proxy=False)
    pool = Pool(cloud, redis_client)
    checks = Checks()
    leases = PoolLeases(redis_client, Keys(), "default", "vastkeep", pool.clock, pool.store, pool.events,
                        check=checks)

    def round_() -> dict[str, Any]:
        with pool.vast() as vast:
            return Reconciler(pool.settings, pool.store, pool.events, LeaseManager(redis_client, Keys(),
                              pool.clock), pool.book, vast, pool.clock, client_leases=leases).run()

    pool.size(1)
    round_()
    [rec] = pool.store.list_instances()
    iid = rec.instance_id
    validator = PortValidator.from_settings(pool.settings, clock=pool.clock)

    def check() -> dict[str, Any]:  # what the worker's vastkeep.ports.validate_instance does
        with pool.vast() as vast:
            return validate_instance(pool.store, pool.events, validator, iid, vast=vast, clock=pool.clock)

    wait_for(lambda: check()["success"], timeout_s=30, what="the rented instance ready", interval_s=0.1)
    assert pool.store.get_instance(iid).status == "ready"
    grant = leases.grant(10, "svc-gone")  # its holder goes away: never renews, never releases
    index = Keys().pool_lease_index("default")
    assert redis_client.hlen(index) == 1
    pool.clock.advance(11)
    out = round_()
    assert out["leases"] == {"expired": 1, "checks": 1, "retired": []}
    assert redis_client.hlen(index) == 0  # no residue: the expired lease's id left the index
    assert checks.asked == [iid]
    ended = [e.fields for e in pool.events.read(count=1000) if e.kind == "pool-lease-ended"]
    assert ended == [{"instance_id": iid, "client": "svc-gone", "fence": grant.fence, "reason": "expired"}]
    assert pool.store.get_instance(iid).leased_until is None  # the mirror follows
    assert round_()["leases"] == {"expired": 0, "checks": 0, "retired": []}  # queued once, not per round

    cloud.control.refuse(int(iid))  # the instance's ComfyUI port is closed: the post-lease check fails
    pool.clock.advance(0.01)
    assert check()["success"] is False
    with pytest.raises(LeaseBusy) as busy:
        leases.grant(60, "svc-next")
    assert "failed their health check" in str(busy.value)  # never handed out
    out = round_()
    assert out["leases"]["retired"] == [iid]
    assert out["destroyed"] == [[iid, "failed"]] and len(out["rented"]) == 1  # replaced in the same round
    assert [str(vi.id) for vi in pool.provider()] == out["rented"]


def test_a_request_id_replays_what_happened_never_a_refusal(redis_client) -> None:
    """One request id is one logical call: a repeat after a grant returns that grant; a refusal changed
    nothing, so a repeat with the same id (a client retrying its 503 with its Idempotency-Key) is served."""
    clock = FakeClock(SYSTEM_CLOCK.now())
    store, events, leases = pool_leases(redis_client, clock)
    with pytest.raises(LeaseBusy):
        leases.grant(60, "svc", request_id="call-1")
    [iid] = ready(store, 1)
    first = leases.grant(60, "svc", request_id="call-1")
    assert first.instance_id == iid
    assert leases.grant(60, "svc", request_id="call-1") == first  # not a second lease, nor a refusal
    released = leases.release(first.lease_id, request_id="call-2")
    assert leases.release(first.lease_id, request_id="call-2") == released  # not NotFound
    with pytest.raises(NotFound):
        leases.release(first.lease_id, request_id="call-3")  # a new call: that lease is gone
    with pytest.raises(InvalidInput):
        leases.grant(60, "svc", request_id="no spaces allowed")
    assert [e.kind for e in events.read(count=100)] == ["pool-lease-granted", "pool-lease-ended"]  # once each


def test_a_later_failing_verdict_is_not_a_failed_post_lease_check(redis_client, port_servers) -> None:
    """Once a check passed after a lease's end, the round marks that lease cleared: a verdict that fails
    later (Layer 3 run again for any reason) is Layer 4/5's business and never retires the instance."""
    clock, checks = FakeClock(SYSTEM_CLOCK.now()), Checks()
    store, events, leases = pool_leases(redis_client, clock, checks)
    [iid] = ready(store, 1, comfy=[port_servers.open("ok")])
    simulated = load_settings(environ={"VASTKEEP_SIMULATED": "1"}, env_file=False)
    validator = PortValidator.from_settings(simulated, clock=clock)
    leases.release(leases.grant(60, "svc").lease_id)
    clock.advance(0.01)
    assert checks.asked == [iid] and validate_instance(store, events, validator, iid, clock=clock)["success"]
    assert leases.settle() == {"expired": 0, "checks": 0, "retired": []}
    clock.advance(0.01)
    record_validation(store, events, iid, PortValidation(False, error="a later blip"), clock)
    assert leases.settle()["retired"] == [] and store.get_instance(iid).status == "ready"
    assert leases.grant(60, "svc").instance_id == iid  # the grant honours the cleared lease too
