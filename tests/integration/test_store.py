"""StateStore against a real redis-server: records, fenced compare-and-set, pool, tokens, secrets."""

from __future__ import annotations

import json
import time

import pytest
import redis
from redis.backoff import FullJitterBackoff

from tests.fixtures.helpers import race_threads, wait_for
from vastkeep.core.errors import NotFound, PermanentError, StaleFence
from vastkeep.core.settings import Secret
from vastkeep.state.connection import connect
from vastkeep.state.keys import Keys
from vastkeep.state.leases import Lease, LeaseManager
from vastkeep.state.store import InstanceRecord, PoolSettings, StateStore


@pytest.fixture
def store(redis_client, clock) -> StateStore:
    return StateStore(redis_client, Keys(), clock, default_desired_size=2)


@pytest.fixture
def leases(redis_client, clock) -> LeaseManager:
    return LeaseManager(redis_client, Keys(), clock)


def record(iid: str = "12345", **kw) -> InstanceRecord:
    return InstanceRecord(instance_id=iid, **kw)




def test_put_get_list_round_trip(store, redis_client, clock):
    rec = record(status="loading", ports={"8188/tcp": 41234}, public_ip="203.0.113.7", price_per_hour=0.4123,
                 port_validation={"success": False, "candidates": []}, extra={"k": [1, 2]})
    stored = store.put_instance(rec)
    assert stored.created_at == clock.now() and stored.updated_at == clock.now()
    assert store.get_instance("12345") == stored
    assert json.loads(redis_client.get("vastkeep:instance:12345"))["ports"] == {"8188/tcp": 41234}
    assert redis_client.smembers("vastkeep:instances") == {"12345"}
    clock.advance(5)
    store.put_instance(record("999"))
    assert [r.instance_id for r in store.list_instances()] == ["12345", "999"]  # oldest first
    assert store.get_instance("nope") is None


def test_a_record_stored_before_the_provider_seam_is_still_read(store, redis_client, clock):
    """Old code stored ``ssh_host``/``ssh_port``/``dph_total``: they read as the neutral fields, the status
    view keeps its names, and the next write stores the neutral names only."""
    old = {"instance_id": "4242", "status": "ready", "vast_status": "running", "public_ip": "203.0.113.7",
           "ssh_host": "ssh5.example", "ssh_port": 15458, "ports": {"22/tcp": 41231}, "dph_total": 0.412,
           "label": "vastkeep:default:0", "fence": 0, "extra": {}}
    redis_client.set("vastkeep:instance:4242", json.dumps(old))
    redis_client.sadd("vastkeep:instances", "4242")
    rec = store.get_instance("4242")
    assert (rec.ssh_proxy_host, rec.ssh_proxy_port, rec.price_per_hour) == ("ssh5.example", 15458, 0.412)
    assert [r.instance_id for r in store.list_instances()] == ["4242"]
    view = rec.to_status_dict()
    assert (view["sshHost"], view["sshPort"], view["dphTotal"]) == ("ssh5.example", 15458, 0.412)
    assert rec.provider_status == rec.vast_status == view["vastStatus"] == "running"  # the old name reads too
    store.update_instance("4242", {"label": "vastkeep:default:1"})
    stored = json.loads(redis_client.get("vastkeep:instance:4242"))
    assert stored["ssh_proxy_host"] == "ssh5.example" and stored["price_per_hour"] == 0.412
    assert stored["provider_status"] == "running"
    assert not {"ssh_host", "ssh_port", "dph_total", "vast_status"} & set(stored)
    store.update_instance("4242", {"vast_status": "exited"})  # an old caller's field name
    assert store.get_instance("4242").provider_status == "exited"


def test_status_dict_has_the_guides_fields(store, clock):
    rec = store.put_instance(record(status="ready", connection_url="http://1.2.3.4:8188",
                                    last_heartbeat=clock.now(), leased_until=None))
    d = rec.to_status_dict()
    assert {k: d[k] for k in ("contractId", "status", "connectionUrl", "lastHeartbeat", "leasedUntil")} == {
        "contractId": "12345", "status": "ready", "connectionUrl": "http://1.2.3.4:8188",
        "lastHeartbeat": "2026-01-01T00:00:00.000Z", "leasedUntil": None}
    json.dumps(d)


