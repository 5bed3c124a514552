"""Layer 5's pure decisions, table by table: the interval per state, the provider's word, when absence is
confirmed, ownership."""

from __future__ import annotations

import random

import pytest

from vastkeep.core.settings import load_settings
from vastkeep.polling.decide import (
    ABSENT_BEFORE_SHOW,
    ABSENT_CONFIRM_LISTINGS,
    GONE_REASON,
    REFRESH_RETRY_CAP_S,
    Absence,
    ShowAnswer,
    absence_verdict,
    apply_provider_word,
    is_ours,
    needs_port_validation,
    next_poll_interval,
    provider_signature,
    provider_verdict,
    refresh_retry_s,
)
from vastkeep.providers import Instance, VastInstance
from vastkeep.providers.vast_map import to_instance
from vastkeep.state import InstanceRecord

NOW = 1_767_225_600.0
S = load_settings(environ={}, env_file=False)
VALIDATED = {"success": True, "connection_url": "http://203.0.113.7:8188"}


def rec(status: str = "loading", *, leased_s: float | None = None, validated: bool = False,
        lost: bool = False) -> InstanceRecord:
    return InstanceRecord("7", status=status, leased_until=None if leased_s is None else NOW + leased_s,
                          port_validation=VALIDATED if validated else None,
                          connection_url=VALIDATED["connection_url"] if validated else None,
                          extra={"keepalive_lost_since": NOW - 5} if lost else {},
                          status_reason="keepalive: connection lost" if lost else None)


@pytest.mark.parametrize(("record", "expected"), [
    (None, 120.0),
    (rec("starting"), 30.0),
    (rec("loading"), 30.0),
    (rec("ready"), 180.0),
    (rec("ready", leased_s=60), 30.0),
    (rec("ready", leased_s=-1), 180.0),  # a lease that ran out is idle again
    (rec("unhealthy"), 120.0),
    (rec("unhealthy", leased_s=60), 30.0),
    (rec("failed"), 120.0),
    (rec("failed", leased_s=60), 120.0),  # never "active" once dead, lease or not
    (rec("gone"), 120.0),
    (rec("destroying"), 120.0),
    (rec("destroyed"), 120.0),
])
def test_interval_table(record, expected) -> None:
    assert next_poll_interval(record, NOW, S) == expected


def test_interval_follows_settings() -> None:
    s = load_settings(environ={"WARM_POOL_POLL_ACTIVE_INTERVAL_MS": "1000", "WARM_POOL_POLL_IDLE_INTERVAL_MS":
                               "5000", "WARM_POOL_POLL_INTERVAL_MS": "3000"}, env_file=False)
    assert [next_poll_interval(r, NOW, s) for r in (rec("loading"), rec("ready"), rec("failed"))] == [1, 5, 3]


def row(actual: str | None = "running", *, intended: str = "running", cur: str = "running",
        nxt: str = "running", msg: str | None = "success, running",
        label: str = "vastkeep:pool") -> Instance:
    """A Vast.ai row as the layers see it: parsed, then mapped through the seam (so the table also pins the
    Vast.ai mapping's fatal reasons down, byte for byte)."""
    return to_instance(VastInstance.from_api({"id": 7, "actual_status": actual, "intended_status": intended,
                                  "cur_state": cur, "next_state": nxt, "status_msg": msg, "label": label,
                                  "public_ipaddr": "203.0.113.7",
                                  "ports": {"8188/tcp": [{"HostPort": "41234"}]}}))


OCI = "Error response from daemon: OCI runtime create failed: runc create failed"


