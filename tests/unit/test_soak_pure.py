"""The soak's pure parts: the seeded plan, the client judge, the must-never counters, the report's verdict."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vastkeep.soak.counters import (
    canary_hits,
    double_leases,
    double_rents,
    family_table,
    fence_regressions,
    judge_clients,
    lease_holds,
    log_diff,
    observe_api_fault,
    observe_instance_fault,
    percentile,
    unknown_billing,
)
from vastkeep.soak.plan import FAMILIES, PROCESS_SPACING_S, build_plan, pick_target
from vastkeep.soak.report import build_report, format_table

T0 = 1_000_000.0


def iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()


# ── plan ────────────────────────────────────────────────────────────────────
def test_plan_replays_from_its_seed_and_differs_between_seeds():
    assert build_plan(7, 30, 200) == build_plan(7, 30, 200)
    assert build_plan(7, 30, 200) != build_plan(8, 30, 200)


def test_a_ten_minute_plan_has_every_family_once_inside_the_window():
    steps = build_plan(1, 40, 470, fill=False)  # the full form's shortest run: 10 minutes
    assert sorted(s.family for s in steps) == sorted(FAMILIES)
    assert all(40 <= s.at_s <= 470 for s in steps)


@pytest.mark.parametrize("seed", [*range(20), 1793532032, 120697433, 280816024])
def test_between_machines_faults_never_overlap_in_a_plan(seed):
    """One lane: each is undone and settled before the next (a Redis restart struck 14 s into a host cut
    hid the cut's move, 30-minute run seed 1793532032)."""
    from vastkeep.soak.plan import LANE_SETTLE_S

    lane = [s for s in build_plan(seed, 5, 1700) if FAMILIES[s.family].between]
    assert {s.family for s in lane} == {n for n, f in FAMILIES.items() if f.between}
    for a, b in zip(lane, lane[1:], strict=False):
        assert b.at_s >= a.at_s + a.hold_s + LANE_SETTLE_S - 0.1, (a, b)


@pytest.mark.parametrize("seed", [1, 7, 20261207])
def test_the_short_form_strikes_comfyui_first_then_cuts_host_b(seed):
    at = {s.family: s.at_s for s in build_plan(seed, 5, 135, full=False)}
    comfy = [n for n, f in FAMILIES.items() if f.observer == "worker-keepalive"]
    assert max(at[n] for n in comfy) < at["host-cut"] < at["redis-restart"]
    assert max(at[n] for n in comfy) <= 30.0


def test_a_long_plan_repeats_every_family():
    steps = build_plan(5, 5, 1700)
    counts = {name: sum(1 for s in steps if s.family == name) for name in FAMILIES}
    assert len(steps) > 80 and min(counts.values()) >= 1
    assert sum(1 for n, c in counts.items() if c >= 2) >= len(FAMILIES) // 2


def test_process_faults_on_one_child_are_spaced():
    steps = build_plan(3, 0, 1800)
    by_proc: dict[str, list[float]] = {}
    for s in steps:
        proc = FAMILIES[s.family].process
        if proc:
            by_proc.setdefault(proc, []).append(s.at_s)
    assert by_proc
    for times in by_proc.values():
        assert all(b - a >= PROCESS_SPACING_S - 0.1 for a, b in zip(times, times[1:], strict=False))


@pytest.mark.parametrize("seed", range(40))
def test_every_family_fits_the_short_forms_window(seed):
    steps = build_plan(seed, 5, 135, full=False)
    short = {name for name, fam in FAMILIES.items() if not fam.full_only}
    assert {"redis-restart", "host-cut"} <= short  # the short form has a Redis restart and a partition
    assert short == {s.family for s in steps}
    # each fault is undone inside the window, not cut short by the workload's end (a host cut struck 15 s
    # before it, in CI's short soak, was restored before any shard could move)
    assert all(s.at_s + s.hold_s <= 135 + 0.05 for s in steps), [(s.family, s.at_s, s.hold_s) for s in steps]
    by_proc: dict[str, list[float]] = {}
    for s in steps:
        if FAMILIES[s.family].process:
            by_proc.setdefault(FAMILIES[s.family].process, []).append(s.at_s)
    for times in by_proc.values():
        times.sort()
        assert all(b - a >= PROCESS_SPACING_S - 0.1 for a, b in zip(times, times[1:], strict=False))


def test_plan_refuses_unknown_families_and_empty_windows():
    with pytest.raises(ValueError):
        build_plan(1, 0, 10, families=("comfy-melt",))
    with pytest.raises(ValueError):
        build_plan(1, 10, 10)


@pytest.mark.parametrize(
    ("candidates", "pick", "want"),
    [
        ([], 0.3, None),
        (["3", "1", "2"], 0.0, "1"),
        (["3", "1", "2"], 0.5, "2"),
        (["3", "1", "2"], 0.9999, "3"),
    ],
)
def test_pick_target(candidates, pick, want):
    assert pick_target(candidates, pick) == want


# ── counters ────────────────────────────────────────────────────────────────
def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2
    assert percentile(list(range(1, 101)), 99) == 99


def crash(target: str, at: float, restored: float | None = None, family: str = "comfy-crash") -> dict:
    return {"family": family, "target": target, "at": at, "restored_at": restored, "injected": True}


@pytest.mark.parametrize(
    ("line", "injections", "kind"),
    [
        # a dead URL with no fault on that instance is a failure; under a fault (or its grace) it is expected
        ({"op": "url-fail", "instance": "5", "t0": T0}, [], "url-dead"),
        ({"op": "url-fail", "instance": "5", "t0": T0 + 10}, [crash("5", T0, T0 + 5)], None),
        ({"op": "url-fail", "instance": "5", "t0": T0 + 100}, [crash("5", T0, T0 + 5)], "url-dead"),
        ({"op": "url-fail", "instance": "5", "t0": T0 + 100}, [crash("5", T0, family="host-offline")], None),
        ({"op": "url-fail", "instance": "6", "t0": T0 + 10}, [crash("5", T0, T0 + 5)], "url-dead"),
        # refusals: only when an idle ready instance was there before and after
        ({"op": "refused", "idle_both": ["4"], "t0": T0}, [], "refused-while-idle"),
        ({"op": "refused", "idle_both": [], "t0": T0}, [], None),
        ({"op": "http-5xx", "status": 500, "t0": T0}, [], "http-5xx"),
        ({"op": "api-unreachable", "t0": T0}, [], "api-unreachable"),
        (
            {"op": "api-unreachable", "t0": T0 + 3},
            [{"family": "kill-api", "at": T0, "back_at": T0 + 10, "injected": True}],
            None,
        ),
        (
            {"op": "task-error", "t0": T0 + 3},
            [{"family": "stop-control", "at": T0, "restored_at": T0 + 8, "injected": True}],
            None,
        ),
        # renewals and releases
        (
            {
                "op": "renew",
                "instance": "5",
                "status": 200,
                "answered_instance": "5",
                "t0": T0,
                "leased_until": iso(T0 + 60),
                "previous_until": iso(T0 + 30),
            },
            [],
            None,
        ),
        (
            {
                "op": "renew",
                "instance": "5",
                "status": 200,
                "answered_instance": "7",
                "t0": T0,
                "leased_until": iso(T0 + 60),
                "previous_until": iso(T0 + 30),
            },
            [],
            "renew-wrong",
        ),
        (
            {
                "op": "renew",
                "instance": "5",
                "status": 200,
                "answered_instance": "5",
                "t0": T0,
                "leased_until": iso(T0 + 10),
                "previous_until": iso(T0 + 30),
            },
            [],
            "renew-wrong",
        ),
        (
            {"op": "renew", "instance": "5", "status": 404, "t0": T0, "previous_until": iso(T0 + 30)},
            [],
            "lease-lost",
        ),
        (
            {"op": "renew", "instance": "5", "status": 404, "t0": T0 + 31, "previous_until": iso(T0 + 30)},
            [],
            None,
        ),
        ({"op": "release", "instance": "5", "status": 404, "t0": T0 + 10}, [crash("5", T0, T0 + 5)], None),
        ({"op": "release", "instance": "5", "status": 404, "t0": T0}, [], "lease-lost"),
        # a retried release (its first attempt got no answer) finds the lease gone: the first one landed
        ({"op": "release", "instance": "5", "status": 404, "t0": T0, "attempt": 1}, [], None),
        ({"op": "release", "instance": "5", "status": 422, "t0": T0, "attempt": 1}, [], "release-wrong"),
        # released after its leasedUntil (the client held it through a 90 s prompt while Redis was away for
        # 60 s, in a 30-minute soak): it ran out, it was not lost; before its end, a 404 is a lost lease
        ({"op": "release", "instance": "5", "status": 404, "t0": T0 + 31, "previous_until": iso(T0 + 30)}, [],
         None),
        ({"op": "release", "instance": "5", "status": 404, "t0": T0 + 10, "previous_until": iso(T0 + 30)}, [],
         "lease-lost"),
        ({"op": "release", "instance": "5", "status": 422, "t0": T0}, [], "release-wrong"),
    ],
)
def test_judge_clients_table(line, injections, kind):
    out = judge_clients([line], injections)
    bad = {k: v for k, v in out["failures"].items() if v}
    assert bad == ({kind: 1} if kind else {})


def test_a_refusal_after_vastkeep_broke_the_lease_is_right():
    line = {"op": "release", "instance": "5", "status": 404, "t0": T0 + 10}
    assert not any(judge_clients([line], [], broken={"5": T0 + 2})["failures"].values())


def test_grant_latency_summary():
    lines = [{"op": "grant", "latency_s": x, "t": T0} for x in (0.1, 0.2, 0.3, 2.0)]
    out = judge_clients(lines, [])
    assert (
        out["grants"] == 4 and out["grant_latency_s"]["p50"] == 0.2 and out["grant_latency_s"]["max"] == 2.0
    )


def grant(client, lease, inst, t, until, fence=1):
    return {
        "op": "grant",
        "client": client,
        "lease": lease,
        "instance": inst,
        "t": t,
        "fence": fence,
        "leased_until": iso(until),
    }


def test_double_lease_found_only_when_two_holds_overlap():
    lines = [
        grant("a", "L1", "5", T0, T0 + 60),
        {"op": "release", "lease": "L1", "status": 200, "t0": T0 + 5},
        grant("b", "L2", "5", T0 + 6, T0 + 66),
    ]
    assert double_leases(lease_holds(lines)) == []
    lines = [grant("a", "L1", "5", T0, T0 + 60), grant("b", "L2", "5", T0 + 6, T0 + 66)]
    found = double_leases(lease_holds(lines))
    assert [(f["first"], f["second"]) for f in found] == [("a", "b")]
    # vastkeep broke the first lease (its instance died): the second grant is legitimate
    assert double_leases(lease_holds(lines, breaks={"5": [T0 + 3]})) == []


def test_an_unanswered_release_ends_the_hold_when_it_was_sent_once_a_later_attempt_is_answered():
    first = {"op": "release", "lease": "L1", "status": None, "t0": T0 + 5, "t": T0 + 20}
    again = {"op": "release", "lease": "L1", "status": 404, "t0": T0 + 21, "t": T0 + 21.1}
    later = grant("b", "L2", "5", T0 + 12, T0 + 70)  # granted after the first attempt landed
    # in CI's short soak: a release sent while the API was stopped timed out; it had landed
    assert double_leases(lease_holds([grant("a", "L1", "5", T0, T0 + 60), first, again, later])) == []
    # never answered: the client cannot know it let go, the hold lasts to its leasedUntil
    found = double_leases(lease_holds([grant("a", "L1", "5", T0, T0 + 60), first, later]))
    assert [(f["first"], f["second"]) for f in found] == [("a", "b")]
    # a 503 (Redis away) is no answer either: the lease is still held
    busy = {"op": "release", "lease": "L1", "status": 503, "t0": T0 + 5}
    assert len(double_leases(lease_holds([grant("a", "L1", "5", T0, T0 + 60), busy, later]))) == 1


@pytest.mark.parametrize(("released", "found"), [
    ({}, 1),  # no word of it: the lease may still be held, the second grant is a double
    ({("5", 1): T0 + 5.2}, 0),  # the API ended it on the release (then was killed before it answered)
    ({("5", 1): T0 + 1}, 1),  # ended before the client asked: not this release's doing
    ({("5", 2): T0 + 5.2}, 1),  # another grant of the instance
])
def test_an_unanswered_release_ends_the_hold_where_vastkeep_released_that_grant(released, found):
    """30-minute soak seed 280816024: the release landed at 18:33:42.971 and the API was killed before it
    answered; the client's three retries met the stopped API; the instance was rightly granted again."""
    lines = [{**grant("a", "L1", "5", T0, T0 + 60), "fence": 1},
             *({"op": "release", "lease": "L1", "status": None, "t0": T0 + 5 + k, "t": T0 + 5.1 + k}
               for k in range(4)),
             grant("b", "L2", "5", T0 + 12, T0 + 70)]
    assert len(double_leases(lease_holds(lines, released=released))) == found


@pytest.mark.parametrize(("moves", "doubles"), [
    ([], 0),  # without the failover, the lease stays on 5 and 6's grant looks free
    ([(T0 + 10, "5", "6")], 1),  # moved onto 6 at T0+10, then 6 granted to b while a holds it
    ([(T0 + 10, "5", "7"), (T0 + 15, "7", "6")], 1),  # moved twice, ends on 6
    ([(T0 + 10, "5", "6")], 0),  # ... unless a released first (the extra line below)
    # the proxy and the pool both emit failover-done for one move: one lease, never a double of itself
    ([(T0 + 10, "5", "6"), (T0 + 10.2, "5", "6")], 1),
])
def test_a_failover_moves_the_hold_to_the_new_instance(moves, doubles):
    lines = [grant("a", "L1", "5", T0, T0 + 60), grant("b", "L2", "6", T0 + 30, T0 + 90)]
    if doubles == 0 and moves:
        lines.insert(1, {"op": "release", "lease": "L1", "status": 200, "t0": T0 + 20})
    breaks = {old: [t] for t, old, _ in moves}
    assert len(double_leases(lease_holds(lines, breaks, moves))) == doubles


def test_fence_regressions():
    assert fence_regressions([(1, "5", 1), (2, "5", 2), (3, "6", 1)]) == []
    assert [f["fence"] for f in fence_regressions([(1, "5", 2), (2, "5", 2), (3, "5", 1)])] == [2, 1]


def test_double_rents_from_the_ledger():
    ok = [
        {"seq": 1, "action": "rent", "instance_id": 1, "label": "vk:p:0"},
        {"seq": 2, "action": "destroy", "instance_id": 1, "label": "vk:p:0"},
        {"seq": 3, "action": "rent", "instance_id": 2, "label": "vk:p:0"},
    ]
    assert double_rents(ok) == []
    bad = ok[:1] + [{"seq": 2, "action": "rent", "instance_id": 2, "label": "vk:p:0"}]
    assert double_rents(bad) == [{"label": "vk:p:0", "instance_id": 2, "alive": [1]}]


def test_unknown_billing_needs_every_snapshot():
    assert unknown_billing([{1, 2, 3}, {1, 2, 3}], [{1, 2}, {1, 2}]) == ["3"]
    assert unknown_billing([{1, 2, 3}, {1, 2}], [{1, 2}, {1, 2}]) == []  # gone by the second look
    assert unknown_billing([{1, 3}, {1, 3}], [{1}, {1, 3}]) == []  # the record caught up


@pytest.mark.parametrize(
    ("remote", "collected", "lost", "dup"),
    [
        ("a\nb\nc\n", "a\nb\nc\n", 0, 0),
        ("a\nb\nc\n", "a\nc\n", 1, 0),
        ("a\nb\nc\n", "a\nb\nb\nc\n", 0, 1),
        ("a\nb\n", "", 2, 0),
        ("x\nx\ny\n", "x\ny\n", 1, 0),  # a repeated line collected once
    ],
)
def test_log_diff(remote, collected, lost, dup):
    out = log_diff(remote, collected)
    assert (out["lost"], out["duplicated"]) == (lost, dup)


def test_canary_hits_name_sources_not_values():
    hits = canary_hits({"logs/api.log": "x canary-123 y", "events": "clean"}, {"ADMIN_API_KEY": "canary-123"})
    assert hits == [{"source": "logs/api.log", "canary": "ADMIN_API_KEY"}]
    assert "canary-123" not in repr(hits)


def test_observation_of_instance_and_api_faults():
    inj = crash("5", T0)
    events = [
        {"kind": "ping-failure", "ts": T0 + 2, "data": {"instance_id": "6"}},
        {"kind": "ping-failure", "ts": T0 + 3, "data": {"instance_id": "5"}},
    ]
    assert observe_instance_fault(inj, events) == 3
    assert observe_instance_fault(crash("7", T0), events) is None
    # an event long after the fault was undone is not credited to it
    late = [{"kind": "ping-failure", "ts": T0 + 100, "data": {"instance_id": "5"}}]
    assert observe_instance_fault(crash("5", T0, T0 + 10), late) is None
    gone = [{"kind": "instance-status", "ts": T0 + 100, "data": {"instance_id": "5"}}]
    assert observe_instance_fault(crash("5", T0, family="host-offline"), gone) == 100
    api = {"family": "api-5xx", "at": T0}
    reqs = [{"ts": T0 + 1, "fault": "503", "status": 503}, {"ts": T0 + 4, "status": 200}]
    assert observe_api_fault(api, reqs) == 4
    assert observe_api_fault(api, reqs[:1]) is None


def test_report_fails_on_any_count_and_on_unseen_families():
    fams = family_table(
        [
            {"family": "comfy-crash", "injected": True, "observed_s": 1.5},
            {"family": "api-429", "injected": True},
        ],
        ["comfy-crash", "api-429", "kill-api"],
    )
    kw = dict(
        seed=1,
        minutes=4,
        started_at="now",
        machine={},
        plan=[],
        clients={"failures": {}},
        must_never={},
        restarts=[],
        polling={},
    )
    report = build_report(families=fams, **kw)
    assert not report["ok"]
    assert any("api-429" in r and "never observed" in r for r in report["reasons"])
    assert any("kill-api" in r and "injected 0" in r for r in report["reasons"])
    good = build_report(
        families=family_table(
            [{"family": "comfy-crash", "injected": True, "observed_s": 1}], ["comfy-crash"]
        ),
        **kw,
    )
    assert good["ok"] and "RESULT: PASS" in format_table(good)
    bad = build_report(
        families={},
        **{
            **kw,
            "must_never": {"double-rents": [{"label": "x"}]},
            "restarts": [{"process": "api", "down_s": None}],
        },
    )
    assert not bad["ok"] and len(bad["reasons"]) == 2 and "RESULT: FAIL" in format_table(bad)
    assert 'double-rents           1   e.g. {"label": "x"}' in format_table(bad)  # where to look, printed


def test_the_client_program_imports_no_vastkeep_and_parses():
    src = Path(__file__).resolve().parents[2] / "vastkeep" / "soak" / "client_workload"
    tree = ast.parse(src.read_text())
    mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mods += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in mods if m.split(".")[0] == "vastkeep"]
    assert "celery" in mods and "requests" in mods


