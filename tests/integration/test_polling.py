"""Layer 5 on real parts: real redis-server, the simulated cloud, the real dispatcher loop (in a thread).

Short intervals come from a PollPolicy (1 s active); the snapshot refreshes every 0.2 s while anything is
active. Covers: discovery of labelled instances only (and after FLUSHDB), starting → loading → ready with
Layer 3 handed off, offline / exited / outbid / OCI error / destroyed-outside each turning failed/gone
within one active interval + the snapshot age with one event each and never standing for the pool, the
stale-address case, a lease shortening the next poll at once, claims (one poll in flight), adopt/forget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.event_kinds import documented_fields
from tests.fixtures.helpers import wait_for
from vastkeep.core.clock import SYSTEM_CLOCK
from vastkeep.core.settings import Secret
from vastkeep.monitoring.pool_status import primary_instance
from vastkeep.polling import (
    CONFIRM_TASK,
    Poller,
    PollPolicy,
    PollSchedule,
    ProviderSnapshot,
    adopt,
    confirm_absence,
    forget,
)
from vastkeep.ports import flow as port_flow
from vastkeep.ports.probe import ProbeConfig
from vastkeep.ports.validator import PortValidator
from vastkeep.providers.vast import VastClient
from vastkeep.state import InstanceRecord, LeaseManager

ACTIVE_S = 1.0
POLICY = PollPolicy(poll_active_interval_s=ACTIVE_S, poll_idle_interval_s=4.0, poll_interval_s=2.0)
SNAP_ACTIVE_S, SNAP_IDLE_S = 0.2, 0.5
LABEL = "vastkeep:test"


class Harness:
    """A Poller on the test Redis + simulator; ``start()`` runs its dispatcher loop in a thread."""

    def __init__(self, sim: Any, store: Any, events: Any) -> None:
        self.sim, self.store, self.events = sim, store, events
        self.vast = VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(2.0, 5.0))
        self.sent: list[tuple[float, str]] = []
        self.wakes: list[tuple[float, float]] = []
        self.asked: list[str] = []
        probe = ProbeConfig(tcp_timeout_s=0.5, http_timeout_s=1.0, allow_loopback=True)
        self.validator = PortValidator(probe, concurrency=20)
        self.auto_validate = True
        self.snapshot = ProviderSnapshot(store.redis, store.keys, label_prefix="vastkeep",
                                         active_max_age_s=SNAP_ACTIVE_S, idle_max_age_s=SNAP_IDLE_S)
        self.poller = Poller(store, POLICY, events=events, send=self._send, vast=self.vast,
                             snapshot=self.snapshot)
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.helpers: list[threading.Thread] = []

    def _send(self, name: str, kwargs: dict[str, Any]) -> None:
        if name == "vastkeep.polling.refresh":  # what the worker does with the refresh task
            self._helper(self.poller.refresh, inline=True)
            return
        if name == CONFIRM_TASK:  # what the worker does with vastkeep.polling.confirm_absence
            self.asked.append(kwargs["instance_id"])
            self._helper(confirm_absence, self.store.redis, self.store.keys, self.vast, self.poller.schedule,
                         kwargs["instance_id"])
            return
        if name == "vastkeep.pool.reconcile":  # the warm pool woken for a dead instance
            self.wakes.append((time.time(), kwargs["wake_at"]))
            return
        self.sent.append((time.monotonic(), kwargs["instance_id"]))
        if self.auto_validate:  # what the worker would do with vastkeep.ports.validate_instance
            self._helper(port_flow.validate_instance, self.store, self.events, self.validator,
                         kwargs["instance_id"])

    def _helper(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Run what a worker would run, in a thread joined at teardown (before Redis is closed)."""
        if self.stopping.is_set():
            return
        t = threading.Thread(target=fn, args=args, kwargs=kwargs, daemon=True)
        self.helpers.append(t)
        t.start()

    def start(self, budget_s: float = 30.0) -> None:
        leases = LeaseManager(self.store.redis, self.store.keys)
        t = threading.Thread(target=self.poller.run, args=(leases, budget_s, self.stopping.is_set),
                             daemon=True)
        t.start()
        self.threads.append(t)

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads + self.helpers:
            t.join(timeout=40)
        self.vast.close()

    def status(self, iid: Any) -> str | None:
        rec = self.store.get_instance(str(iid))
        return rec.status if rec else None

    def status_events(self, iid: Any) -> list[tuple[str, str, str | None]]:
        return [(e.fields["old"], e.fields["new"], e.fields.get("reason"))
                for e in self.events.read(count=1000)
                if e.kind == "instance-status" and e.fields["instance_id"] == str(iid)]


