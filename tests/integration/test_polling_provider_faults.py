"""Layer 5 under a slow or ambiguous provider, on real processes: a ``celery worker`` subprocess of the
product's app (the dispatcher, the refresh and the ``show`` questions each in their own pool process), a
private redis-server, the simulated cloud with its slow-API and ambiguous-answer faults. No beat and no
supervision sweep: polling must keep itself alive, so a dispatcher chain that dies shows as polls that stop.

* ``show`` about an instance destroyed outside answers after 12 s (and 60 s, beyond the client's 30 s read
  timeout): every other instance is still polled within its interval + the answer time (measured: within
  its interval), the dispatcher never loses its lease, a 12 s 404 makes the record ``gone``, 60 s of
  timeouts make nothing ``gone``.
* a dispatcher whose lease is taken from it (what a stall past the 10 s TTL does) hands over at once: a
  new dispatcher holds the lease within seconds and polling goes on, with no supervision to restart it.
* an empty 200 body on every listing and show: nothing turns ``gone``, a leased instance least of all.
* ``{"instances": null}`` on show after two well-formed listings that lacked the instances: live ones
  (one leased) stay as they are; one really destroyed is ``gone`` once a third listing lacked it.
* Layer 3 asking show about a leased record without an address gets ``{"instances": null}``: not gone.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fixtures.chaos import Chaos, report
from tests.fixtures.helpers import wait_for
from tests.fixtures.state import State
from vastkeep.core.errors import MalformedResponse
from vastkeep.core.settings import Secret
from vastkeep.ports import flow as port_flow
from vastkeep.ports.probe import ProbeConfig
from vastkeep.ports.validator import PortValidator
from vastkeep.providers.vast import VastClient
from vastkeep.state import EventLog, InstanceRecord, Keys, StateStore, as_text

pytestmark = [pytest.mark.timeout(400)]

ACTIVE_S, IDLE_S, DEFAULT_S = 1.0, 3.0, 2.0
POLL_ENV = {"WARM_POOL_POLL_ACTIVE_INTERVAL_MS": str(int(ACTIVE_S * 1000)),
            "WARM_POOL_POLL_IDLE_INTERVAL_MS": str(int(IDLE_S * 1000)),
            "WARM_POOL_POLL_INTERVAL_MS": str(int(DEFAULT_S * 1000)),
            "PORT_TCP_TIMEOUT_MS": "1000", "PORT_HTTP_TIMEOUT_MS": "2000"}
DISPATCH = "vastkeep.polling.dispatch"


def make_instances(sim: Any, n: int) -> list[str]:
    return [str(sim.control.create_instance(label="vastkeep:slow", running=True, ssh=False,
                                            ssh_proxy=False)["id"]) for _ in range(n)]


def all_status(store: StateStore, ids: list[str], status: str) -> bool:
    recs = store.get_instances(ids)
    return len(recs) == len(ids) and all(r.status == status for r in recs.values())


def last_polls(r: Any, ids: list[str]) -> dict[str, float]:
    values = r.hmget(Keys().poll_last(), ids)
    return {i: float(v) for i, v in zip(ids, values, strict=True) if v is not None}


def lease_owner(r: Any) -> str | None:
    owner = r.hget(Keys().lease("poll-dispatcher"), "owner")
    return owner.decode() if isinstance(owner, bytes) else owner


class PollWatch:
    """Samples each instance's last-poll time; the longest wait between two polls, the open one included."""

    def __init__(self, r: Any, ids: list[str]) -> None:
        self.r, self.ids = r, ids
        self.seen: dict[str, list[float]] = {i: [] for i in ids}

    def sample(self) -> None:
        for iid, t in last_polls(self.r, self.ids).items():
            if not self.seen[iid] or self.seen[iid][-1] != t:
                self.seen[iid].append(t)

    def watch(self, seconds: float, every_s: float = 0.2) -> None:
        end = time.time() + seconds
        while time.time() < end:
            self.sample()
            time.sleep(every_s)
        self.sample()

    def longest_gap_s(self, since: float) -> float:
        """The longest time any instance went unpolled from ``since`` (its poll before ``since`` included)."""
        now, worst = time.time(), 0.0
        for times in self.seen.values():
            before = [t for t in times if t <= since]
            after = [t for t in times if t > since]
            marks = ([before[-1]] if before else [since]) + after + [now]
            worst = max(worst, max(b - a for a, b in zip(marks, marks[1:], strict=False)))
        return worst