def test_log_mark_after_finds_the_first_ready_line_after_a_time(tmp_path):
    from datetime import datetime

    from vastkeep.soak.tracking import log_mark_after

    log = tmp_path / "worker-control.log"
    log.write_text("[2026-12-07 05:03:08,381: INFO/MainProcess] control@vm ready.\n"
                   "junk line\n"
                   "[2026-12-07 05:05:21,500: INFO/MainProcess] mingle: sync with 1 nodes control@vm\n"
                   "[2026-12-07 05:05:22,250: INFO/MainProcess] control@vm ready.\n")
    since = datetime(2026, 12, 7, 5, 5, 10).timestamp()
    got = log_mark_after(log, "control@", since, need=" ready.")
    assert got == datetime(2026, 12, 7, 5, 5, 22, 250000).timestamp()
    assert log_mark_after(log, "ssh@", since, need=" ready.") is None
    assert log_mark_after(tmp_path / "missing.log", "x", 0) is None


def test_polling_intervals_take_the_state_at_poll_time():
    from vastkeep.soak.observe import Observer

    obs = Observer.__new__(Observer)

    def view(status, leased, polled, due):
        return {"contractId": "5", "status": status, "isLeased": leased, "lastPollAt": iso(polled),
                "nextPollAt": iso(due)}

    obs.snapshots = [
        (T0 - 1, [view("ready", True, T0 - 30, T0)]),  # before the first poll we judge: unknown state there
        (T0 + 1, [view("ready", True, T0, T0 + 30)]),  # polled at T0 while leased: 30 s scheduled
        (T0 + 5, [view("ready", False, T0, T0 + 30)]),  # released after the poll: still the leased poll
        (T0 + 31, [view("ready", False, T0 + 30, T0 + 210)]),  # polled idle: 180 s scheduled
    ]
    got = obs.polling_intervals()
    assert got["scheduled:leased"] == [30.0] and got["scheduled:ready-idle"] == [180.0]
    assert got["leased"] == [30.0]


