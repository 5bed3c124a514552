"""Every time a person reads in the admin API's answers is ISO 8601, never a raw epoch.

Redis is filled with every kind of timed state the API shows (an instance record, the last reconcile round,
an operator's safe mode, supervision records, heartbeats, events, a provider listing, a cached token check),
then every GET route of the app's route table is read, and an adopt that misses answers its 404: no number
that reads as an epoch (10 digits before the point) and no such number inside a text. The one exception is
``events[].ts``, the machine form beside the event's ISO ``time`` (documented in docs/admin-api.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

import requests
from fastapi import routing

from tests.fixtures.helpers import ServedApp
from tests.fixtures.state import State
from vastkeep.admin import HEADER, create_app
from vastkeep.core.clock import SystemClock
from vastkeep.core.settings import load_settings
from vastkeep.pool import PoolBook, set_safe_mode
from vastkeep.state import EventLog, InstanceRecord, Keys, connect, write_heartbeat
from vastkeep.supervision import SupervisionPolicy, keepalive_shard, poll_dispatcher, sweep

KEY = "integration-admin-key-times"
EPOCH_IN_TEXT = re.compile(r"(?<![\d.-])1\d{9}(?:\.\d+)?(?![\d-])")
ALLOWED_NUMBERS = re.compile(r"^\$\.events\[\d+\]\.ts$")


def epochs(value: Any, where: str = "$") -> list[str]:
    """Every place in a JSON value where an epoch shows as a number or inside a text."""
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in epochs(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in epochs(v, f"{where}[{i}]")]
    if isinstance(value, int | float) and not isinstance(value, bool) and 1e9 <= value < 1e10:
        return [] if ALLOWED_NUMBERS.match(where) else [f"{where} = {value}"]
    if isinstance(value, str) and EPOCH_IN_TEXT.search(value):
        return [f"{where} = {value!r}"]
    return []


def get_routes(app: Any) -> list[str]:
    flat = routing.iter_route_contexts(app.routes) if hasattr(routing, "iter_route_contexts") else app.routes
    return sorted({r.path for r in flat if "GET" in (r.methods or ()) and r.path.startswith("/api/")})


def test_every_answer_shows_times_in_iso_8601(redis_server, redis_client) -> None:
    settings = load_settings(environ={"REDIS_URL": redis_server.url, "ADMIN_API_KEY": KEY,
                                      "VASTKEEP_SIMULATED": "1"}, env_file=False)
    r, clock, keys = connect(redis_server.url), SystemClock(), Keys()
    store, events = State(r, keys=keys, clock=clock).store, EventLog(r, keys, clock)
    now = clock.now()
    store.create_instance(InstanceRecord(instance_id="4242", status="ready", created_at=now - 60,
                                         last_heartbeat=now, leased_until=now + 600, status_since=now - 30,
                                         connection_url="http://127.0.0.1:1"))
    # its client lease as the grant script writes it (the record's leased_until only mirrors this entry)
    r.hset(keys.pool_leases(settings.warm_pool_name), "4242",
           json.dumps({"lease_id": "lse_timesTestLease0123456789", "client": "svc", "until": now + 600,
                       "granted_at": now, "fence": 1, "state": "active", "instance_id": "4242"}))
    book = PoolBook(r, keys, settings.warm_pool_name)
    book.put_last_round({"at": now, "wait": [], "errors": [], "rented": 0, "destroyed": 0})
    set_safe_mode(store, book, events, True, "maintenance", now)
    sweep(redis=r, keys=keys, specs=[keepalive_shard(0), poll_dispatcher()], policy=SupervisionPolicy(),
          start=lambda spec: None, clock=clock, events=events)
    write_heartbeat(r, keys, clock, "worker@test", kind="worker", queues="vastkeep.control")
    r.hset(keys.provider_snapshot_meta(), mapping={"fetched_at": repr(now), "count": 0, "error": ""})
    app = create_app(settings, store=store, events=events, redis=r, clock=clock)
    answers: dict[str, Any] = {}
    with ServedApp(app) as s:
        for path in get_routes(app):
            url = s.url + path.replace("{instance_id}", "4242")
            resp = requests.get(url, headers={HEADER: KEY}, timeout=10)
            assert resp.status_code == 200, (path, resp.text)
            answers[path] = resp.json()
        missed = requests.post(f"{s.url}/api/proxy/admin/instances/999999/adopt", headers={HEADER: KEY},
                               timeout=10)
    assert missed.status_code == 404
    answers["adopt 404"] = missed.json()
    assert "refreshed at 20" in missed.json()["reason"], missed.json()
    status = answers["/api/proxy/admin/warm-pool/status"]
    assert status["pool"]["lastRound"]["at"].endswith("Z") and status["instance"]["leasedUntil"].endswith("Z")
    assert answers["/api/proxy/admin/safe-mode"]["since"].endswith("Z")
    assert {"/api/proxy/admin/events", "/api/proxy/admin/watchdog/status",
            "/api/proxy/admin/system/status"} <= set(answers)
    found = {path: hits for path, body in answers.items() if (hits := epochs(body))}
    assert not found, found