@pytest.fixture
def harness(sim, store, events) -> Iterator[Harness]:
    h = Harness(sim, store, events)
    yield h
    h.stop()


def create(sim: Any, label: str | None = LABEL, **opts: Any) -> str:
    return str(sim.control.create_instance(label=label, ssh=False, ssh_proxy=False, **opts)["id"])


def test_discovers_only_labelled_instances_and_follows_them_to_ready(harness, sim, store) -> None:
    ours = create(sim)
    other_pool = create(sim, label="vastkeep:another-pool", running=True)
    foreign = create(sim, label="someone-else", running=True)
    unlabelled = create(sim, label=None, running=True)
    lookalike = create(sim, label="vastkeeper:x", running=True)
    harness.start(budget_s=40)
    wait_for(lambda: harness.status(ours) == "ready", 25, "labelled instance ready")
    wait_for(lambda: harness.status(other_pool) == "ready", 15, "second pool's instance ready")
    for iid in (foreign, unlabelled, lookalike):
        assert store.get_instance(iid) is None, f"{iid} is not ours and must be left alone"
    seen = [new for _, new, _ in harness.status_events(ours)]
    assert seen == ["loading"], seen  # starting → loading by the provider's word; → ready by Layer 3:
    promoted = [e for e in harness.events.read(count=1000) if e.kind == "port-validated"
                and e.fields["instance_id"] == ours]
    assert promoted and promoted[0].fields["status"] == "ready"
    rec = store.get_instance(ours)
    assert rec.vast_status == "running" and rec.provider_seen_at and rec.label == LABEL
    assert rec.connection_url and rec.status_reason is None
    # Layer 3 was queued at most once per active interval per instance
    times = [t for t, iid in harness.sent if iid == ours]
    assert times and all(b - a >= ACTIVE_S * 0.9 for a, b in zip(times, times[1:], strict=False))
    # the provider listing was read from the snapshot: list calls do not follow the number of polls
    stats = store.redis.hgetall(store.keys.poll_stats())
    assert int(stats["polls"]) > int(stats["vast_list_calls"]) or int(stats["vast_list_calls"]) < 80