def test_records_are_validated_and_secrets_refused(store):
    with pytest.raises(ValueError, match="unknown instance status"):
        record(status="running")
    store.put_instance(record())
    with pytest.raises(ValueError, match="unknown instance status"):
        store.update_instance("12345", {"status": "bogus"})
    with pytest.raises(ValueError, match="cannot change"):
        store.update_instance("12345", {"fence": 99})
    with pytest.raises(ValueError, match="a Secret") as err:
        store.update_instance("12345", {"extra": {"token": Secret("hf_live_abc")}})
    assert "hf_live_abc" not in str(err.value)
    with pytest.raises(NotFound):
        store.update_instance("missing", {"status": "ready"})


def test_unfenced_update_merges_and_keeps_the_fence(store, clock):
    store.put_instance(record(status="starting", label="a"))
    clock.advance(3)
    rec = store.update_instance("12345", {"status": "loading", "public_ip": "203.0.113.9"})
    assert (rec.status, rec.public_ip, rec.label, rec.fence) == ("loading", "203.0.113.9", "a", 0)
    assert rec.updated_at == clock.now() and rec.created_at == clock.now() - 3
    assert store.get_instance("12345") == rec


def test_fenced_write_under_the_current_grant_succeeds_and_stores_the_fence(store, leases):
    store.put_instance(record())
    lease = leases.acquire("instance:12345", "worker-a", 5_000)
    rec = store.update_instance("12345", {"status": "ready"}, lease=lease)
    assert rec.fence == lease.fence and store.get_instance("12345").fence == lease.fence


def test_holder_that_outlived_its_ttl_has_its_writes_refused(store, leases):
    store.put_instance(record(status="loading"))
    stale = leases.acquire("instance:12345", "slow", 60)
    assert store.update_instance("12345", {"status": "ready"}, lease=stale).fence == stale.fence
    wait_for(lambda: leases.current("instance:12345") is None)
    # Lapsed, nobody newer yet: refused all the same.
    with pytest.raises(StaleFence) as err:
        store.update_instance("12345", {"status": "failed"}, lease=stale)
    assert err.value.instance_id == "12345" and err.value.fence == stale.fence
    fresh = leases.acquire("instance:12345", "fast", 5_000)
    store.update_instance("12345", {"status": "unhealthy"}, lease=fresh)
    for attempt in ({"status": "failed"}, {"error": "late write"}):
        with pytest.raises(StaleFence):
            store.update_instance("12345", attempt, lease=stale)
    with pytest.raises(StaleFence):
        store.delete_instance("12345", lease=stale)
    rec = store.get_instance("12345")
    assert (rec.status, rec.error, rec.fence) == ("unhealthy", None, fresh.fence)


def test_an_older_fence_is_refused_even_while_it_holds_the_lease_key(store, leases, redis_client):
    store.put_instance(record())
    leases.release(leases.acquire("instance:12345", "w0", 5_000))
    lease = leases.acquire("instance:12345", "w1", 5_000)
    assert lease.fence == 2
    store.update_instance("12345", {"status": "ready"}, lease=lease)
    # The counter is lost (say, an operator deleted it): the next grant gets fence 1 < 2 and, although
    # it holds the lease key, must not overwrite what fence 2 wrote.
    redis_client.delete("vastkeep:lease:instance:12345", "vastkeep:fence:instance:12345")
    lower = leases.acquire("instance:12345", "w2", 5_000)
    assert lower.fence == 1
    with pytest.raises(StaleFence, match="written under fence 2"):
        store.update_instance("12345", {"status": "failed"}, lease=lower)
    impostor = Lease(lower.name, "someone-else", lower.fence, 5_000, 0.0)
    with pytest.raises(StaleFence, match="lapsed or passed"):
        store.update_instance("12345", {"status": "failed"}, lease=impostor)
    assert store.get_instance("12345").status == "ready"