def test_a_lease_granted_while_vastkeep_knew_comfy_was_lost_is_a_failure_even_under_a_fault():
    lines = [{"op": "grant", "lease": "L1", "instance": "5", "t": T0 + 10},
             {"op": "url-fail", "lease": "L1", "instance": "5", "t0": T0 + 11}]
    fault = [crash("5", T0, T0 + 30)]
    assert judge_clients(lines, fault, comfy_lost={"5": [(T0 + 2, None)]})["failures"]["url-dead"] == 1
    assert judge_clients(lines, fault, comfy_lost={"5": [(T0 + 2, T0 + 8)]})["failures"]["url-dead"] == 0
    assert judge_clients(lines, fault, comfy_lost={"5": [(T0 + 12, None)]})["failures"]["url-dead"] == 0


@pytest.mark.parametrize(("shards", "after", "want"), [
    (None, 0.0, False),  # Redis did not answer: not known to run
    ({}, 0.0, False),  # supervision knows no shard yet
    ({"keepalive-shard-0": 5.0, "keepalive-shard-1": 6.0}, 0.0, True),
    ({"keepalive-shard-0": 5.0, "keepalive-shard-1": None}, 0.0, False),  # one is down
    ({"keepalive-shard-0": 50.0, "keepalive-shard-1": 6.0}, 40.0, False),  # one still the killed runner's
    ({"keepalive-shard-0": 50.0, "keepalive-shard-1": 51.0}, 40.0, True),
])
def test_shards_running(shards, after, want):
    from vastkeep.soak.rules import shards_running

    assert shards_running(shards, after) is want


