"""The enums of ssh, supervision and tokens serialise as the plain strings stored, emitted and answered."""

from __future__ import annotations

import json

import pytest

from vastkeep.ssh import RunResult, StopReason, wants_collector
from vastkeep.supervision import Action, DaemonRecord, DaemonStatus, ResetOutcome
from vastkeep.tokens import TokenStatus, UpdateRefusal, classify


@pytest.mark.parametrize(("member", "wire"), [
    (DaemonStatus.REGISTERED, "registered"), (DaemonStatus.STARTING, "starting"),
    (DaemonStatus.RUNNING, "running"), (DaemonStatus.BACKOFF, "backoff"), (DaemonStatus.FAILED, "failed"),
    (Action.RESTART, "restart"), (ResetOutcome.ALREADY_RESET, "already-reset"),
    (TokenStatus.UNCONFIGURED, "unconfigured"), (UpdateRefusal.UNVERIFIED, "unverified"),
    (StopReason.HOLD_EXPIRED, "hold-expired"), (StopReason.LEASE_LOST, "lease-lost"),
])
def test_each_member_is_its_old_string_in_json(member: str, wire: str) -> None:
    assert member == wire
    assert json.dumps({"v": member}) == json.dumps({"v": wire})


def test_a_stored_supervision_record_reads_and_writes_back_byte_for_byte() -> None:
    stored = {"id": "keepalive-shard-0", "name": "KeepaliveShard-0", "status": "backoff", "restartCount": 2,
              "consecutiveCrashes": 1, "lastStartTime": 10.0, "lastCrashTime": 12.5, "lastError": "stale",
              "nextRestartAt": 22.5, "runningSince": None, "crashTimes": [12.5], "alertedAt": None}
    rec = DaemonRecord.from_json(stored)
    assert rec.status is DaemonStatus.BACKOFF
    assert json.dumps(rec.to_json()) == json.dumps(stored)


def test_an_unknown_or_malformed_stored_record_is_handled() -> None:
    assert DaemonRecord.from_json({"id": "x", "status": "exploded"}).status is DaemonStatus.REGISTERED
    with pytest.raises(TypeError):
        DaemonRecord.from_json({"id": "x", "crashTimes": "12.5"})


def test_token_results_and_collector_results_carry_the_old_words() -> None:
    result = classify("vastai", tested_at="2026-01-01T00:00:00+00:00", status=401)
    assert json.loads(json.dumps(result))["status"] == "invalid"
    assert json.loads(json.dumps(RunResult("5", stopped=StopReason.STOP).to_dict()))["stopped"] == "stop"


@pytest.mark.parametrize(("status", "while_ready", "wanted"), [
    ("starting", False, True), ("loading", False, True), ("ready", False, False), ("ready", True, True),
    ("unhealthy", True, False), ("gone", True, False), (None, True, False),
])
def test_collector_wanted_for_provisioning_statuses_and_ready_on_request(
        status: str | None, while_ready: bool, wanted: bool) -> None:
    assert wants_collector(status, while_ready) is wanted
