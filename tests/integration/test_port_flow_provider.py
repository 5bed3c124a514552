"""ports.flow when the Vast.ai side fails or forgets: real redis-server, real simulator, real sockets.

- A pool sweep whose one ``list_instances`` refresh fails (rejected key, or 429/5xx after the client's
  retries) still validates every record that already has its address; only the records that needed the
  refresh are skipped, and the result says why (never raised, never a secret).
- An instance Vast.ai no longer knows (``show_instance`` → NotFound) is marked "gone" with the reason,
  one ``instance-status`` event is emitted, and a second run writes and emits nothing new.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pytest

from vastkeep.core.backoff import BackoffPolicy
from vastkeep.core.clock import FakeClock
from vastkeep.core.settings import Secret
from vastkeep.ports import flow as port_flow
from vastkeep.ports.probe import ProbeConfig
from vastkeep.ports.validator import PortValidator
from vastkeep.providers.http import RetryPolicy
from vastkeep.providers.vast import VastClient
from vastkeep.state.store import InstanceRecord, StateStore

GONE = "gone at provider: no_such_instance"
FAST_RETRY = RetryPolicy(max_attempts=2, backoff=BackoffPolicy(base_s=0.01, cap_s=0.02))


@pytest.fixture
def validator() -> PortValidator:
    config = ProbeConfig(tcp_timeout_s=0.3, http_timeout_s=0.5, allow_loopback=True)
    return PortValidator(config, concurrency=20)


def client(sim: Any) -> VastClient:
    """The configured (old) key, fake clock for the retry sleeps, seeded jitter."""
    return VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(2.0, 5.0), retry=FAST_RETRY,
                      clock=FakeClock(), rng=random.Random(7))


def two_loading_records(sim: Any, store: StateStore) -> tuple[str, str]:
    """A: a running sim instance whose record has its address; B: a running one whose record has none."""
    a = sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)["id"]
    b = sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)["id"]
    with client(sim) as vast:
        vi = vast.show_instance(a)
    assert vi.public_ip and vi.ports
    store.put_instance(InstanceRecord(instance_id=str(a), status="loading", vast_status="running",
                                      public_ip=vi.public_ip, ports=dict(vi.ports)))
    store.put_instance(InstanceRecord(instance_id=str(b), status="loading"))
    return str(a), str(b)


def test_rejected_key_on_refresh_still_validates_records_with_an_address(sim, store, events, validator,
                                                                         caplog) -> None:
    caplog.set_level(logging.INFO)
    a, b = two_loading_records(sim, store)
    sim.control.invalidate_token("vast")
    with client(sim) as vast:
        result = port_flow.validate_pool(store, events, validator, vast=vast)
    assert result["checked"] == 1 and result["passed"] == 1 and result["failed"] == 0
    assert result["skipped"] == 1 and result["skipped_ids"] == [b]
    err = result["refresh_error"]
    assert err["error"] == "AuthError" and err["status"] == 401 and err["transient"] is False
    assert store.get_instance(a).status == "ready" and store.get_instance(a).connection_url
    rec_b = store.get_instance(b)
    assert rec_b.status == "loading" and rec_b.port_validation is None  # nothing written for B
    assert [e.kind for e in events.latest(10)] == ["port-validated"]
    assert any("Vast.ai refresh failed (AuthError" in m and "1 instance(s)" in m for m in caplog.messages)
    blob = json.dumps(result) + "\n".join(caplog.messages)
    assert sim.api_key not in blob


@pytest.mark.parametrize("status,error", [(503, "ServerError"), (429, "RateLimited")])
def test_transient_refresh_failure_after_retries_skips_only_records_needing_it(sim, store, events, validator,
                                                                               status, error) -> None:
    a, b = two_loading_records(sim, store)
    sim.control.api_fault("vast", status, FAST_RETRY.max_attempts, path_contains="/instances")
    with client(sim) as vast:
        result = port_flow.validate_pool(store, events, validator, vast=vast)
    assert result["refresh_error"]["error"] == error and result["refresh_error"]["transient"] is True
    assert result["passed"] == 1 and result["skipped_ids"] == [b]
    assert store.get_instance(a).status == "ready" and store.get_instance(b).status == "loading"
    # the provider recovers: the next sweep refreshes B and validates it too, no refresh_error
    with client(sim) as vast:
        again = port_flow.validate_pool(store, events, validator, vast=vast)
    assert "refresh_error" not in again and again["checked"] == 2 and again["passed"] == 2
    assert store.get_instance(b).status == "ready"


def test_sweep_follows_an_address_reassigned_at_the_provider(sim, store, events, validator,
                                                              port_servers) -> None:
    """A record with an old address and SSH route: the sweep's one listing updates it; the new one is probed.

    The old address answers like ComfyUI, so probing it would "pass": only the refresh keeps the sweep honest.
    """
    new = sim.control.create_instance(running=True, ssh=True, ssh_proxy=True)
    with client(sim) as vast:
        vi = vast.show_instance(new["id"])
    assert vi.public_ip and vi.ports and vi.ssh_host and vi.ssh_port
    old = port_servers.open("ok")
    iid = str(new["id"])
    store.put_instance(InstanceRecord(instance_id=iid, status="ready", vast_status="running",
                                      public_ip=old.ip, ports={"8188/tcp": old.port},
                                      ssh_proxy_host="127.0.0.2", ssh_proxy_port=2200, connection_url=f"http://{old.ip}:{old.port}"))
    unchanged = sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)
    with client(sim) as vast:
        same = vast.show_instance(unchanged["id"])
    store.put_instance(InstanceRecord(instance_id=str(unchanged["id"]), status="loading",
                                      public_ip=same.public_ip, ports=dict(same.ports)))
    sim.control.clear_requests()
    with client(sim) as vast:
        result = port_flow.validate_pool(store, events, validator, vast=vast)
    assert result == {"checked": 2, "passed": 2, "failed": 0, "failed_ids": [], "firewall": 0}
    listed = [r["path"] for r in sim.control.requests_seen(service="vast")]
    assert listed == ["/api/v0/instances"]  # one call for the whole sweep
    assert old.accepted == 0  # the stale address was never probed
    rec = store.get_instance(iid)
    assert (rec.public_ip, rec.ports) == (vi.public_ip, dict(vi.ports))
    assert (rec.ssh_proxy_host, rec.ssh_proxy_port) == (vi.ssh_host, vi.ssh_port)
    assert rec.connection_url.startswith(f"http://{vi.public_ip}:") and rec.status == "ready"
    assert store.get_instance(str(unchanged["id"])).status == "ready"
    # the provider fails next time: every record is still probed at its stored (now current) address
    sim.control.invalidate_token("vast")
    with client(sim) as vast:
        again = port_flow.validate_pool(store, events, validator, vast=vast)
    assert again["checked"] == 2 and again["passed"] == 2
    assert again["skipped"] == 0 and again["refresh_error"]["error"] == "AuthError"


def test_instance_gone_at_provider_is_marked_gone_once(sim, store, events, validator) -> None:
    iid = sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)["id"]
    store.put_instance(InstanceRecord(instance_id=str(iid), status="loading"))
    with client(sim) as vast:
        assert vast.destroy(iid) is True  # destroyed behind our back: Vast.ai answers no_such_instance now
        result = port_flow.validate_instance(store, events, validator, str(iid), vast=vast)
        assert result["success"] is False and result["gone_at_provider"] is True
        assert result["error"] == GONE and result["status"] == "gone"
        rec = store.get_instance(str(iid))
        assert rec.status == "gone" and rec.error == GONE
        [ev] = events.latest(10)
        assert ev.kind == "instance-status"
        assert ev.fields == {"instance_id": str(iid), "old": "loading", "new": "gone",
                             "reason": GONE}
        # the next poll / a redelivery: same result, nothing new written or emitted
        raw = store.redis.get(store.keys.instance(str(iid)))
        assert port_flow.validate_instance(store, events, validator, str(iid), vast=vast) == result
        assert store.redis.get(store.keys.instance(str(iid))) == raw
        assert [e.kind for e in events.latest(10)] == ["instance-status"]


def test_gone_at_provider_leaves_a_destroying_record_alone(sim, store, events) -> None:
    """The destroy flow's own record is not turned "failed" by a concurrent validation."""
    store.put_instance(InstanceRecord(instance_id="424242", status="destroying"))
    raw = store.redis.get(store.keys.instance("424242"))
    rec = port_flow.mark_gone(store, events, "424242")
    assert rec.status == "destroying" and store.redis.get(store.keys.instance("424242")) == raw
    assert events.latest(10) == []
    assert port_flow.mark_gone(store, events, "no-such-record") is None