@pytest.mark.parametrize(("shards", "hidden"), [
    ({"keepalive-shard-0": None, "keepalive-shard-1": None}, True),  # beat (the sweep) down too
    ({"keepalive-shard-0": 90.0, "keepalive-shard-1": 20.0}, True),  # shard 1 still the killed runner's grant
    ({"keepalive-shard-0": 90.0, "keepalive-shard-1": 95.0}, False),
])
def test_a_comfy_crash_waits_until_the_keepalive_shards_run_again_after_a_kill(shards, hidden):
    """The worker was back 40 s ago (past the settle time), but a crash struck while its shards were not
    restarted yet measures the restart, not the detection through the held /ws."""
    from vastkeep.soak.plan import FaultStep
    from vastkeep.soak.rules import hidden_by

    kill = {"family": "kill-keepalive", "injected": True, "at": 60.0, "back_at": 72.0}
    step = FaultStep(at_s=0.0, family="comfy-crash", hold_s=10.0)
    assert hidden_by(step, [kill], 112.0, [], lambda: shards) is hidden  # type: ignore[list-item]


# ── between machines (issue 20) ────────────────────────────────────────────
def test_a_5xx_or_an_unanswered_call_while_redis_is_away_is_expected_and_not_after():
    restart = {"family": "redis-restart", "injected": True, "target": "redis", "at": T0, "back_at": T0 + 11}
    lines = [{"op": "http-5xx", "t0": T0 + 3}, {"op": "api-unreachable", "t0": T0 + 5},
             {"op": "task-error", "t0": T0 + 8}, {"op": "http-5xx", "t0": T0 + 60}]
    got = judge_clients(lines, [restart])
    assert got["failures"]["http-5xx"] == 1 and got["failures"]["api-unreachable"] == 0
    assert got["failures"]["task-error"] == 0
    assert got["expected"] == {"http-5xx-under-redis-fault": 1, "api-unreachable-under-fault": 1,
                               "task-error-under-fault": 1}