def start_stack(chaos: Chaos, sim: Any, live: int, doomed: int = 0) -> tuple[Any, Any, list[str], list[str]]:
    """Redis, one worker (the dispatcher, the refresh and a show fit side by side), the first dispatcher."""
    rs = chaos.redis()
    r = rs.client()
    env = chaos.env(rs.url, **sim.env(), **POLL_ENV)
    live_ids, doomed_ids = make_instances(sim, live), make_instances(sim, doomed)
    worker = chaos.worker("worker", "slowprov", env, concurrency=4)
    worker.wait_ready(60)
    chaos.client(rs.url, env).send_task(DISPATCH)  # what the supervision sweep does once; never again here
    wait_for(lambda: all_status(State(r).store, live_ids + doomed_ids, "ready"), 150,
             "every instance discovered and ready")
    return worker, r, live_ids, doomed_ids


@pytest.mark.parametrize("answer_s", [pytest.param(12.0, id="12s"),
                                      pytest.param(60.0, id="60s", marks=pytest.mark.slow)])
def test_a_slow_show_never_stops_polling(chaos, sim, answer_s: float) -> None:
    worker, r, live, doomed = start_stack(chaos, sim, live=4, doomed=2)
    store = State(r).store
    with VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(2.0, 5.0)) as vast:
        for iid in doomed:
            assert vast.destroy(int(iid)) is True  # destroyed outside vastkeep: unlisted from now on
    for iid in doomed:  # every call about them (the show that tells "gone" from listing lag) is slow
        sim.control.api_fault("vast", None, None, answer_s, path_contains=f"/instances/{iid}/")
    t_fault = time.time()
    watch = PollWatch(r, live)
    watch.sample()
    # two listings + the question asked + the slow answer + a poll to apply it, and the bound's worth after
    watch.watch(answer_s + IDLE_S + 20.0)
    shows = [e for e in sim.control.requests_seen(service="vast")
             if e["method"] == "GET" and any(e["path"].endswith(f"/instances/{i}/") for i in doomed)]
    gap = watch.longest_gap_s(t_fault)
    worker.assert_alive()
    report(f"slow show {answer_s:.0f}s", longest_unpolled=gap, bound=IDLE_S + answer_s, shows=len(shows))
    assert shows, "the dispatcher never asked show about the destroyed instances"
    assert gap <= IDLE_S + answer_s, f"an instance went {gap:.1f} s unpolled (bound {IDLE_S + answer_s} s)"
    assert "'lost': True" not in worker.log(), "a dispatcher run lost its lease while the provider was slow"
    assert all_status(store, live, "ready")
    if answer_s < 30.0:  # answered (404) within the client's read timeout: absence confirmed
        wait_for(lambda: all_status(store, doomed, "gone"), 20, "the destroyed instances marked gone")
    else:  # only timeouts so far: nothing said, nothing decided
        assert not any(rec.status == "gone" for rec in store.get_instances(doomed).values())


def test_a_dispatcher_that_loses_its_lease_hands_over_at_once(chaos, sim) -> None:
    worker, r, live, _ = start_stack(chaos, sim, live=4)
    old = wait_for(lambda: lease_owner(r), 20, "a dispatcher holds the lease")
    time.sleep(2.0)
    r.delete(Keys().lease("poll-dispatcher"))  # what a stall past the lease's TTL leaves behind
    t_lost = time.time()
    new = wait_for(lambda: (lease_owner(r) or old) != old and lease_owner(r), 15,
                   "a new dispatcher holds the lease")
    took = time.time() - t_lost
    watch = PollWatch(r, live)
    watch.watch(2 * IDLE_S + 2.0)
    gap = watch.longest_gap_s(t_lost)
    worker.assert_alive()
    report("lease lost", new_holder_after=took, longest_unpolled=gap)
    assert new != old
    assert took <= 5.0, f"the continuation took the lease {took:.1f} s after the loss"
    assert gap <= IDLE_S + 5.0


def lease_record(store: StateStore, iid: str) -> None:
    """What a client lease writes on the record (the fields polling and the pool read)."""
    store.update_instance(iid, {"leased_until": time.time() + 600, "lease_owner": "client-a"})


