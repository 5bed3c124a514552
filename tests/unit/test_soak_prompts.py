"""The soak's judgement of prompts sent through the endpoint: a failed prompt is a client-visible failure,
unless a fault the failover cannot hide quickly (a hang, a silent host) held its instance at the time."""

from __future__ import annotations

from vastkeep.soak.counters import ClientFailure, Excused, judge_clients
from vastkeep.soak.plan import FAMILIES


def line(op: str, t: float, inst: str = "7", took_s: float = 1.0) -> dict[str, object]:
    return {"op": op, "t": t, "t0": t, "instance": inst, "lease": "abc", "took_s": took_s}


def inj(family: str, at: float, inst: str = "7") -> dict[str, object]:
    return {"family": family, "at": at, "target": inst, "injected": True, "restored_at": at + 20}


def test_failed_prompts_are_client_visible_failures_unless_a_slow_fault_held_the_instance():
    lines = [line("prompt-ok", 10), line("prompt-fail", 100), line("prompt-fail", 200, took_s=90),
             line("prompt-fail", 400)]
    injections = [inj("comfy-hang", 250), inj("comfy-crash", 395)]
    v = judge_clients(lines, injections)
    assert v["failures"][ClientFailure.PROMPT_FAILED] == 2  # one with no fault, one the failover must hide
    assert v["expected"][Excused.PROMPT_FAIL_UNDER_FAULT] == 1  # the hang struck while it waited
    assert v["ops"]["prompt-ok"] == 1


def test_a_comfyui_crash_is_observed_by_the_endpoints_failover_too():
    fam = FAMILIES["comfy-crash"]
    assert fam.target == "instance" and "failover-done" in fam.observed_by and fam.restorable


def test_a_release_answered_by_another_instance_is_right_after_a_fault_moved_the_lease():
    release = {"op": "release", "t": 50, "t0": 50, "instance": "7", "lease": "abc", "status": 200,
               "answered_instance": "9"}
    assert judge_clients([release], [inj("comfy-crash", 40)])["failures"][ClientFailure.RELEASE_WRONG] == 0
    assert judge_clients([release], [])["failures"][ClientFailure.RELEASE_WRONG] == 1


def test_a_prompt_that_failed_while_redis_was_away_is_expected():
    # a 30-minute soak: a 90 s prompt wait across a 60 s Redis outage (the endpoint finds its lease in Redis)
    away = {"family": "redis-away", "at": 1000, "target": "redis", "injected": True, "restored_at": 1060,
            "back_at": 1060}
    lines = [line("prompt-fail", 990, took_s=90), line("prompt-fail", 1200, took_s=90)]
    v = judge_clients(lines, [away])
    assert v["expected"][Excused.PROMPT_FAIL_UNDER_FAULT] == 1
    assert v["failures"][ClientFailure.PROMPT_FAILED] == 1  # long after Redis was back: a failure