def test_fences_of_different_lease_names_are_never_compared(store, leases):
    """Each lease name counts on its own: a high ``ports-sweep`` fence must not lock out ``instance:<id>``."""
    store.put_instance(record(status="loading"))
    for i in range(5):
        leases.release(leases.acquire("ports-sweep", f"old-sweep-{i}", 5_000))
    sweep = leases.acquire("ports-sweep", "sweeper", 5_000)
    assert sweep.fence == 6
    rec = store.update_instance("12345", {"error": "sweep wrote"}, lease=sweep)
    assert (rec.fence_name, rec.fence) == ("ports-sweep", 6)
    owner = leases.acquire("instance:12345", "owner-a", 5_000)
    assert owner.fence == 1
    rec = store.update_instance("12345", {"status": "ready"}, lease=owner)  # the live holder: accepted
    assert (rec.status, rec.fence_name, rec.fence) == ("ready", "instance:12345", 1)
    # the sweep still holds its grant: its fence 6 is not compared with instance:12345's 1 either way
    assert store.update_instance("12345", {"error": None}, lease=sweep).fence_name == "ports-sweep"
    # an unfenced write keeps the last fenced writer's mark
    assert (store.update_instance("12345", {"label": "x"}).fence_name,
            store.get_instance("12345").fence) == ("ports-sweep", 6)
    # same-name fencing still holds: the sweep's lapsed grant is refused, as is a lower fence of its name
    leases.release(sweep)
    with pytest.raises(StaleFence, match="lapsed or passed"):
        store.update_instance("12345", {"status": "failed"}, lease=sweep)
    leases.redis.delete("vastkeep:fence:ports-sweep")  # counter lost: the next grant is fence 1 < 6
    lower = leases.acquire("ports-sweep", "sweeper-2", 5_000)
    with pytest.raises(StaleFence, match="written under fence 6 of the same lease"):
        store.update_instance("12345", {"status": "failed"}, lease=lower)
    assert store.update_instance("12345", {"status": "unhealthy"}, lease=owner).fence_name == "instance:12345"
    # ... and once another name fenced it last, the record no longer carries ports-sweep's 6
    assert store.update_instance("12345", {"status": "failed"}, lease=lower).fence == 1


@pytest.mark.parametrize("stored", [
    "{not json", "[1, 2]", '{"instance_id": "7", "ports": {"8188/tcp": null}}',
    '{"instance_id": "7", "status": "running"}', '{"instance_id": "7", "created_at": "yesterday"}',
    '{"instance_id": "7", "last_heartbeat": 1e300}', '{"instance_id": "7", "extra": [1]}',
])
def test_an_unreadable_record_is_skipped_by_list_and_refused_by_get(store, redis_client, stored, caplog):
    store.put_instance(record("1", status="ready"))
    store.put_instance(record("9", status="loading"))
    redis_client.set("vastkeep:instance:7", stored)
    redis_client.sadd("vastkeep:instances", "7")
    with caplog.at_level("WARNING", logger="vastkeep.state"):
        assert [r.instance_id for r in store.list_instances()] == ["1", "9"]
    assert "Skipping instance record 7" in caplog.text
    for call in (lambda: store.get_instance("7"), lambda: store.update_instance("7", {"label": "x"})):
        with pytest.raises(PermanentError, match="instance record 7 in Redis cannot be read") as err:
            call()
        assert err.value.instance_id == "7"
    assert store.get_instance("1").status == "ready"
    assert store.delete_instance("7") is True  # deleting is one way to fix it
    assert store.get_instance("7") is None and redis_client.smembers("vastkeep:instances") == {"1", "9"}


def test_a_record_without_optional_fields_or_with_nulls_reads_with_defaults(store, redis_client):
    redis_client.set("vastkeep:instance:8", '{"instance_id": 8, "ports": null, "extra": null, "fence": null}')
    redis_client.sadd("vastkeep:instances", "8")
    rec = store.get_instance("8")
    assert (rec.instance_id, rec.ports, rec.extra, rec.fence, rec.fence_name) == ("8", {}, {}, 0, None)


def test_concurrent_unfenced_updates_never_lose_a_write(redis_server, redis_client):
    StateStore(redis_client).put_instance(record(extra={}))
    per_thread, threads_n = 25, 4

    def bump(n: int) -> None:
        st = StateStore(connect(redis_server.url))
        for i in range(per_thread):
            def add(old: InstanceRecord, key: str = f"t{n}-{i}") -> InstanceRecord:
                old.extra[key] = True
                return old
            st.modify_instance("12345", add)
        st.redis.close()

    race_threads(bump, ((n,) for n in range(threads_n)), timeout_s=20)
    assert len(StateStore(redis_client).get_instance("12345").extra) == per_thread * threads_n