def gone_events(store: StateStore) -> list[dict[str, Any]]:
    return [e.fields for e in EventLog(store.redis, store.keys).read(count=10_000)
            if e.kind == "instance-status" and e.fields.get("new") == "gone"]


def test_an_empty_body_never_makes_an_instance_gone(chaos, sim) -> None:
    worker, r, live, _ = start_stack(chaos, sim, live=3)
    store = State(r).store
    lease_record(store, live[0])
    listings_before = int(r.hget(Keys().poll_stats(), "vast_list_calls") or 0)
    sim.control.ambiguous_answer("", path_contains="/instances", method="GET")  # listing and show alike
    t0 = time.time()
    time.sleep(12.0)  # ~10 listings at the 1 s active cadence: old code needed 2 + one show
    listings = int(r.hget(Keys().poll_stats(), "vast_list_calls") or 0) - listings_before
    meta = {as_text(k): as_text(v) for k, v in r.hgetall(Keys().provider_snapshot_meta()).items()}
    empties = [e for e in sim.control.requests_seen(service="vast") if e["ts"] >= t0 and e["status"] == 200]
    worker.assert_alive()
    report("empty 200 bodies", listings=listings, empty_answers=len(empties))
    assert listings >= 3 and empties, "the listing was asked (and answered empty) while the fault was on"
    # a failing listing is retried no faster than the 1 s snapshot age, with a growing jittered backoff
    assert listings <= 12.0 / ACTIVE_S + 1, f"{listings} listings in 12 s: the provider is hammered"
    assert all_status(store, live, "ready"), {i: rec.status for i, rec in store.get_instances(live).items()}
    assert gone_events(store) == []
    assert "MalformedResponse" in str(meta.get("error")), meta  # the empty listing was an error, not []
    sim.control.clear_api_faults()
    time.sleep(3.0)
    assert all_status(store, live, "ready") and gone_events(store) == []


def test_instances_null_on_show_is_no_verdict_and_absence_is_confirmed_by_listings(chaos, sim) -> None:
    worker, r, live, doomed = start_stack(chaos, sim, live=2, doomed=1)
    store = State(r).store
    lease_record(store, live[0])
    with VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(2.0, 5.0)) as vast:
        assert vast.destroy(int(doomed[0])) is True  # really gone: the provider answers null for it too
    t0 = time.time()
    sim.control.ambiguous_answer('{"instances": null}', path_contains="/instances/", method="GET")
    sim.control.ambiguous_answer('{"instances": []}', path_equals="/api/v0/instances", count=2)
    wait_for(lambda: all_status(store, doomed, "gone"), 30, "the destroyed instance confirmed gone")
    time.sleep(3.0)
    shows = {e["path"].rstrip("/").rsplit("/", 1)[-1] for e in sim.control.requests_seen(service="vast")
             if e["ts"] >= t0 and e["method"] == "GET" and "/instances/" in e["path"] and e["status"] == 200}
    worker.assert_alive()
    report("instances null on show", asked=sorted(shows))
    assert set(live) <= shows, "show was asked about the live instances (and answered null)"
    assert all_status(store, live, "ready"), {i: rec.status for i, rec in store.get_instances(live).items()}
    assert [e["instance_id"] for e in gone_events(store)] == doomed


def test_layer3_show_answering_null_leaves_a_leased_record_alone(sim, store, events) -> None:
    iid = str(sim.control.create_instance(label="vastkeep:slow", running=True, ssh=False,
                                          ssh_proxy=False)["id"])
    store.put_instance(InstanceRecord(iid, status="ready", label="vastkeep:slow",
                                      leased_until=time.time() + 600, lease_owner="client-a"))
    sim.control.ambiguous_answer('{"instances": null}', path_contains=f"/instances/{iid}/", method="GET")
    validator = PortValidator(ProbeConfig(tcp_timeout_s=0.3, http_timeout_s=0.5, allow_loopback=True))
    vast = VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(2.0, 5.0))
    with vast, pytest.raises(MalformedResponse):  # transient: the task retries; never read as "not found"
        port_flow.validate_instance(store, events, validator, iid, vast=vast)
    assert store.get_instance(iid).status == "ready"
