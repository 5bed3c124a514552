"""``GET /api/proxy/admin/watchdog/status`` over real HTTP (uvicorn) against a real redis-server."""

from __future__ import annotations

import requests

from tests.helpers import ServedApp
from vastkeep.admin import HEADER, create_app
from vastkeep.core.clock import SystemClock
from vastkeep.core.settings import load_settings
from vastkeep.state import EventLog, Keys, StateStore, connect, write_heartbeat
from vastkeep.supervision import SupervisionPolicy, keepalive_shard, poll_dispatcher, publish_processes, sweep

KEY = "integration-admin-key-watchdog"
GUIDE_FIELDS = {"name", "pid", "status", "restartCount", "consecutiveCrashes", "lastStartTime",
                "lastCrashTime", "lastError"}


def test_watchdog_status_shows_processes_and_daemons_in_the_guide_shape(redis_client, redis_server) -> None:
    settings = load_settings(environ={"REDIS_URL": redis_server.url, "ADMIN_API_KEY": KEY}, env_file=False)
    r = connect(redis_server.url)
    clock = SystemClock()
    keys = Keys("wdtest")  # its own prefix: a dispatcher left by another test in the session worker beats too
    app = create_app(settings, store=StateStore(r, keys, clock), events=EventLog(r, keys, clock), redis=r,
                     clock=clock, keys=keys)
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