def test_a_lease_by_name_held_by_a_cut_off_host_is_expected():
    cut = {"family": "host-cut", "injected": True, "target": "hostb-keepalive", "at": T0,
           "restored_at": T0 + 30, "back_at": T0 + 30}
    lines = [{"op": "task-error", "t0": T0 + 20}, {"op": "task-error", "t0": T0 + 50}]
    assert judge_clients(lines, [cut])["failures"]["task-error"] == 1


@pytest.mark.parametrize(("t0", "t", "failed"), [
    (T0 - 20, T0 - 12, 1),  # sent and given up before the restart
    (T0 - 26, T0 + 4, 0),  # sent before, waited through the restart (seed 120697433): covered
    (T0 + 4, T0 + 34, 0),  # sent inside
    (T0 + 40, T0 + 70, 1),  # sent well after it was back
])
def test_a_lease_by_name_is_judged_over_its_whole_wait(t0, t, failed):
    restart = {"family": "redis-restart", "injected": True, "target": "redis", "at": T0, "back_at": T0 + 11}
    lines = [{"op": "task-error", "t0": t0, "t": t}]
    assert judge_clients(lines, [restart])["failures"]["task-error"] == failed


@pytest.mark.parametrize(("lines", "ledger", "found"), [
    ([{"op": "grant", "t0": T0 + 2, "t": T0 + 3, "instance": "5"}], [], 1),  # asked and answered while away
    ([{"op": "grant", "t0": T0 - 1, "t": T0 + 0.5, "instance": "5"}], [], 0),  # asked before it went away
    ([{"op": "grant", "t0": T0 + 12, "t": T0 + 12.1, "instance": "5"}], [], 0),  # after it was back
    ([], [{"action": "rent", "ts": T0 + 8, "instance_id": 9}], 1),  # the cloud rented while Redis was away
    ([], [{"action": "rent", "ts": T0 + 2, "instance_id": 9}], 0),  # a rent already on its way
    ([], [{"action": "destroy", "ts": T0 + 8, "instance_id": 9}], 0),
])
def test_nothing_is_granted_or_rented_while_redis_is_away(lines, ledger, found):
    from vastkeep.soak.between import granted_while_away

    assert len(granted_while_away([(T0, T0 + 11)], lines, ledger)) == found