def test_create_is_idempotent_and_delete_cleans_up(store, redis_client):
    assert store.create_instance(record(label="first")) is True
    assert store.create_instance(record(label="second")) is False
    assert store.get_instance("12345").label == "first"
    assert store.delete_instance("12345") is True and store.delete_instance("12345") is False
    assert redis_client.exists("vastkeep:instance:12345") == 0
    assert redis_client.smembers("vastkeep:instances") == set()


def test_pool_settings(store, redis_client):
    assert store.get_pool() == PoolSettings(desired_size=2, safe_mode=False, safe_mode_reason=None)
    assert store.set_desired_size(3).desired_size == 3
    assert store.set_safe_mode(True, "vastai token invalid") == PoolSettings(3, True, "vastai token invalid")
    assert redis_client.hgetall("vastkeep:pool") == {"desired_size": "3", "safe_mode": "1",
                                                     "safe_mode_reason": "vastai token invalid"}
    assert store.set_safe_mode(False) == PoolSettings(3, False, None)
    with pytest.raises(ValueError):
        store.set_desired_size(-1)


def test_token_results_expire(store, redis_client):
    store.put_token_result("civitai", {"valid": False, "error": "Token authentication failed (401)"}, 60)
    assert store.get_token_result("civitai") == {"valid": False, "error": "Token authentication failed (401)"}
    assert 0 < redis_client.pttl("vastkeep:tokens:civitai") <= 60
    wait_for(lambda: store.get_token_result("civitai") is None)
    store.put_token_result("vastai", {"valid": True}, 10_000)
    assert store.delete_token_result("vastai") and store.get_token_result("vastai") is None
    with pytest.raises(ValueError, match="Secret"):
        store.put_token_result("hf", {"valid": True, "token": Secret("x")}, 1000)


def test_runtime_secrets_are_shared_and_come_back_as_secrets(store, redis_server):
    assert store.get_runtime_secret("civitai") is None
    store.set_runtime_secret("civitai", Secret("NEW_TOKEN_HERE"))
    other_worker = StateStore(connect(redis_server.url))
    got = other_worker.get_runtime_secret("civitai")
    assert isinstance(got, Secret) and got.reveal() == "NEW_TOKEN_HERE" and "NEW_TOKEN" not in repr(got)
    assert other_worker.clear_runtime_secret("civitai") and store.get_runtime_secret("civitai") is None
    with pytest.raises(ValueError):
        store.set_runtime_secret("civitai", "")


def test_keys_use_the_prefix_and_refuse_injection(redis_client):
    store = StateStore(redis_client, Keys("tenant2"))
    store.put_instance(record("7"))
    assert redis_client.exists("tenant2:instance:7") and not redis_client.exists("vastkeep:instance:7")
    for bad in ("", "a b", "x*", "a\nb"):
        with pytest.raises(ValueError):
            Keys().instance(bad)


# ── redis_conn.connect: the client every store/lease/event object is built on ──
def test_connect_survives_a_dropped_connection(redis_server, redis_client):
    client = connect(redis_server.url)
    victim = client.client_id()
    assert redis_client.client_kill_filter(_id=victim) == 1
    assert client.set("after-kill", "1") and client.get("after-kill") == "1"  # retried on a fresh socket


def test_connect_fails_fast_on_a_dead_port_and_refuses_non_redis_urls():
    from tests.fixtures.helpers import free_port

    client = connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert time.monotonic() - started < 5  # 3 jittered retries, capped at 1 s each
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 5.0 and kwargs["health_check_interval"] == 15
    retry = client.get_retry()
    assert isinstance(retry._backoff, FullJitterBackoff) and retry._retries == 3
    delays = [retry._backoff.compute(3) for _ in range(200)]
    assert 0 <= min(delays) < 0.1 and max(delays) <= 0.4 and len(set(delays)) > 150  # full jitter
    for bad in ("http://127.0.0.1:6379", "", "127.0.0.1:6379"):
        with pytest.raises(ValueError):
            connect(bad)
