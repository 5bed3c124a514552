"""The Celery app for real: an embedded worker against the test redis-server, the configuration
that the design pins down, routing by name prefix, error mapping, and a `celery -A worker worker`
subprocess answering `celery -A worker inspect ping` (issue 2's done-when)."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery

import tasks
from tasks.base import VastkeepTask, retry_delay_s
from tests.fixtures.celery_app import WORKER_HOSTNAME
from tests.fixtures.helpers import stop_process, wait_for
from vastkeep.core.backoff import BackoffPolicy, backoff_ceiling
from vastkeep.core.errors import AuthError, LeaseBusy, NetworkError, RateLimited, ServerError
from vastkeep.state.keys import Keys
from vastkeep.state.leases import LeaseManager
from worker.app import app
from worker.config import CONTROL_QUEUE, KEEPALIVE_QUEUE, SSH_QUEUE, celery_config, queue_for

ROOT = Path(__file__).resolve().parents[2]
TINY = BackoffPolicy(base_s=0.01, cap_s=0.05)
ATTEMPTS_KEY = "vk-test:attempts:{}"


# Test-only tasks, registered at import (before the session worker starts, so it knows them).
@app.task(name="vastkeep.test.flaky", bind=True, base=VastkeepTask, retry_policy_backoff=TINY, max_retries=5)
def flaky(self: VastkeepTask, run_id: str, fail_times: int) -> dict:
    from worker import wiring

    n = wiring.resources().redis.incr(ATTEMPTS_KEY.format(run_id))
    if n <= fail_times:
        raise NetworkError("connection reset (test)", attempt=n)
    return {"attempts": n, "retries": self.request.retries}


@app.task(name="vastkeep.test.denied", bind=True, base=VastkeepTask, retry_policy_backoff=TINY, max_retries=5)
def denied(self: VastkeepTask, run_id: str) -> dict:
    from worker import wiring

    wiring.resources().redis.incr(ATTEMPTS_KEY.format(run_id))
    raise AuthError("token rejected (test)", service="vastai")


COUNTDOWNS_KEY = "vk-test:countdowns:{}"
WIDE = BackoffPolicy(base_s=0.01, cap_s=30.0)  # a tiny ceiling, so a retry bound above it is the hint's


class RecordingTask(VastkeepTask):
    """VastkeepTask that writes the countdown (and the error's hint) it retries with to Redis."""

    def retry(self, *args, **kwargs):  # type: ignore[override]
        from worker import wiring

        exc = kwargs.get("exc")
        wiring.resources().redis.rpush(COUNTDOWNS_KEY.format(self.request.args[0]),
                                       json.dumps([kwargs.get("countdown"), getattr(exc, "delay_s", None)]))
        return super().retry(*args, **kwargs)


@app.task(name="vastkeep.test.lease_wait", bind=True, base=RecordingTask, retry_policy_backoff=WIDE,
          max_retries=1)
def lease_wait(self: VastkeepTask, run_id: str) -> dict:
    from worker import wiring

    if self.request.retries == 0:
        res = wiring.resources()
        LeaseManager(res.redis, res.keys, res.clock).require(f"vk-test:{run_id}", "the-task", 1_000)
    return {"retries": self.request.retries}


def test_ping_round_trip_through_real_worker(vk_celery_worker, redis_client) -> None:
    """Broker → worker → result backend: the answer is stored in Redis by the worker, not computed here."""
    assert not vk_celery_worker.app.conf.task_always_eager
    res = tasks.system.ping.delay()
    result = res.get(timeout=15)
    # Celery's embedded thread worker reports the machine name in request.hostname (its fast-trace
    # path); the subprocess test below checks the real node name.
    assert result["pong"] is True and set(result) == {"pong", "worker"}
    assert result["worker"] in (WORKER_HOSTNAME, socket.gethostname())
    stored = json.loads(redis_client.get(f"celery-task-meta-{res.id}"))  # written by the worker's backend
    assert stored["status"] == "SUCCESS" and stored["result"] == result and stored["task_id"] == res.id
    assert redis_client.llen(CONTROL_QUEUE) == 0  # consumed from the production queue


def test_heartbeat_task_writes_beat_heartbeat(vk_celery_worker, redis_client) -> None:
    before = time.time()
    tasks.system.heartbeat.apply_async()
    # ignore_result: no result to wait on, so poll the key with a deadline
    raw = wait_for(lambda: redis_client.hget(Keys().heartbeats(), "beat"), 15, "beat heartbeat")
    record = json.loads(raw)
    assert record["worker"] in (WORKER_HOSTNAME, socket.gethostname()) and record["at"] >= before - 1
    assert 0 < float(redis_client.zscore(Keys().heartbeat_expiry(), "beat")) - record["at"] <= 120


def test_transient_error_retries_with_jitter_then_succeeds(vk_celery_worker, redis_client) -> None:
    result = flaky.delay(run_id="t1", fail_times=2).get(timeout=15)
    assert result == {"attempts": 3, "retries": 2}


def test_permanent_error_fails_without_retry(vk_celery_worker, redis_client) -> None:
    res = denied.delay(run_id="p1")
    with pytest.raises(AuthError):
        res.get(timeout=15)
    assert res.state == "FAILURE"
    assert int(redis_client.get(ATTEMPTS_KEY.format("p1"))) == 1


class _Req:
    def __init__(self, retries: int) -> None:
        self.retries = retries


class _FakeTask:
    def __init__(self, retries: int, policy: BackoffPolicy = BackoffPolicy(base_s=1.0, cap_s=60.0)) -> None:
        self.request = _Req(retries)
        self.retry_policy_backoff = policy


def test_retry_delay_is_full_jitter_within_policy() -> None:
    import random

    rng = random.Random(7)
    delays = [retry_delay_s(_FakeTask(3), rng=rng) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 150  # spread, not lockstep
    hinted = [retry_delay_s(_FakeTask(3), NetworkError("x", delay_s=30.0), rng=rng) for _ in range(200)]
    assert all(0 <= d <= 30.0 for d in hinted) and max(hinted) > 24.0  # the hint widens the window
    capped = [retry_delay_s(_FakeTask(3), NetworkError("x", delay_s=600.0), rng=rng) for _ in range(200)]
    assert all(0 <= d <= 60.0 for d in capped)  # never past the policy's cap


# (error, retries) → countdowns over 1000 workers that failed at the same moment with the same error.
HINTED = [
    (RateLimited("429", delay_s=8.0), 0),   # what request_with_retry raises after 4 attempts
    (RateLimited("429", delay_s=8.0), 4),   # the task's ceiling (16 s) is above the hint
    (ServerError("503", delay_s=8.0), 2),
    (ServerError("503", delay_s=0.0), 3),   # no hint: the task's own ceiling
    (LeaseBusy("held", retry_after_ms=12_500, delay_s=12.5), 0),
    (NetworkError("reset"), 3),
    (NetworkError("odd hint", delay_s=float("nan")), 3),
]


@pytest.mark.parametrize(("exc", "retries"), HINTED,
                         ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v))
def test_retry_countdowns_are_spread_and_bounded_over_many_workers(exc: Exception, retries: int) -> None:
    """The hint is an upper bound for full jitter, never a floor: 1000 seeds give ~1000 countdowns."""
    import random

    policy = BackoffPolicy(base_s=1.0, cap_s=60.0)
    hint = getattr(exc, "delay_s", None)
    hint = hint if isinstance(hint, float | int) and hint == hint else 0.0
    bound = min(policy.cap_s, max(hint, backoff_ceiling(retries, policy)))
    task = _FakeTask(retries, policy)
    countdowns = [retry_delay_s(task, exc, rng=random.Random(seed)) for seed in range(1000)]
    assert all(0.0 <= c <= bound for c in countdowns)
    assert len(set(countdowns)) > 900, "workers would retry in lockstep"  # (ms resolution, bound ≥ 8 s)
    assert min(countdowns) < 0.05 * bound and max(countdowns) > 0.95 * bound  # the whole window is used
    assert 0.4 * bound < sum(countdowns) / len(countdowns) < 0.6 * bound


def test_lease_busy_carries_its_wait_as_the_jitter_bound(redis_client) -> None:
    import random

    leases = LeaseManager(redis_client, Keys("vk-test-lb"))
    leases.acquire("plan", "holder", 20_000)
    with pytest.raises(LeaseBusy) as info:
        leases.require("plan", "other", 20_000)
    busy = info.value
    assert 19_000 < busy.retry_after_ms <= 20_000 and busy.delay_s == busy.retry_after_ms / 1000
    assert busy.to_dict()["delay_s"] == busy.delay_s
    countdowns = [retry_delay_s(_FakeTask(0, WIDE), busy, rng=random.Random(s)) for s in range(500)]
    assert all(0.0 <= c <= busy.delay_s for c in countdowns)  # bounded by the lease's remaining time
    assert max(countdowns) > 0.9 * busy.delay_s  # ... which is the bound, not the 0.01 s ceiling
    assert len(set(countdowns)) > 450


def test_task_retry_after_lease_busy_uses_the_lease_wait_as_bound(vk_celery_worker, redis_client) -> None:
    from worker import wiring

    res = wiring.resources()
    held = LeaseManager(res.redis, res.keys).acquire("vk-test:lb1", "someone-else", 1_500)
    assert held is not None
    result = lease_wait.delay("lb1").get(timeout=15)
    assert result == {"retries": 1}
    recorded = [json.loads(x) for x in res.redis.lrange(COUNTDOWNS_KEY.format("lb1"), 0, -1)]
    assert len(recorded) == 1
    countdown, hint = recorded[0]
    assert 0.5 < hint <= 1.5  # the lease's remaining time, in seconds
    assert 0.0 <= countdown <= hint  # drawn below the lease's wait, not the policy's 0.01 s ceiling
    res.redis.delete(COUNTDOWNS_KEY.format("lb1"))


def test_config_is_explicit_and_consistent(vk_celery_app, vk_settings) -> None:
    conf = vk_celery_app.conf
    assert conf.task_serializer == "json" and conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"] and list(conf.result_accept_content) == ["json"]
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_connection_retry_on_startup is True
    vt = vk_settings.celery_visibility_timeout_s
    assert conf.broker_transport_options["visibility_timeout"] == vt
    assert conf.result_backend_transport_options["visibility_timeout"] == vt
    assert conf.visibility_timeout == vt
    assert vt > vk_settings.ssh_collect_time_limit_s and vt > vk_settings.longest_poll_interval_s
    assert conf.task_default_queue == CONTROL_QUEUE
    assert {q.name for q in conf.task_queues} == {CONTROL_QUEUE, SSH_QUEUE, KEEPALIVE_QUEUE}
    assert queue_for("vastkeep.keepalive.run_shard") == KEEPALIVE_QUEUE
    assert queue_for("vastkeep.keepalive.ensure_shards") == CONTROL_QUEUE
    assert queue_for("vastkeep.supervision.sweep") == CONTROL_QUEUE
    assert conf.worker_send_task_events and conf.task_send_sent_event and conf.task_track_started
    assert conf.beat_schedule["vastkeep.system.heartbeat"]["schedule"] == 30.0
    for entry in conf.beat_schedule.values():
        assert entry["task"] in vk_celery_app.tasks, f"beat entry for unknown task {entry['task']}"
    # every registered vastkeep task has an explicit, stable name
    assert {"vastkeep.system.ping", "vastkeep.system.heartbeat"} <= set(vk_celery_app.tasks)


def test_visibility_timeout_follows_settings(vk_settings) -> None:
    from dataclasses import replace

    conf = celery_config(replace(vk_settings, celery_visibility_timeout_s=7200), redis_url="redis://x:1/0")
    assert conf["broker_transport_options"]["visibility_timeout"] == 7200
    assert conf["result_backend_transport_options"]["visibility_timeout"] == 7200
    assert conf["visibility_timeout"] == 7200


def test_token_check_interval_follows_settings(vk_settings) -> None:
    """TOKEN_PERIODIC_CHECK_MS drives the beat entry of vastkeep.tokens.validate_all; heartbeat stays 30 s."""
    from vastkeep.core.settings import load_settings

    default = celery_config(vk_settings, redis_url="redis://x:1/0")["beat_schedule"]
    assert default["vastkeep.tokens.validate_all"]["schedule"] == 600.0
    assert default["vastkeep.supervision.sweep"]["schedule"] == 5.0
    # the supervision sweep replaced the three ensure entries (they stay callable by name)
    assert not {"vastkeep.polling.ensure", "vastkeep.keepalive.ensure_shards",
                "vastkeep.ssh.ensure_collectors"} & set(default)
    assert {"vastkeep.polling.ensure", "vastkeep.keepalive.ensure_shards",
            "vastkeep.ssh.ensure_collectors"} <= set(app.tasks)
    assert "vastkeep.ports.validate_pool" not in default  # polling is "the next poll" now
    tuned = load_settings(environ={"TOKEN_PERIODIC_CHECK_MS": "90000"}, env_file=False)
    schedule = celery_config(tuned, redis_url="redis://x:1/0")["beat_schedule"]
    assert schedule["vastkeep.tokens.validate_all"] == {"task": "vastkeep.tokens.validate_all",
                                                        "schedule": 90.0}
    assert schedule["vastkeep.system.heartbeat"]["schedule"] == 30.0


def test_supervision_sweep_beat_entry_expires_after_one_interval(vk_settings) -> None:
    """A sweep still queued when the next one is due is dropped, not run late."""
    from celery.beat import ScheduleEntry

    from vastkeep.core.settings import load_settings

    schedule = celery_config(vk_settings, redis_url="redis://x:1/0")["beat_schedule"]
    entry = schedule["vastkeep.supervision.sweep"]
    assert entry == {"task": "vastkeep.supervision.sweep", "schedule": 5.0, "options": {"expires": 5.0}}
    assert ScheduleEntry(name="sweep", app=app, **entry).options["expires"] == 5.0
    tuned = load_settings(environ={"SUPERVISION_SWEEP_INTERVAL_MS": "2000"}, env_file=False)
    assert celery_config(tuned, redis_url="redis://x:1/0")["beat_schedule"]["vastkeep.supervision.sweep"][
        "schedule"] == 2.0
    assert "options" not in schedule["vastkeep.system.heartbeat"]


def test_worker_app_beat_schedule_honours_env(tmp_path) -> None:
    """The real ``worker.app`` (what ``celery -A worker beat`` loads) reads it from the environment."""
    env = {**os.environ, "TOKEN_PERIODIC_CHECK_MS": "45000", "PYTHONPATH": str(ROOT),
           "VASTKEEP_HOME": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    code = ("import json; from worker import app; "
            "print(json.dumps({k: v['schedule'] for k, v in app.conf.beat_schedule.items()}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    schedule = json.loads(out.stdout.strip().splitlines()[-1])
    assert schedule == {"vastkeep.system.heartbeat": 30.0, "vastkeep.tokens.validate_all": 45.0,
                        "vastkeep.supervision.sweep": 5.0, "vastkeep.pool.reconcile": 15.0}


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[1] in (resource.RLIM_INFINITY, 512),
                    reason="needs a finite hard fd limit other than 512")
@pytest.mark.parametrize("signal_name", ["worker_init", "worker_process_init"])
def test_worker_start_raises_the_soft_fd_limit(tmp_path, signal_name) -> None:
    """The real ``worker.app`` lifts the soft fd limit to the hard one when a worker or pool child starts."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VASTKEEP_HOME": str(tmp_path),
           "REDIS_URL": "redis://127.0.0.1:1/0"}
    code = ("import json, resource; from celery import signals; from worker import app; "
            "before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]; "
            f"signals.{signal_name}.send(sender=None); "
            "print(json.dumps([before, resource.getrlimit(resource.RLIMIT_NOFILE)[0]]))")
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))

    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60, preexec_fn=lower)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [512, hard]


def test_ssh_named_tasks_land_on_the_ssh_queue(redis_server) -> None:
    """Publish through a real broker (a db no worker reads) and look at the Redis lists."""
    db = 14
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    probe = Celery("routing-probe", set_as_current=False)
    probe.conf.update(celery_config(_settings(), redis_url=url))
    raw = redis_lib.Redis(port=redis_server.port, db=db)
    raw.flushdb()
    try:
        probe.send_task("vastkeep.ssh.collect_logs", kwargs={"instance_id": "1"})
        probe.send_task("vastkeep.logs.tail", kwargs={"instance_id": "1"})
        probe.send_task("vastkeep.ports.validate_instance", kwargs={"instance_id": "1"})
        assert raw.llen(SSH_QUEUE) == 2
        assert raw.llen(CONTROL_QUEUE) == 1
        body = json.loads(raw.lindex(CONTROL_QUEUE, 0))
        assert body["content-type"] == "application/json"
    finally:
        raw.flushdb()
        probe.close()


def _settings():
    from vastkeep.core.settings import load_settings

    return load_settings(environ={}, env_file=False)


def test_celery_cli_worker_answers_inspect_ping(redis_server, tmp_path) -> None:
    db = 13
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    raw = redis_lib.Redis(port=redis_server.port, db=db, decode_responses=True)
    raw.flushdb()
    env = {**os.environ, "REDIS_URL": url, "VASTKEEP_HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "LOG_LEVEL": "WARNING"}
    env.pop("VAST_API_KEY", None)
    name = f"cli-{os.getpid()}@localhost"
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-P", "solo", "-n", name,
         "-Q", f"{CONTROL_QUEUE},{SSH_QUEUE}", "--without-mingle", "--without-gossip", "-l", "WARNING"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # the worker's heartbeat bootstep says it started (no sleeps: poll with a deadline)
        hb = wait_for(lambda: raw.hget(Keys().heartbeats(), name), 30, "worker heartbeat")
        assert "vastkeep.control" in json.loads(hb)["queues"]
        out = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "worker", "inspect", "ping", "-d", name, "--timeout", "5"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "pong" in out.stdout and name in out.stdout
        # and a task round-trip through this worker reports its node name
        client = Celery("cli-probe", set_as_current=False)
        client.conf.update(celery_config(_settings(), redis_url=url))
        try:
            assert client.send_task("vastkeep.system.ping").get(timeout=15) == {"pong": True, "worker": name}
        finally:
            client.close()
    finally:
        rc = stop_process(proc, 30, group=True)
        log.close()
    assert rc == 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert raw.hget(Keys().heartbeats(), name) is None  # a clean stop removes its heartbeat
    raw.flushdb()


def test_broker_results_and_state_share_one_redis_url_as_in_production(vk_celery_app, vk_settings,
                                                                       redis_server) -> None:
    """The tests run the layout production runs: one REDIS_URL for broker, result backend and state."""
    from worker import wiring

    production = celery_config(vk_settings)
    assert production["broker_url"] == production["result_backend"] == vk_settings.redis_url
    assert vk_celery_app.conf.broker_url == vk_celery_app.conf.result_backend == redis_server.url
    assert wiring.redis_url() == redis_server.url
    pool = wiring.resources().redis.connection_pool.connection_kwargs
    assert (pool["port"], pool.get("db", 0)) == (redis_server.port, 0)


def test_a_forked_process_gets_its_own_resources_without_touching_the_parents(vk_celery_app) -> None:
    """One Resources object per process: a child of fork() (Celery prefork) builds its own, on its own Redis
    connections, token-check threads and deadline watchdog, and never closes the parent's sockets."""
    from worker import wiring

    parent = wiring.resources()
    assert parent.redis.ping()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        code = 1
        try:
            child = wiring.resources()
            fresh = (child is not parent and child.pid == os.getpid()
                     and child.check_pools is not parent.check_pools
                     and child.deadline_watchdog is not parent.deadline_watchdog and bool(child.redis.ping()))
            os.write(write_fd, b"ok" if fresh else b"reused")
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read_fd, 16)
    os.close(read_fd)
    assert (os.WEXITSTATUS(status), answer) == (0, b"ok")
    assert wiring.resources() is parent and parent.redis.ping()  # the parent's connections still work