@pytest.mark.parametrize("fault", ["offline", "exited", "outbid", "error", "destroyed"])
def test_provider_fault_turns_failed_within_one_active_interval_and_is_never_handed_out(
        harness, sim, store, fault) -> None:
    iid = create(sim, label="vastkeep:default:0", running=True)  # a warm-pool instance: wakes the pool
    keep = create(sim, running=True)
    harness.start(budget_s=40)
    wait_for(lambda: harness.status(iid) == "ready" and harness.status(keep) == "ready", 20, "both ready")
    harness.auto_validate = True
    t0 = time.monotonic()
    if fault == "destroyed":
        assert harness.vast.destroy(int(iid)) is True  # destroyed outside vastkeep
    else:
        sim.control.set_state(int(iid), fault)
    expected = "gone" if fault == "destroyed" else "failed"
    wait_for(lambda: harness.status(iid) == expected, 20, f"{fault} → {expected}")
    took = time.monotonic() - t0
    # one active interval + the snapshot age (two listings + show for "gone"), generously: timing goals
    # are measured in bench/bench_polling.py; this only catches "not within the interval at all"
    bound = 3 * (ACTIVE_S + SNAP_IDLE_S + (2 * SNAP_IDLE_S if fault == "destroyed" else 0)) + 2.0
    assert took < bound, f"{fault}: {took:.2f}s > {bound:.2f}s"
    rec = store.get_instance(iid)
    assert rec.status_reason and rec.error == rec.status_reason
    for ev in harness.events.read(count=1000):
        if ev.kind == "instance-status":
            assert set(ev.fields) == documented_fields("instance-status")
    time.sleep(ACTIVE_S * 2)  # more polls and probes: nothing changes, nothing is emitted again
    changes = [e for e in harness.status_events(iid) if e[1] == expected]
    assert len(changes) == 1, changes
    # the warm pool's reconciler is woken for it at once (not left to the next beat), de-duplicated:
    # one wake per due second however often the dead instance is polled meanwhile
    assert harness.wakes and all(abs(at - due) < 0.5 for at, due in harness.wakes), harness.wakes
    assert len({int(due) for _, due in harness.wakes}) == len(harness.wakes)
    assert harness.status(iid) == expected
    assert primary_instance(store.list_instances()).instance_id == keep
    # a probe never promotes it either
    port_flow.validate_instance(store, harness.events, harness.validator, iid)
    assert harness.status(iid) == expected


def test_unlisted_record_is_not_probed_at_its_old_address(harness, sim, store, events) -> None:
    """The stale-address case: a record the listing no longer shows points at an address that now
    answers for another instance; the sweep must not probe it there and promote it."""
    gone = create(sim, running=True)
    other = create(sim, running=True)
    other_row = harness.vast.show_instance(int(other))
    harness.vast.destroy(int(gone))
    store.put_instance(InstanceRecord(gone, status="loading", public_ip=other_row.public_ip,
                                      ports=dict(other_row.ports), label=LABEL))
    result = port_flow.validate_pool(store, events, harness.validator, vast=harness.vast)
    assert gone not in result.get("failed_ids", []) and result["checked"] == 0
    assert harness.status(gone) == "loading" and store.get_instance(gone).connection_url is None
    harness.start(budget_s=40)
    wait_for(lambda: harness.status(gone) == "gone", 20, "unlisted + 404 → gone")


def test_lease_shortens_the_next_poll_at_once(harness, sim, store) -> None:
    iid = create(sim, running=True)
    harness.start(budget_s=40)
    wait_for(lambda: harness.status(iid) == "ready", 20, "ready")
    sched = harness.poller.schedule
    wait_for(lambda: sched.due_times([iid]).get(iid, 0) - time.time() > POLICY.poll_active_interval_s * 2,
             15, "idle interval scheduled")
    store.update_instance(iid, {"leased_until": time.time() + 60, "lease_owner": "client-a"})
    t0 = time.time()
    assert harness.poller.request_poll(iid)
    wait_for(lambda: (sched.last_polls([iid]).get(iid) or 0) >= t0, 5, "polled at once")
    polled = sched.last_polls([iid])[iid]
    due = sched.due_times([iid])[iid]
    assert due - polled <= ACTIVE_S + 0.01, "a leased instance is polled at the active interval"


def test_claims_are_exclusive_and_stale_finishers_do_not_reschedule(store) -> None:
    sched = PollSchedule(store.redis, store.keys, claim_timeout_s=3.0)
    ids = [str(1000 + i) for i in range(300)]
    sched.ensure(ids, due=time.time() - 1)
    got: list[list[Any]] = [[], [], []]

    def claimer(k: int) -> None:
        while True:
            batch = sched.claim_due(17)
            if not batch:
                return
            got[k].extend(batch)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [c.instance_id for part in got for c in part]
    assert sorted(claimed) == sorted(ids), "every due id claimed exactly once"
    iid, token, due, _ = got[0][0] if got[0] else got[1][0]
    assert due < time.time() - 0.9
    time.sleep(3.1)  # the claim expires: a dead claimer's member comes back by itself
    again = [x for x in sched.claim_due(1000) if x.instance_id == iid]
    assert again and again[0][1] != token
    assert sched.finish([(iid, token, time.time() + 999)]) == 1, "stale token: not rescheduled"
    assert sched.due_times([iid])[iid] < time.time() + 10
    assert sched.finish([(iid, again[0][1], time.time() + 999)]) == 0
    sched.poll_now(iid)
    assert sched.due_times([iid])[iid] <= time.time()
    sched.poll_now(iid, at=time.time() + 500)  # never later than it already was
    assert sched.due_times([iid])[iid] <= time.time()