def test_host_b_shards_moved_when_each_has_a_grant_after_the_fault():
    from vastkeep.soak.between import hostb_shards, moved

    owners = {"keepalive-shard-0": 101, "keepalive-shard-1": 202, "keepalive-shard-2": None}
    assert hostb_shards(owners, {202, 203}) == ["keepalive-shard-1"]
    inj = {"family": "host-cut", "at": T0, "hostb_shards": ["keepalive-shard-1"]}
    assert not moved(inj, {"keepalive-shard-1": T0 - 5})  # still host B's grant
    assert moved(inj, {"keepalive-shard-1": T0 + 12, "keepalive-shard-0": T0 - 100})
    assert not moved({**inj, "hostb_shards": []}, {"keepalive-shard-1": T0 + 12})  # nothing to move


def test_long_process_faults_keep_their_child_free_for_their_hold_and_30_s():
    from vastkeep.soak.plan import spacing_s

    assert spacing_s(0) == PROCESS_SPACING_S and spacing_s(12) == PROCESS_SPACING_S
    assert spacing_s(60) == 90.0
    steps = build_plan(11, 0, 1800)
    aways = sorted(s.at_s for s in steps if FAMILIES[s.family].process == "redis")
    assert all(b - a >= PROCESS_SPACING_S - 0.1 for a, b in zip(aways, aways[1:], strict=False))
    assert "redis-away" in {s.family for s in steps} and "pause-holder" in {s.family for s in steps}


def test_a_child_restarted_over_a_redis_fault_exited_unless_its_own_fault_explains_it():
    from vastkeep.soak.between import exited_children

    before = {"redis": 0, "beat": 0, "worker-control": 1, "api": 0}
    now = {"redis": {"restartCount": 1}, "beat": {"restartCount": 1}, "worker-control": {"restartCount": 2},
           "api": {"restartCount": 0}}
    assert exited_children(before, now, own_faults=["worker-control"]) == ["beat"]
    assert exited_children(before, now, own_faults=[]) == ["beat", "worker-control"]


def test_ssh_faults_follow_the_first_fault_that_gets_an_instance_replaced():
    for seed in (1, 7, 20261207):
        steps = build_plan(seed, 5, 127, full=False, fill=False)
        at = {s.family: s.at_s for s in steps}
        first = min(at[n] for n in ("destroyed-outside", "host-offline", "host-exited", "outbid"))
        # right after it (process steps pushed out of their place may land between them)
        assert all(first < at[n] <= first + 15 for n in ("ssh-blackhole", "ssh-drop")), steps


def test_a_control_plane_restart_waits_for_every_child_and_they_wait_for_it():
    from vastkeep.soak.plan import FaultStep
    from vastkeep.soak.rules import hidden_by
    from vastkeep.soak.tracking import node_marker

    restart = FaultStep(at_s=0.0, family="control-plane-restart", hold_s=0.0)
    beat_down = {"family": "kill-beat", "injected": True, "at": 100.0}
    assert hidden_by(restart, [beat_down], 105.0, [], lambda: None)
    assert not hidden_by(restart, [{**beat_down, "back_at": 110.0}], 150.0, [], lambda: None)
    whole = {"family": "control-plane-restart", "injected": True, "at": 200.0}
    assert hidden_by(FaultStep(0.0, "kill-api", 0.0), [whole], 210.0, [], lambda: None)
    assert node_marker("worker-control") == "control@" and node_marker("hostb-keepalive") == "keepalive-b@"


def test_a_second_fault_on_one_child_waits_until_the_first_is_over():
    from vastkeep.soak.plan import FaultStep
    from vastkeep.soak.rules import hidden_by

    paused = {"family": "pause-holder", "injected": True, "at": 100.0, "target": "hostb-keepalive"}
    step = FaultStep(0.0, "pause-holder", 40.0)
    assert hidden_by(step, [paused], 101.0, [], lambda: None)
    assert hidden_by(step, [{**paused, "back_at": 140.0}], 145.0, [], lambda: None)
    assert not hidden_by(step, [{**paused, "back_at": 140.0}], 151.0, [], lambda: None)


@pytest.mark.parametrize(("injections", "want"), [
    ([], 0),  # planned, not struck yet
    ([{"family": "comfy-crash", "injected": True, "under_prompt": False}], 0),
    ([{"family": "comfy-crash", "injected": True, "under_prompt": True}], 1),
    ([{"family": "comfy-crash", "injected": False, "under_prompt": True}], 0),  # not struck: not counted
    ([{"family": "comfy-crash", "injected": True, "under_prompt": True},
      {"family": "comfy-crash", "injected": True}], 1),
])
def test_family_table_counts_the_crashes_struck_under_a_prompt(injections, want):
    fams = family_table(injections, ["comfy-crash", "api-429"])
    assert fams["comfy-crash"]["under_prompt"] == want
    assert "under_prompt" not in fams["api-429"]


@pytest.mark.parametrize(("event", "want"), [
    ({"kind": "lease-broken", "data": {"instance_id": "5"}}, {"5": [10.0]}),
    # a failover moved the lease off 5: its renew and release now answer the new instance, rightly
    ({"kind": "failover-done", "data": {"instance_id": "5", "to_instance": "6", "outcome": "moved"}},
     {"5": [10.0]}),
    ({"kind": "failover-done", "data": {"instance_id": "5", "to_instance": None, "outcome": "failed"}}, {}),
    ({"kind": "failover-started", "data": {"instance_id": "5"}}, {}),
])
def test_breaks_include_a_failover_that_moved_the_lease(event, want):
    from vastkeep.soak.observe import Observer

    obs = object.__new__(Observer)
    obs.events = [{"id": "1", "ts": 10.0, **event}]
    assert dict(obs.breaks()) == want