@pytest.mark.parametrize(("provider", "record", "confirmed", "expected"), [
    (row(None), rec("starting"), False, ("starting", None)),
    (row("created"), rec("starting"), False, ("starting", None)),
    (row("loading"), rec("starting"), False, ("loading", None)),
    (row("running"), rec("loading"), False, ("loading", "running at provider; port validation pending")),
    (row("running"), rec("loading", validated=True), False, ("ready", None)),
    (row("running"), rec("ready", validated=True), False, ("ready", None)),
    (row("running"), rec("unhealthy", validated=True), False,
     ("loading", "running at provider; port validation pending")),
    (row("exited"), rec("ready", validated=True), False, ("failed", "container exited")),
    (row("offline"), rec("ready", validated=True), False, ("failed", "host offline")),
    (row("running", msg=OCI), rec("loading"), False, ("failed", f"provider error: {OCI}")),
    (row("loading", msg="OCI runtime exec failed"), rec("loading"), False,
     ("failed", "provider error: OCI runtime exec failed")),
    (row("stopped", intended="stopped", cur="stopped", nxt="stopped"), rec("ready", validated=True), False,
     ("failed", "outbid")),
    (row("running", intended="stopped"), rec("ready", validated=True), False,
     ("failed", "outbid: the provider is stopping it")),
    (row("running", nxt="stopped"), rec("ready", validated=True), False,
     ("failed", "outbid: the provider is stopping it")),
    (row("unknown"), rec("ready", validated=True), False, ("unhealthy", "provider status unknown")),
    (row("rebooting"), rec("ready", validated=True), False, ("unhealthy", "provider status rebooting")),
    (None, rec("ready", validated=True), False, ("ready", None)),  # listing lag: unchanged
    (None, rec("loading"), True, ("gone", GONE_REASON)),
    (None, rec("ready", validated=True), True, ("gone", GONE_REASON)),
    # terminal and hands-off records keep their status whatever the provider says
    (row("running"), rec("failed", validated=True), False, ("failed", None)),
    (row("running"), rec("gone"), False, ("gone", None)),
    (None, rec("destroying"), True, ("destroying", None)),
    (row("running"), rec("destroyed"), False, ("destroyed", None)),
    # Layer 4 lost ComfyUI: running at the provider is not ready (never "loading": it would count as warming)
    (row("running"), rec("unhealthy", validated=True, lost=True), False,
     ("unhealthy", "keepalive: connection lost")),
    (row("running"), rec("ready", validated=True, lost=True), False,
     ("unhealthy", "keepalive: connection lost")),
    (row("running"), rec("unhealthy", lost=True), False, ("unhealthy", "keepalive: connection lost")),
    (row("offline"), rec("unhealthy", validated=True, lost=True), False, ("failed", "host offline")),
    (row("loading"), rec("unhealthy", validated=True, lost=True), False, ("loading", None)),
])
def test_provider_verdict_table(provider, record, confirmed, expected) -> None:
    assert tuple(provider_verdict(provider, record, absence_confirmed=confirmed, now=NOW)) == expected


A = ShowAnswer


@pytest.mark.parametrize(("absent", "answer", "expected"), [
    # listing lag: nothing is asked, nothing decided, whatever an old answer said
    (0, None, Absence.WAIT), (1, None, Absence.WAIT), (1, A.NOT_FOUND, Absence.WAIT),
    (1, A.NO_RECORD, Absence.WAIT),
    # missing from two well-formed listings: ask show once
    (2, None, Absence.ASK), (7, None, Absence.ASK),
    # asked and not answered yet, or answered with nothing (timeout, 5xx, empty body): wait, asked again later
    (2, A.ASKED, Absence.WAIT), (5, A.ASKED, Absence.WAIT),
    (2, A.ERROR, Absence.WAIT), (9, A.ERROR, Absence.WAIT),
    # show found it: listing lag, the record stays
    (2, A.FOUND, Absence.PRESENT), (9, A.FOUND, Absence.PRESENT),
    # a real 404: confirmed
    (2, A.NOT_FOUND, Absence.GONE), (4, A.NOT_FOUND, Absence.GONE),
    # 200 {"instances": null}: never a verdict alone; confirmed only with a third missing listing
    (2, A.NO_RECORD, Absence.WAIT), (3, A.NO_RECORD, Absence.GONE), (6, A.NO_RECORD, Absence.GONE),
    # an answer this code does not know is no verdict
    (5, "bogus", Absence.WAIT),
])
def test_absence_verdict_table(absent, answer, expected) -> None:
    assert absence_verdict(absent, answer) is expected


def test_absence_thresholds_are_ordered() -> None:
    assert 2 <= ABSENT_BEFORE_SHOW < ABSENT_CONFIRM_LISTINGS


@pytest.mark.parametrize(("provider", "record", "expected"), [
    (row("running"), rec("loading"), True),
    (row("running"), rec("starting"), True),
    (row("running"), rec("ready", validated=True), False),
    (row("running"), rec("unhealthy", validated=True), True),
    (row("running"), rec("unhealthy", validated=True, lost=True), False),  # Layer 4 watches it
    (row("loading"), rec("loading"), False),
    (row("running", msg=OCI), rec("loading"), False),
    (row("running"), rec("failed"), False),
    (None, rec("loading"), False),
])
def test_layer3_runs_only_for_running_unvalidated(provider, record, expected) -> None:
    assert needs_port_validation(provider, record) is expected


@pytest.mark.parametrize(("label", "prefix", "expected"), [
    ("vastkeep:pool", "vastkeep", True),
    ("vastkeep:", "vastkeep", True),
    ("vastkeep:a:b", "vastkeep", True),
    ("vastkeep", "vastkeep", False),
    ("vastkeeper:pool", "vastkeep", False),
    ("other:pool", "vastkeep", False),
    ("pool-comfy-01", "vastkeep", False),
    (None, "vastkeep", False),
    ("team1:pool", "team1", True),
])
def test_is_ours(label, prefix, expected) -> None:
    assert is_ours(label, prefix) is expected


def test_signature_changes_with_status_and_address_only() -> None:
    base = provider_signature(row("running"))
    assert provider_signature(row("running")) == base
    assert provider_signature(row("offline")) != base
    assert provider_signature(row("running", nxt="stopped")) != base


