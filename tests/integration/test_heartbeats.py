"""Heartbeats: one hash + an expiry sorted set (no SCAN, no key per process); expiry honoured per record."""

from __future__ import annotations

from vastkeep.core.clock import FakeClock
from vastkeep.monitoring import check_workers, run_checks
from vastkeep.state.heartbeats import clear_heartbeat, read_heartbeats, write_heartbeat
from vastkeep.state.keys import Keys


def test_expired_heartbeats_are_not_read_and_are_pruned_by_the_next_write(redis_client) -> None:
    keys, clock = Keys(), FakeClock()
    write_heartbeat(redis_client, keys, clock, "control@gone", kind="worker", ttl_ms=1_000)
    write_heartbeat(redis_client, keys, clock, "daemon", kind="daemon", ttl_ms=600_000)
    assert set(read_heartbeats(redis_client, keys, clock)) == {"control@gone", "daemon"}
    clock.sleep(5)
    assert set(read_heartbeats(redis_client, keys, clock)) == {"daemon"}
    assert read_heartbeats(redis_client, keys, clock, ["control@gone", "daemon"]).keys() == {"daemon"}
    assert read_heartbeats(redis_client, keys, clock, ["daemon"], max_age_s=1).keys() == set()
    write_heartbeat(redis_client, keys, clock, "ssh@h", kind="worker")
    assert redis_client.hexists(keys.heartbeats(), "daemon")
    assert not redis_client.hexists(keys.heartbeats(), "control@gone")
    assert redis_client.zscore(keys.heartbeat_expiry(), "control@gone") is None
    assert not list(redis_client.scan_iter(match=f"{keys.prefix}:heartbeat:*"))  # no key per process
    clear_heartbeat(redis_client, keys, "ssh@h")
    assert check_workers(redis_client, keys, clock).detail == "no worker has a fresh heartbeat"


def test_the_shared_checks_say_what_vastkeep_check_prints(redis_client) -> None:
    keys, clock = Keys(), FakeClock()
    write_heartbeat(redis_client, keys, clock, "control@h", kind="worker")
    checks = run_checks(redis_client, keys, clock, expected_workers=["control@h", "ssh@h"])
    assert [(c.name, c.ok, c.detail) for c in checks] == [
        ("redis", True, "redis answers PING"),
        ("workers", False, "no fresh heartbeat from worker(s): ssh@h")]
    assert run_checks(None, keys, clock)[0].ok is False