def test_rediscovered_after_flushdb_and_adopt_forget(harness, sim, store, redis_client) -> None:
    ours = [create(sim, running=True) for _ in range(3)]
    unlabelled = create(sim, label=None, running=True)
    harness.start(budget_s=40)
    wait_for(lambda: all(harness.status(i) == "ready" for i in ours), 25, "all ready")
    redis_client.flushdb()  # the control plane lost its Redis (the dispatcher lease too: it stops)
    harness.threads[0].join(timeout=20)
    assert not harness.threads[0].is_alive(), "a dispatcher whose lease vanished stops"
    harness.start(budget_s=40)  # what beat's vastkeep.polling.ensure does within 10 s
    wait_for(lambda: all(harness.status(i) in ("loading", "ready", "starting") for i in ours), 20,
             "rediscovered")
    assert store.get_instance(unlabelled) is None
    rec = adopt(store, harness.snapshot, harness.poller.schedule, unlabelled)
    assert rec.instance_id == unlabelled
    wait_for(lambda: harness.status(unlabelled) == "ready", 20, "adopted instance followed")
    with pytest.raises(ValueError):
        adopt(store, harness.snapshot, harness.poller.schedule, unlabelled)
    assert forget(store, harness.poller.schedule, ours[0]) is True
    time.sleep(SNAP_IDLE_S * 3)
    assert store.get_instance(ours[0]) is None, "forgotten: discovery leaves it alone"
    assert sim.control.instance(int(ours[0]))["instance"]["actual_status"] == "running", "never touched"


def test_two_dispatchers_one_runs(store) -> None:
    leases = LeaseManager(store.redis, store.keys)
    p = Poller(store, POLICY, clock=SYSTEM_CLOCK)
    holder = leases.acquire("poll-dispatcher", "someone", 5000)
    assert holder is not None
    assert p.run(leases, 0.5) == {"skipped": "another dispatcher is running"}


def test_the_dispatcher_logs_the_guides_start_line_once_per_process(store, caplog) -> None:
    caplog.set_level(logging.INFO, logger="vastkeep.polling")
    leases = LeaseManager(store.redis, store.keys)
    announced: set[str] = set()  # what the worker process keeps (worker.wiring.Resources.announced)
    Poller(store, POLICY, clock=SYSTEM_CLOCK, announced=announced).run(leases, 0.2)
    # a continuation in the same process (a new Poller, the process's set): no second line
    Poller(store, POLICY, clock=SYSTEM_CLOCK, announced=announced).run(leases, 0.2)
    assert caplog.text.count("[Polling] Starting adaptive polling loop") == 1


def test_a_stop_ends_the_dispatcher_run_at_its_next_turn_and_frees_the_lease(store) -> None:
    """A worker's warm shutdown (``should_stop``) ends a 30 s run within a turn (at most MAX_WAIT_S), and the
    lease is free at once, so the continuation the task sends takes it without waiting for the TTL."""
    leases = LeaseManager(store.redis, store.keys)
    p = Poller(store, POLICY, clock=SYSTEM_CLOCK)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    result = p.run(leases, 30.0, should_stop=stop.is_set)
    took_s = time.monotonic() - t0
    assert result.get("stopped") is True and "lost" not in result, result
    assert took_s < 2.0, took_s
    assert leases.acquire("poll-dispatcher", "the-continuation", 5000) is not None