# ── waking the warm pool's reconciler (pool_wake_at) ────────────────────────
@pytest.mark.parametrize(("name", "status", "label", "extra", "want"), [
    ("failed instance of ours: now", "failed", "vastkeep:default:0", {}, (1_000.0,)),
    ("gone instance of ours: now", "gone", "vastkeep:default:3", {}, (1_000.0,)),
    ("fresh keepalive loss: at once (the loss time, one wake per loss) and at the grace's end", "unhealthy",
     "vastkeep:default:0", {"keepalive_lost_since": 990.0}, (990.0, 1_110.0)),
    ("a loss stamped by a clock a little ahead: at once", "unhealthy", "vastkeep:default:0",
     {"keepalive_lost_since": 1_001.5}, (1_001.5, 1_121.5)),
    ("keepalive loss past the wake window: at the grace's end", "unhealthy", "vastkeep:default:0",
     {"keepalive_lost_since": 930.0}, (1_050.0,)),
    ("keepalive loss past the grace: now", "ready", "vastkeep:default:0", {"keepalive_lost_since": 800.0},
     (1_000.0,)),
    ("keepalive loss far off: left to the beat", "ready", "vastkeep:default:0",
     {"keepalive_lost_since": 1_000.0 + 10_000}, ()),
    ("healthy ready: nothing", "ready", "vastkeep:default:0", {}, ()),
    ("not ours: nothing", "failed", "someone-else", {}, ()),
    ("ours but not the pool's: nothing", "failed", "vastkeep:chaos", {}, ()),
    ("another pool's: nothing", "failed", "vastkeep:other:0", {}, ()),
    ("being destroyed: nothing", "destroying", "vastkeep:default:0", {}, ()),
])
def test_pool_wake_at(name, status, label, extra, want):
    from vastkeep.polling.decide import pool_wake_at  # noqa: PLC0415
    from vastkeep.state import InstanceRecord  # noqa: PLC0415

    rec = InstanceRecord("1", status=status, label=label, extra=extra)
    assert pool_wake_at(rec, 1_000.0, 120.0, "vastkeep:default:") == want


@pytest.mark.parametrize(("failures", "age_s", "low", "high"), [
    (1, 1.0, 1.0, 2.0),     # the first retry: the snapshot's age + up to one more age
    (2, 1.0, 1.0, 3.0),
    (4, 5.0, 5.0, 45.0),
    (30, 5.0, 5.0, 5.0 + REFRESH_RETRY_CAP_S),  # capped
    (1, 30.0, 30.0, 60.0),
    (9, 90.0, 90.0, 180.0),  # an age above the cap: the cap grows to it
    (0, 1.0, 1.0, 2.0),      # a caller's zero is read as the first failure
])
def test_refresh_retry_is_never_faster_than_the_cadence_and_is_jittered(failures, age_s, low, high) -> None:
    rng = random.Random(7)
    delays = [refresh_retry_s(failures, age_s, rng) for _ in range(2000)]
    assert all(low <= d <= high for d in delays), (min(delays), max(delays))
    assert len({round(d, 6) for d in delays}) > 1900  # spread: workers that failed together retry apart
    assert max(delays) - min(delays) > 0.9 * (high - low)


# ── applying the provider's word to a record (apply_provider_word, pure) ───
def test_a_moved_address_forgets_the_proven_port_and_fills_only_missing_facts() -> None:
    cur = rec("ready", validated=True)
    cur.public_ip, cur.ports, cur.label, cur.price_per_hour = "198.51.100.1", {"8188/tcp": 1}, "mine", 0.9
    moved = row("running")  # 203.0.113.7, 8188/tcp → 41234, label vastkeep:pool
    pending = "running at provider; port validation pending"
    assert apply_provider_word(cur, moved, False, 5.0, NOW) == ("ready", "loading", pending)
    assert (cur.public_ip, cur.ports, cur.connection_url, cur.port_validation) == (
        "203.0.113.7", {"8188/tcp": 41234}, None, None)
    assert (cur.label, cur.price_per_hour) == ("mine", 0.9)
    assert (cur.vast_status, cur.provider_seen_at) == ("running", 5.0)


@pytest.mark.parametrize(("provider", "status", "confirmed", "want"), [
    (None, "ready", False, None),                      # unlisted, not confirmed: nothing changes
    (None, "ready", True, ("ready", "gone", "gone at provider: no_such_instance")),
    ("offline", "loading", False, ("loading", "failed", "host offline")),
    ("loading", "starting", False, ("starting", "loading", None)),
])
def test_apply_provider_word_table(provider: str | None, status: str, confirmed: bool, want: object) -> None:
    cur = rec(status)
    assert apply_provider_word(cur, row(provider) if provider else None, confirmed, None, NOW) == want
    if want is not None and want[1] in ("failed", "gone"):  # type: ignore[index]
        assert cur.error == want[2]  # type: ignore[index]