def test_one_between_machines_fault_at_a_time():
    from vastkeep.soak.plan import FaultStep
    from vastkeep.soak.rules import hidden_by

    cut = {"family": "host-cut", "injected": True, "at": 100.0, "target": "hostb-keepalive"}
    restart = FaultStep(0.0, "redis-restart", 0.0)
    assert hidden_by(restart, [cut], 114.0, [], lambda: None)  # inside the cut: it waits
    assert hidden_by(restart, [{**cut, "back_at": 145.0}], 150.0, [], lambda: None)  # just back
    assert not hidden_by(restart, [{**cut, "back_at": 145.0}], 160.0, [], lambda: None)
    away = {"family": "redis-away", "injected": True, "at": 100.0, "target": "redis"}
    assert hidden_by(FaultStep(0.0, "host-cut", 40.0), [away], 130.0, [], lambda: None)
    assert not hidden_by(FaultStep(0.0, "kill-api", 0.0), [cut], 110.0, [], lambda: None)  # others go on


def test_a_comfyui_fault_and_a_host_b_fault_wait_for_each_other():
    """Host B's keepalive worker holds shards too: a ComfyUI fault waits out a cut (and its settle time), and
    a cut waits while a ComfyUI fault is unobserved (seed 120697433: a crash struck 0.1 s after a cut)."""
    from vastkeep.soak.plan import FaultStep
    from vastkeep.soak.rules import OBSERVER_SETTLE_S, hidden_by

    cut = {"family": "host-cut", "injected": True, "at": 100.0, "target": "hostb-keepalive"}
    crash = FaultStep(0.0, "comfy-crash", 10.0)
    shards = {"0": 1.0, "1": 1.0}
    assert hidden_by(crash, [cut], 101.0, [], lambda: shards)
    back = {**cut, "back_at": 145.0}
    assert hidden_by(crash, [back], 145.0 + OBSERVER_SETTLE_S - 1, [], lambda: shards)
    assert not hidden_by(crash, [back], 145.0 + OBSERVER_SETTLE_S + 1, [], lambda: shards)
    hang = {"family": "comfy-hang", "injected": True, "at": 100.0, "target": "7", "restored_at": 140.0}
    assert hidden_by(FaultStep(0.0, "host-cut", 40.0), [hang], 110.0, [], lambda: shards)
    seen = [{"kind": "ping-failure", "ts": 130.0, "data": {"instance_id": "7"}}]
    assert not hidden_by(FaultStep(0.0, "host-cut", 40.0), [hang], 131.0, seen, lambda: shards)


def test_a_crash_under_a_prompt_waits_while_the_api_is_down():
    from vastkeep.soak.plan import FaultStep
    from vastkeep.soak.rules import hidden_by

    stop = {"family": "stop-api", "injected": True, "at": 100.0, "target": "api"}
    crash = FaultStep(0.0, "comfy-crash", 10.0)
    shards = {"0": 1.0}
    assert hidden_by(crash, [stop], 105.0, [], lambda: shards)
    assert hidden_by(crash, [{**stop, "back_at": 110.0}], 115.0, [], lambda: shards)
    assert not hidden_by(crash, [{**stop, "back_at": 110.0}], 121.0, [], lambda: shards)
    assert not hidden_by(FaultStep(0.0, "comfy-hang", 40.0), [stop], 105.0, [], lambda: shards)


def test_a_process_fault_waits_for_a_crash_under_a_prompt_to_fail_over():
    from vastkeep.soak.plan import FaultStep
    from vastkeep.soak.rules import hidden_by

    crash = {"family": "comfy-crash", "injected": True, "at": 100.0, "target": "7", "restored_at": 120.0,
             "under_prompt": True}
    seen = [{"kind": "ping-failure", "ts": 100.2, "data": {"instance_id": "7"}}]
    moved = [*seen, {"kind": "failover-done", "ts": 100.4, "data": {"instance_id": "7", "to_instance": "8"}}]
    kill = FaultStep(0.0, "kill-keepalive", 0.0)
    assert hidden_by(kill, [crash], 101.0, seen, lambda: None)  # seen, not yet moved
    assert not hidden_by(kill, [crash], 101.0, moved, lambda: None)
    assert not hidden_by(kill, [{**crash, "under_prompt": False}], 101.0, seen, lambda: None)


@pytest.mark.parametrize(("spares", "failed", "excused"), [(0, 0, 1), (2, 1, 0), (None, 1, 0)])
def test_a_prompt_failed_under_a_crash_is_expected_only_when_no_instance_was_free(spares, failed, excused):
    crash = {"family": "comfy-crash", "injected": True, "target": "5", "at": T0, "restored_at": T0 + 20,
             "under_prompt": True, **({} if spares is None else {"spares": spares})}
    line = {"op": "prompt-fail", "instance": "5", "t0": T0 - 0.1, "took_s": 15.5, "error": "ReadTimeout"}
    got = judge_clients([line], [crash])
    assert got["failures"]["prompt-failed"] == failed
    assert got["expected"].get("prompt-fail-no-spare", 0) == excused


HANG_ON_7 = {"family": "comfy-hang", "injected": True, "target": "7", "at": T0 + 0.05, "restored_at": T0 + 40}


