"""Layer 6 decisions as a table: one daemon's record + what Redis shows + the time → the action."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vastkeep.core.backoff import RestartPolicy
from vastkeep.supervision.decide import (
    HOLDER_GONE,
    STALE_ERROR,
    START_TIMEOUT_ERROR,
    DaemonRecord,
    Observed,
    SupervisionPolicy,
    decide,
    hash_jitter,
    jittered_delay,
    no_jitter,
)

P = SupervisionPolicy(stale_s=20, start_timeout_s=60, jitter_fraction=0.2, crash_loop_crashes=3,
                      crash_loop_window_s=100)
T = 10_000.0
DEAD = Observed()
FRESH = Observed(heartbeat_age_s=3.0)
STALE = Observed(heartbeat_age_s=25.0)
HANDOVER = Observed(heartbeat_age_s=4.0, lease_held=False)  # lease free for a moment, heartbeat fresh
HELD = Observed(heartbeat_age_s=None, lease_held=True)
R = DaemonRecord(id="keepalive-shard-0", name="KeepaliveShard-0")


def run(rec, obs, now=T, wanted=True, policy=P, jitter=no_jitter):
    return decide(rec, obs, daemon_id=R.id, name=R.name, wanted=wanted, now=now, policy=policy, jitter=jitter)


CASES = [
    # (what, record, observed, now, action, start, announce, fields of the new record)
    ("first seen, nothing runs: start at once, no backoff, not a restart", None, DEAD, T, "start", True,
     ("registered",), {"status": "starting", "restart_count": 0, "last_start_time": T}),
    ("first seen, already running: adopt it", None, FRESH, T, "healthy", False, ("registered",),
     {"status": "running", "running_since": T}),
    ("start sent, still queued within the start timeout: wait",
     replace(R, status="starting", last_start_time=T - 59), DEAD, T, "wait", False, (),
     {"status": "starting"}),
    ("start sent, no heartbeat after the start timeout: a crash",
     replace(R, status="starting", last_start_time=T - 60), DEAD, T, "crashed", False, ("crashed",),
     {"status": "backoff", "consecutive_crashes": 1, "next_restart_at": T + 10,
      "last_error": START_TIMEOUT_ERROR}),
    ("start answered: running", replace(R, status="starting", last_start_time=T - 5), FRESH, T, "healthy",
     False, (), {"status": "running", "running_since": T}),
    ("normal handover (lease free, heartbeat fresh): no crash",
     replace(R, status="running", running_since=T - 30), HANDOVER, T, "healthy", False, (),
     {"status": "running", "running_since": T - 30}),
    ("continuation queued (handover heartbeat 50 s old, < start timeout): alive",
     replace(R, status="running", running_since=T - 100), Observed(heartbeat_age_s=50.0, handover=True), T,
     "healthy", False, (), {"status": "running", "running_since": T - 100}),
    ("continuation lost (handover heartbeat older than the start timeout): a crash",
     replace(R, status="running", running_since=T - 100), Observed(heartbeat_age_s=61.0, handover=True), T,
     "crashed", False, ("crashed",), {"status": "backoff"}),
    ("lease held without a heartbeat: alive", replace(R, status="running", running_since=T - 30), HELD, T,
     "healthy", False, (), {"status": "running"}),
    ("heartbeat stale and lease free: crash 1 → 10 s",
     replace(R, status="running", running_since=T - 30), STALE, T, "crashed", False, ("crashed",),
     {"status": "backoff", "consecutive_crashes": 1, "next_restart_at": T + 10, "last_crash_time": T,
      "last_error": STALE_ERROR}),
    ("crash 2 → 20 s", replace(R, status="running", running_since=T - 5, consecutive_crashes=1), DEAD, T,
     "crashed", False, ("crashed",), {"consecutive_crashes": 2, "next_restart_at": T + 20}),
    ("crash 3 → 40 s", replace(R, status="running", running_since=T - 5, consecutive_crashes=2), DEAD, T,
     "crashed", False, ("crashed",), {"consecutive_crashes": 3, "next_restart_at": T + 40}),
    ("crash 7 → 60 s cap", replace(R, status="running", running_since=T - 5, consecutive_crashes=6), DEAD, T,
     "crashed", False, ("crashed",), {"consecutive_crashes": 7, "next_restart_at": T + 60}),
    ("crash after a stable run (≥ 60 s) starts a new series at 10 s",
     replace(R, status="running", running_since=T - 61, consecutive_crashes=4), DEAD, T, "crashed", False,
     ("crashed",), {"consecutive_crashes": 1, "next_restart_at": T + 10}),
    ("alive 60 s after a crash series: consecutiveCrashes reset",
     replace(R, status="running", running_since=T - 60, consecutive_crashes=3), FRESH, T, "healthy", False,
     (), {"consecutive_crashes": 0}),
    ("alive 59 s: not yet reset", replace(R, status="running", running_since=T - 59, consecutive_crashes=3),
     FRESH, T, "healthy", False, (), {"consecutive_crashes": 3}),
    ("backoff not over: wait", replace(R, status="backoff", next_restart_at=T + 1, consecutive_crashes=1),
     DEAD, T, "wait", False, (), {"status": "backoff"}),
    ("backoff over: restart (attempt +1)",
     replace(R, status="backoff", next_restart_at=T, consecutive_crashes=2, restart_count=4), DEAD, T,
     "restart", True, ("restarted",), {"status": "starting", "restart_count": 5, "last_start_time": T,
                                      "consecutive_crashes": 2}),
    ("came back by itself during backoff: running, no restart",
     replace(R, status="backoff", next_restart_at=T + 5, consecutive_crashes=1), FRESH, T, "healthy", False,
     (), {"status": "running", "next_restart_at": None, "restart_count": 0}),
    # issue 20: a holder gone (host paused, cut off, killed) is not a crash of the daemon where it ran
    ("held its lease, lease lapsed, heartbeat stale, no crash reported: holder gone, restart now",
     replace(R, status="running", running_since=T - 30, lease_seen=True), STALE, T, "restart", True,
     ("holder-gone", "restarted"), {"status": "starting", "restart_count": 1, "consecutive_crashes": 0,
                      "last_start_time": T, "last_handover_time": T, "last_error": HOLDER_GONE,
                      "last_crash_time": None, "crash_times": (), "next_restart_at": None,
                      "lease_seen": False}),
    ("holder gone after earlier crashes in the run: no backoff step either, the count stays",
     replace(R, status="running", running_since=T - 5, consecutive_crashes=2, restart_count=2,
             lease_seen=True), DEAD, T, "restart", True, ("holder-gone", "restarted"),
     {"status": "starting", "restart_count": 3, "consecutive_crashes": 2}),
    ("holder gone again ≥ 60 s after the last move: restart now",
     replace(R, status="running", running_since=T - 50, lease_seen=True, last_handover_time=T - 60), DEAD, T,
     "restart", True, ("holder-gone", "restarted"), {"last_handover_time": T}),
    ("holder gone again < 60 s after the last move: a crash (a silent crash loop backs off)",
     replace(R, status="running", running_since=T - 50, lease_seen=True, last_handover_time=T - 59), DEAD, T,
     "crashed", False, ("crashed",),
     {"status": "backoff", "consecutive_crashes": 1, "next_restart_at": T + 10,
      "last_handover_time": T - 59}),
    ("crash reported where it ran (heartbeat marked crashed): a crash even though it held its lease",
     replace(R, status="running", running_since=T - 5, consecutive_crashes=1, lease_seen=True),
     Observed(heartbeat_age_s=1.0, crashed=True), T, "crashed", False, ("crashed",),
     {"status": "backoff", "consecutive_crashes": 2, "next_restart_at": T + 20, "lease_seen": False}),
    ("never seen holding its lease: a crash as before",
     replace(R, status="running", running_since=T - 30), DEAD, T, "crashed", False, ("crashed",),
     {"next_restart_at": T + 10}),
    ("a start that never came up is a start timeout, not a holder gone",
     replace(R, status="starting", last_start_time=T - 60, lease_seen=True), DEAD, T, "crashed", False,
     ("crashed",), {"last_error": START_TIMEOUT_ERROR}),
    ("alive by its lease: lease seen", replace(R, status="running", running_since=T - 30), HELD, T,
     "healthy", False, (), {"lease_seen": True}),
    ("alive by its heartbeat only: lease not seen", replace(R, status="running", running_since=T - 30), FRESH,
     T, "healthy", False, (), {"lease_seen": False}),
    ("failed stays failed", replace(R, status="failed", restart_count=3), DEAD, T, "failed", False, (),
     {"status": "failed"}),
    ("failed but beating again: running", replace(R, status="failed", restart_count=3), FRESH, T, "healthy",
     False, (), {"status": "running"}),
]


@pytest.mark.parametrize(("what", "record", "observed", "now", "action", "start", "announce", "fields"),
                         CASES, ids=[c[0] for c in CASES])
def test_decide_table(what, record, observed, now, action, start, announce, fields) -> None:
    d = run(record, observed, now)
    assert (d.action, d.start, d.announce) == (action, start, announce)
    for name, value in fields.items():
        assert getattr(d.record, name) == value, name


def test_not_wanted_retires_the_record() -> None:
    assert run(replace(R, status="running"), FRESH, wanted=False).action == "retire"
    assert run(None, DEAD, wanted=False).record is None


@pytest.mark.parametrize(("max_restarts", "restarts", "action"), [(-1, 10_000, "crashed"), (3, 2, "crashed"),
                                                                  (3, 3, "failed"), (0, 0, "failed")])
def test_max_restarts(max_restarts, restarts, action) -> None:
    policy = replace(P, restart=RestartPolicy(max_restarts=max_restarts))
    d = run(replace(R, status="running", running_since=T - 1, restart_count=restarts), DEAD, policy=policy)
    assert d.action == action
    if action == "failed":
        assert d.announce == ("failed",) and d.record.status == "failed" and d.record.next_restart_at is None


def test_crash_loop_alert_once_per_window() -> None:
    rec = replace(R, status="running", running_since=T - 1)
    seen = []
    now = T
    for _ in range(6):  # crash, restart, crash... every 10 s: 3 crashes within the 100 s window → alert
        d = run(rec, DEAD, now=now)
        seen.append("crash-loop" in d.announce)
        rec = replace(d.record, status="running", running_since=now + 1)
        now += 10
    assert seen == [False, False, True, False, False, False]
    later = run(rec, DEAD, now=now + 200)  # the old crashes left the window: no alert for one crash
    assert "crash-loop" not in later.announce and len(later.record.crash_times) == 1


def test_jitter_only_shortens_and_spreads_across_daemons() -> None:
    for crashes, base in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        delays = {jittered_delay(f"keepalive-shard-{n}", crashes, P, hash_jitter) for n in range(8)}
        assert all(0.8 * base <= d <= base for d in delays), delays
        assert len(delays) > 4  # daemons that died together do not restart together
        assert jittered_delay("x", crashes, P, no_jitter) == base
    assert jittered_delay("x", 1, P, lambda *_: 5.0) == 8.0  # a bad source is clamped to [0, 1]


def test_record_json_round_trip() -> None:
    rec = replace(R, status="backoff", restart_count=2, consecutive_crashes=3, last_start_time=T,
                  last_crash_time=T + 1, last_error="x", next_restart_at=T + 40, crash_times=(T, T + 1),
                  alerted_at=T, lease_seen=True, last_handover_time=T - 5)
    assert DaemonRecord.from_json(rec.to_json()) == rec
    assert set(rec.to_json()) >= {"name", "status", "restartCount", "consecutiveCrashes", "lastStartTime",
                                  "lastCrashTime", "lastError", "nextRestartAt"}
    assert DaemonRecord.from_json({"id": "a", "status": "weird"}).status == "registered"
