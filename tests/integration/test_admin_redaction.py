"""No lease id and no key ever reaches the admin API's logs: a canary over every route of the app.

The routes come from the app's own route table, so a route added later is covered without touching this
test. The API runs as its own process (uvicorn, access log on, ``LOG_LEVEL=DEBUG``: the most it ever logs)
on a redis-server this test starts and stops. Every request carries a canary lease id in each path
parameter that can hold one and in the query string; the tokens the process is configured with, its admin
key and a wrong key presented to it are canaries too. Three rounds over every route: Redis up with the right
key, a wrong key, Redis down (each guarded route then hits the Redis error handler). Whatever the process
wrote, stderr and stdout, must hold none of the canaries, while the lines that name a path are there,
redacted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests
from fastapi import routing

from tests.fixtures.api_process import api_env, spawn_api
from tests.fixtures.redis_server import start_redis_server
from vastkeep.admin import create_app
from vastkeep.core.redact import REDACTED_LEASE_ID
from vastkeep.core.settings import load_settings

LEASE = "lse_CANARYlease0123456789abcdefXYZ"
ADMIN_KEY = "admin-key-CANARY-7f3e9a1c5b"
WRONG_KEY = "wrong-key-CANARY-2d8b4e6f0a"
TOKENS = {"VAST_API_KEY": "vast-CANARY-token-5c1e8b2a9d", "HUGGINGFACE_HUB_TOKEN": "hf_CANARYtoken4a7d2e9b1c",
          "CIVITAI_TOKEN": "civitai-CANARY-token-8e3f1a6b"}
CANARIES = (LEASE, LEASE[4:], ADMIN_KEY, WRONG_KEY, *TOKENS.values())
PARAM = re.compile(r"{(\w+)(?::\w+)?}")


def every_route() -> list[tuple[str, str]]:
    """(method, path template) of every route the admin app serves (HEAD is GET's)."""
    app = create_app(load_settings(environ={"ADMIN_API_KEY": ADMIN_KEY}, env_file=False))
    # FastAPI >= 0.160 keeps included routers as nodes of the table; iter_route_contexts flattens them.
    flat = routing.iter_route_contexts(app.routes) if hasattr(routing, "iter_route_contexts") else app.routes
    out = sorted({(method, route.path) for route in flat for method in (route.methods or ())
                  if method != "HEAD"})
    documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert documented <= set(out), documented - set(out)
    return out


def fill(template: str, lease_everywhere: bool) -> str:
    """A concrete path: the lease id in every parameter (or a well-formed value where one is expected)."""
    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if lease_everywhere or "lease" in name:
            return LEASE
        return "424242" if "instance" in name else "poll-dispatcher"
    return PARAM.sub(value, template) + f"?lease={LEASE}&after=0-0"


def call(api_url: str, method: str, path: str, key: str) -> int:
    body: dict[str, Any] = {"service": "civitai", "token": TOKENS["CIVITAI_TOKEN"], "leaseId": LEASE}
    resp = requests.request(method, api_url + path, headers={"X-Admin-Key": key}, timeout=30,
                            json=body if method in ("POST", "PUT", "PATCH", "DELETE") else None)
    return resp.status_code


def test_no_lease_id_or_key_in_any_log_line_over_every_route(sim: Any, tmp_path: Path) -> None:
    routes = every_route()
    guarded = [(m, p) for m, p in routes if p.startswith("/api/proxy/admin/")]
    assert len(guarded) >= 20 and any("{lease_id}" in p for _, p in guarded)
    redis = start_redis_server()
    env = api_env(**{**sim.env(), **TOKENS}, REDIS_URL=redis.url, ADMIN_API_KEY=ADMIN_KEY,
                  LOG_LEVEL="DEBUG", VASTKEEP_HOME=str(tmp_path / "home"))
    api = spawn_api(env, tmp_path / "api")  # uvicorn's defaults: access log on
    statuses: dict[str, list[int]] = {"up": [], "wrong-key": [], "redis-down": []}
    try:
        for method, template in routes:
            statuses["up"].append(call(api.url, method, fill(template, False), ADMIN_KEY))
        for method, template in routes:
            statuses["wrong-key"].append(call(api.url, method, fill(template, True), WRONG_KEY))
        redis.stop()
        for method, template in routes:
            statuses["redis-down"].append(call(api.url, method, fill(template, False), ADMIN_KEY))
    finally:
        api.stop()
        redis.stop()
    logs = api.logs()
    for canary in CANARIES:
        leaked = [line for line in logs.splitlines() if canary in line]
        assert not leaked, f"{canary[:12]}... appears in {len(leaked)} log line(s), e.g. {leaked[0][:300]}"
    assert "lse_" not in logs.replace(REDACTED_LEASE_ID, "")
    assert "--- Logging error ---" not in logs  # redaction must not break a formatter (a line would be lost)
    # The lines that name a path were written (so the check above could fail), with the id redacted.
    wrong = [ln for ln in logs.splitlines() if "wrong X-Admin-Key" in ln]
    assert len(wrong) == sum(1 for s, (_, p) in zip(statuses["wrong-key"], routes, strict=True)
                             if p.startswith("/api/proxy/admin/") and s == 401) == len(guarded)
    assert any(REDACTED_LEASE_ID in ln for ln in wrong)
    redis_errors = [ln for ln in logs.splitlines() if "Redis error on" in ln]
    assert any(f"leases/{REDACTED_LEASE_ID}" in ln for ln in redis_errors), redis_errors
    access = [ln for ln in logs.splitlines() if '" 401' in ln and f"leases/{REDACTED_LEASE_ID}" in ln]
    assert any(f"?lease={REDACTED_LEASE_ID}" in ln for ln in access), "no access log line with the path"
    assert 500 not in statuses["up"] + statuses["wrong-key"] + statuses["redis-down"], statuses
