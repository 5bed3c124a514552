"""``GET /api/proxy/admin/watchdog/status`` over real HTTP (uvicorn) against a real redis-server."""

from __future__ import annotations

import requests

from tests.fixtures.helpers import ServedApp
from tests.fixtures.state import State
from vastkeep.admin import HEADER
from vastkeep.admin.routes_watchdog import RESET_ANSWER
from vastkeep.core.backoff import RestartPolicy
from vastkeep.core.clock import FakeClock
from vastkeep.core.settings import load_settings
from vastkeep.state import Keys, write_heartbeat
from vastkeep.supervision import SupervisionPolicy, keepalive_shard, poll_dispatcher, publish_processes, sweep

KEY = "integration-admin-key-watchdog"
GUIDE_FIELDS = {"name", "pid", "status", "restartCount", "consecutiveCrashes", "lastStartTime",
                "lastCrashTime", "lastError"}


def test_watchdog_status_shows_processes_and_daemons_in_the_guide_shape(redis_client, redis_server) -> None:
    settings = load_settings(environ={"REDIS_URL": redis_server.url, "ADMIN_API_KEY": KEY}, env_file=False)
    # its own prefix: a dispatcher left by another test in the session worker beats too
    state = State.on(redis_server.url, keys=Keys("wdtest"))
    r, clock, keys = state.redis, state.clock, state.keys
    app = state.admin_app(settings)
    sent = []
    sweep(redis=r, keys=keys, specs=[keepalive_shard(0), poll_dispatcher()], policy=SupervisionPolicy(),
          start=sent.append, clock=clock)
    write_heartbeat(r, keys, clock, "keepalive-shard-0", kind="keepalive-shard")
    sweep(redis=r, keys=keys, specs=[keepalive_shard(0), poll_dispatcher()], policy=SupervisionPolicy(),
          start=sent.append, clock=clock)
    publish_processes(r, keys, clock, {"worker-control": {"name": "Worker-control", "pid": 4242,
                                                            "status": "running", "restartCount": 0}})
    with ServedApp(app) as s:
        url = f"{s.url}/api/proxy/admin/watchdog/status"
        assert requests.get(url, timeout=5).status_code == 401
        resp = requests.get(url, headers={HEADER: KEY}, timeout=5)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["processes"]["worker-control"]["pid"] == 4242
    shard = body["daemons"]["keepalive-shard-0"]
    assert GUIDE_FIELDS | {"heartbeatAgeS", "nextRestartAt"} == set(shard)
    assert shard["status"] == "running" and shard["name"] == "KeepaliveShard-0" and shard["restartCount"] == 0
    assert isinstance(shard["pid"], int) and shard["heartbeatAgeS"] < 5
    dispatcher = body["daemons"]["poll-dispatcher"]
    assert dispatcher["status"] == "starting" and dispatcher["heartbeatAgeS"] is None
    assert [spec.id for spec in sent] == ["keepalive-shard-0", "poll-dispatcher"]


def test_reset_brings_a_failed_daemon_back_through_the_next_sweep(redis_client, redis_server) -> None:
    """POST .../watchdog/{name}/reset: failed → registered, zero counters, an event; the next sweep starts."""
    settings = load_settings(environ={"REDIS_URL": redis_server.url, "ADMIN_API_KEY": KEY}, env_file=False)
    state = State.on(redis_server.url, FakeClock(), Keys("wdreset"))
    r, clock, keys, events = state.redis, state.clock, state.keys, state.events
    app = state.admin_app(settings)
    policy = SupervisionPolicy(restart=RestartPolicy(max_restarts=0), start_timeout_s=5.0)
    specs = [keepalive_shard(0), poll_dispatcher()]
    sent: list = []

    def run_sweep() -> None:
        sweep(redis=r, keys=keys, specs=specs, policy=policy, start=sent.append, clock=clock, events=events)

    run_sweep()                                    # both registered and started
    write_heartbeat(r, keys, clock, "keepalive-shard-0", kind="keepalive-shard", ttl_ms=3_600_000)
    clock.advance(6)
    run_sweep()                                    # the dispatcher never beat: 0 restarts allowed → failed
    url = "{}/api/proxy/admin/watchdog/{}/reset"
    with ServedApp(app) as s:
        status = requests.get(f"{s.url}/api/proxy/admin/watchdog/status", headers={HEADER: KEY}, timeout=5)
        assert status.json()["daemons"]["poll-dispatcher"]["status"] == "failed"
        assert requests.post(url.format(s.url, "poll-dispatcher"), timeout=5).status_code == 401
        unknown = requests.post(url.format(s.url, "no-such-daemon"), headers={HEADER: KEY}, timeout=5)
        running = requests.post(url.format(s.url, "keepalive-shard-0"), headers={HEADER: KEY}, timeout=5)
        # by display name, then a repeat by id
        resp = requests.post(url.format(s.url, "PollDispatcher"), headers={HEADER: KEY}, timeout=5)
        again = requests.post(url.format(s.url, "poll-dispatcher"), headers={HEADER: KEY}, timeout=5)
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"] == "not_found"
    assert "known: keepalive-shard-0, poll-dispatcher" in unknown.json()["reason"]
    assert running.status_code == 409 and "running, not failed" in running.json()["reason"]
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert {"id": "poll-dispatcher", "name": "PollDispatcher", "status": "registered",
            "previousStatus": "failed", "restartCount": 0, "consecutiveCrashes": 0,
            "nextRestartAt": None}.items() <= body.items()
    assert GUIDE_FIELDS | {"id", "previousStatus", "heartbeatAgeS", "nextRestartAt"} == set(body)
    assert set(body) == set(RESET_ANSWER["properties"]) and set(RESET_ANSWER["required"]) <= set(body)
    assert body["lastCrashTime"].endswith("Z") and body["lastError"]  # the history stays, in ISO 8601
    assert again.status_code == 200 and again.json() == body          # a repeat answers the same
    resets = [e for e in events.read(count=100) if e.kind == "process-reset"]
    assert [e.fields for e in resets] == [
        {"id": "poll-dispatcher", "name": "PollDispatcher", "previousStatus": "failed", "restartCount": 0}]
    sent.clear()
    run_sweep()                                    # the next sweep starts it at once
    assert [spec.id for spec in sent] == ["poll-dispatcher"]
