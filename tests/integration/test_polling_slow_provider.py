"""Layer 5 under a slow provider, on real processes: a ``celery worker`` subprocess of the product's app (the
dispatcher, the refresh and the ``show`` questions each in their own pool process), a private redis-server,
the simulated cloud with its slow-API fault. No beat and no supervision sweep: polling must keep itself
alive, so a dispatcher chain that dies shows as polls that stop.

* ``show`` about an instance destroyed outside answers after 12 s (and 60 s, beyond the client's 30 s read
  timeout): every other instance is still polled within its interval + the answer time (measured: within
  its interval), the dispatcher never loses its lease, a 12 s 404 makes the record ``gone``, 60 s of
  timeouts make nothing ``gone``.
* a dispatcher whose lease is taken from it (what a stall past the 10 s TTL does) hands over at once: a
  new dispatcher holds the lease within seconds and polling goes on, with no supervision to restart it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos_support import Chaos, report, wait_for
from vastkeep.core.settings import Secret
from vastkeep.providers.vast import VastClient
from vastkeep.state import Keys, StateStore

pytestmark = [pytest.mark.timeout(400)]

ACTIVE_S, IDLE_S, DEFAULT_S = 1.0, 3.0, 2.0
POLL_ENV = {"WARM_POOL_POLL_ACTIVE_INTERVAL_MS": str(int(ACTIVE_S * 1000)),
            "WARM_POOL_POLL_IDLE_INTERVAL_MS": str(int(IDLE_S * 1000)),
            "WARM_POOL_POLL_INTERVAL_MS": str(int(DEFAULT_S * 1000)),
            "PORT_TCP_TIMEOUT_MS": "1000", "PORT_HTTP_TIMEOUT_MS": "2000"}
DISPATCH = "vastkeep.polling.dispatch"


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    c = Chaos(tmp_path)
    yield c
    c.close()


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
        """The longest time any instance went unpolled from ``since`` (polls before it bound the first gap)."""
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
    wait_for(lambda: all_status(StateStore(r, Keys()), live_ids + doomed_ids, "ready"), 150,
             "every instance discovered and ready")
    return worker, r, live_ids, doomed_ids


@pytest.mark.parametrize("answer_s", [pytest.param(12.0, id="12s"),
                                      pytest.param(60.0, id="60s", marks=pytest.mark.slow)])
def test_a_slow_show_never_stops_polling(chaos, sim, answer_s: float) -> None:
    worker, r, live, doomed = start_stack(chaos, sim, live=4, doomed=2)
    store = StateStore(r, Keys())
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
