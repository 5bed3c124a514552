"""Failover's pure decisions (``vastkeep.proxy.failplan``), table-driven."""

from __future__ import annotations

import pytest

from vastkeep.proxy.failplan import (
    FailoverPolicy,
    Strikes,
    Tracked,
    Why,
    ended_prompt,
    lost_error_body,
    lost_error_frame,
    resubmission,
    split_in_flight,
    status_frame,
    strike,
    verdict,
)

READY = {"status": "ready", "extra": {}}


@pytest.mark.parametrize(("record", "upstream_gone", "want"), [
    (READY, False, None),
    (READY, True, Why.UPSTREAM_REFUSED),
    ({"status": "ready", "extra": {"keepalive_lost_since": 1.5}}, False, Why.KEEPALIVE_LOST),
    ({"status": "ready", "extra": {"keepalive_lost_since": None}}, False, None),
    ({"status": "unhealthy", "extra": {"keepalive_lost_since": 2.0}}, False, Why.KEEPALIVE_LOST),
    ({"status": "unhealthy", "extra": {}}, False, Why.INSTANCE_GONE),
    ({"status": "destroyed"}, False, Why.INSTANCE_GONE),
    ({"status": "gone"}, True, Why.INSTANCE_GONE),
    ({"status": "loading"}, False, None),  # polling demoted it for a moment: not a verdict
    (None, False, Why.INSTANCE_GONE),  # the record is missing
])
def test_verdict(record, upstream_gone, want):
    assert verdict(record, upstream_gone) == want


P = FailoverPolicy(refusals=2, window_s=10.0)


@pytest.mark.parametrize(("events", "want"), [
    ([("connect", 0.0)], [False]),
    ([("connect", 0.0), ("connect", 1.0)], [False, True]),
    ([("ws-drop", 0.0), ("probe-refused", 0.2)], [False, True]),
    ([("timeout", 0.0), ("timeout", 1.0), ("timeout", 2.0)], [False, False, False]),  # slow is not gone
    ([("connect", 0.0), ("connect", 10.5)], [False, False]),  # outside the window
    ([("upstream", 0.0), ("timeout", 1.0), ("upstream", 2.0)], [False, False, True]),
])
def test_strikes(events, want):
    s = Strikes()
    assert [strike(s, kind, at, P) for kind, at in events] == want


def tracked(pid: str, consent: bool, done: bool = False) -> Tracked:
    return Tracked(pid, {"prompt": {}, "client_id": "c"}, consent, done, "c")


@pytest.mark.parametrize(("prompts", "resubmit", "lost"), [
    ([], [], []),
    ([tracked("a", True), tracked("b", True)], ["a", "b"], []),
    ([tracked("a", True, done=True), tracked("b", True)], ["b"], []),
    ([tracked("a", False), tracked("b", True), tracked("c", False, done=True)], ["b"], ["a"]),
])
def test_split_in_flight(prompts, resubmit, lost):
    got = split_in_flight(prompts)
    assert ([p.prompt_id for p in got[0]], [p.prompt_id for p in got[1]]) == (resubmit, lost)


def test_resubmission_keeps_the_clients_body_and_fixes_its_prompt_id():
    p = Tracked("pid-1", {"prompt": {"1": {}}, "client_id": "c", "extra_data": {"x": 1}}, True)
    assert resubmission(p) == {"prompt": {"1": {}}, "client_id": "c", "extra_data": {"x": 1},
                               "prompt_id": "pid-1"}


@pytest.mark.parametrize(("message", "want"), [
    ({"type": "executing", "data": {"node": None, "prompt_id": "p"}}, "p"),
    ({"type": "executing", "data": {"node": "3", "prompt_id": "p"}}, None),
    ({"type": "execution_success", "data": {"prompt_id": "p"}}, "p"),
    ({"type": "execution_error", "data": {"prompt_id": "p"}}, "p"),
    ({"type": "execution_interrupted", "data": {"prompt_id": "p"}}, "p"),
    ({"type": "execution_start", "data": {"prompt_id": "p"}}, None),
    ({"type": "status", "data": {"status": {}}}, None),
    ({"type": "executing", "data": "weird"}, None),
])
def test_ended_prompt(message, want):
    assert ended_prompt(message) == want


def test_what_the_client_is_told_names_the_failover_and_the_new_instance():
    frame = status_frame("1", "2", Why.KEEPALIVE_LOST, ["a"], ["b"])
    assert frame == {"type": "vastkeep_failover", "data": {"from_instance": "1", "to_instance": "2",
                                                           "reason": "keepalive-lost", "resubmitted": ["a"],
                                                           "lost": ["b"]}}
    err = lost_error_frame("b", "1", "2", "crash")
    assert err["type"] == "execution_error" and err["data"]["prompt_id"] == "b"
    assert "failover" in err["data"]["exception_message"] and "instance 2" in err["data"]["exception_message"]
    body = lost_error_body(["b"], "1", "2", "crash")
    assert body["error"] == "failover" and body["toInstance"] == "2" and body["lostPrompts"] == ["b"]