@pytest.mark.parametrize(("others", "failed", "excused"), [
    ([HANG_ON_7], 0, 1),  # the only free instance hung as the crash struck: the lease moved onto it
    ([{**HANG_ON_7, "at": T0 + 5}], 1, 0),  # hung later: the failover had a healthy spare
    ([{**HANG_ON_7, "target": "8"}], 1, 0),  # another instance's fault
    ([{**HANG_ON_7, "at": T0 - 100, "restored_at": T0 - 60}], 1, 0),  # over (with its grace) before the crash
])
def test_a_free_instance_under_a_fault_of_its_own_is_no_spare(others, failed, excused):
    crash = {"family": "comfy-crash", "injected": True, "target": "5", "at": T0, "restored_at": T0 + 20,
             "under_prompt": True, "spares": 1, "spare_ids": ["7"]}
    line = {"op": "prompt-fail", "instance": "5", "t0": T0 - 0.1, "took_s": 15.5, "error": "ReadTimeout"}
    got = judge_clients([line], [crash, *others])
    assert got["failures"]["prompt-failed"] == failed
    assert got["expected"].get("prompt-fail-no-spare", 0) == excused


@pytest.mark.parametrize(("granted_at", "failed", "excused"), [
    (T0 + 0.02, 0, 1),  # another client took the only spare 0.02 s after the crash (30-minute run)
    (T0 - 0.3, 0, 1),  # ... or just before it, after the status the crash read
    (T0 + 3.0, 1, 0),  # later: the failover had it first, or should have
])
def test_a_spare_another_lease_took_as_the_crash_struck_is_no_spare(granted_at, failed, excused):
    crash = {"family": "comfy-crash", "injected": True, "target": "5", "at": T0, "restored_at": T0 + 20,
             "under_prompt": True, "spares": 1, "spare_ids": ["7"]}
    grant = {"op": "grant", "client": "c14", "instance": "7", "t0": granted_at - 0.01, "t": granted_at}
    line = {"op": "prompt-fail", "instance": "5", "t0": T0 - 0.1, "took_s": 15.5, "error": "ReadTimeout"}
    got = judge_clients([grant, line], [crash])
    assert got["failures"]["prompt-failed"] == failed
    assert got["expected"].get("prompt-fail-no-spare", 0) == excused


def test_a_host_b_fault_and_a_fault_on_what_moves_its_shards_wait_for_each_other():
    """Beat's sweep moves host B's shards to host A's keepalive worker: a kill of either while host B is
    paused, its move unseen, delayed the move past the pause (65.8 and 68.6 s in two 30-minute runs)."""
    from vastkeep.soak.plan import FaultStep
    from vastkeep.soak.rules import SAME_CHILD_GAP_S, hidden_by

    pause = {"family": "pause-holder", "injected": True, "at": 100.0, "target": "hostb-keepalive"}
    for step in (FaultStep(0.0, "kill-beat", 0.0), FaultStep(0.0, "kill-keepalive", 0.0)):
        assert hidden_by(step, [pause], 115.0, [], lambda: None)  # held, not yet moved
        assert not hidden_by(step, [{**pause, "moved_at": 114.0}], 115.0, [], lambda: None)
    assert not hidden_by(FaultStep(0.0, "kill-api", 0.0), [pause], 115.0, [], lambda: None)
    kill = {"family": "kill-beat", "injected": True, "at": 100.0, "target": "beat", "back_at": 111.0}
    cut = FaultStep(0.0, "host-cut", 40.0)
    assert hidden_by(cut, [{**kill, "back_at": None}], 105.0, [], lambda: None)  # beat down
    assert hidden_by(cut, [kill], 111.0 + SAME_CHILD_GAP_S - 1, [], lambda: None)
    assert not hidden_by(cut, [kill], 111.0 + SAME_CHILD_GAP_S + 1, [], lambda: None)


@pytest.mark.parametrize(("inj", "window"), [
    ({"gone_at": T0 + 0.3, "spawned_at": T0 + 9}, (T0 + 0.3, T0 + 9)),  # away from when it stopped answering
    ({"gone_at": None, "spawned_at": T0 + 9}, (T0, T0 + 9)),  # never seen to stop: from the signal
    ({}, (T0, T0 + 10)),  # no new process recorded: until the soak saw it back
])
def test_redis_is_away_from_when_it_stopped_answering_until_its_new_process(inj, window):
    from vastkeep.soak.between import redis_away_windows

    record = {"family": "redis-restart", "injected": True, "at": T0, "back_at": T0 + 10, **inj}
    assert redis_away_windows([record]) == [window]


def test_a_redis_sent_sigterm_is_seen_to_stop_answering(tmp_path):
    """A real redis-server: it answers for a moment after SIGTERM; the first PING it fails marks it away."""
    import signal
    import subprocess
    import time

    from vastkeep.core.clock import SystemClock
    from vastkeep.soak.injector import stopped_answering
    from vastkeep.soak.stackrun import free_port

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.time() + 10
        while stopped_answering(url, SystemClock(), limit_s=0.2) is not None:  # until it is up
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.05)
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        gone = stopped_answering(url, SystemClock())
        assert gone is not None and sent <= gone < sent + 5
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("handovers", "held"), [
    ({"keepalive-shard-1": T0 - 25}, True),  # handed to host B 25 s ago: a vanish now is a crash loop
    ({"keepalive-shard-1": T0 - 61}, False),  # over a minute ago: a vanish now is moved at once
    ({"keepalive-shard-1": None}, False),  # never handed over
    ({"keepalive-shard-0": T0 - 5, "keepalive-shard-1": None}, False),  # another shard, not host B's
    (None, True),  # Redis busy: unknown, so wait
])
def test_a_host_b_fault_waits_a_minute_after_its_shard_was_handed_over(handovers, held):
    from vastkeep.soak.rules import handed_over_lately

    assert handed_over_lately(["keepalive-shard-1"], handovers, T0) is held
