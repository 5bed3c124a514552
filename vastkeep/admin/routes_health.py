"""Health, metrics and system status: what load balancers, Prometheus and operators poll.

``/health`` and ``/metrics`` are unguarded (they reveal counts, never data or secrets) so probes
need no key; everything under ``/api/proxy/admin`` needs ``X-Admin-Key``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, get_context
from vastkeep.admin.auth import require_admin_key
from vastkeep.core.clock import iso
from vastkeep.monitoring import check_redis, check_workers
from vastkeep.monitoring import collect_metrics as _collect
from vastkeep.state.heartbeats import read_heartbeats

router = APIRouter()
#: /health's body, 200 and 503 alike (a load balancer acts on the status code; people read the body)
HEALTH_BODY = {"type": "object", "required": ["status", "redis", "simulated", "time"],
               "properties": {"status": {"enum": ["ok", "degraded"]}, "redis": {"type": "string"},
                              "simulated": {"type": "boolean"},
                              "time": {"type": "string", "description": "ISO 8601"},
                              "workers": {"type": "object"}}}
guarded = APIRouter(prefix=f"{ADMIN_PREFIX}/system", dependencies=[Depends(require_admin_key)],
                    tags=["system"])


def _redis_ok(ctx: AdminContext) -> tuple[bool, str]:
    """(up, "ok" | "not configured" | "down (ErrorType)") from the shared Redis check."""
    if ctx.redis is None:
        return False, "not configured"
    check = check_redis(ctx.redis)
    return (True, "ok") if check.ok else (False, f"down ({check.detail.rsplit('(', 1)[-1].rstrip(')')})")


@router.get("/health", tags=["health"], summary="Liveness + Redis reachability (no key needed)",
            responses={200: {"content": {"application/json": {"schema": HEALTH_BODY}}},
                       503: {"description": "Redis does not answer PING",
                             "content": {"application/json": {"schema": HEALTH_BODY}}}})
def health(ctx: AdminContext = Depends(get_context)) -> JSONResponse:
    """200 when Redis answers PING, else 503, so a load balancer can act on the status code alone.

    The body also carries the worker check ``vastkeep check`` runs (vastkeep.monitoring.health), for
    information: an API whose workers are down still serves, so it does not turn the answer into a 503.
    A bounded number of Redis calls whatever the data holds (PING, then two for the heartbeats).
    """
    ok, redis_state = _redis_ok(ctx)
    body: dict[str, object] = {"status": "ok" if ok else "degraded", "redis": redis_state,
                            "simulated": bool(ctx.settings.vastkeep_simulated), "time": iso(ctx.clock.now())}
    if ok and ctx.redis is not None:
        body["workers"] = check_workers(ctx.redis, ctx.keys, ctx.clock).to_dict()
    return JSONResponse(status_code=200 if ok else 503, content=body)


def collect_metrics(ctx: AdminContext) -> str:
    """Prometheus text exposition (format 0.0.4): :func:`vastkeep.monitoring.collect_metrics` on this app."""
    if ctx.redis is None:
        return "# HELP vastkeep_redis_up 1 when Redis answers PING\n# TYPE vastkeep_redis_up gauge\n" \
               "vastkeep_redis_up 0\n"
    return _collect(ctx.redis, ctx.keys, ctx.clock, store=ctx.store, events=ctx.events)


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse,
            summary="Prometheus metrics (text format, no key needed)")
def metrics(ctx: AdminContext = Depends(get_context)) -> PlainTextResponse:
    """Scraped by Prometheus; always 200 so a Redis outage shows as ``vastkeep_redis_up 0``."""
    try:
        text = collect_metrics(ctx)
    except Exception as exc:  # noqa: BLE001 - a scrape must not 500 on a Redis hiccup mid-read
        text = f"# collection failed: {type(exc).__name__}\nvastkeep_redis_up 0\n"
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@guarded.get("/status", summary="Process heartbeats and Redis state", response_model=object,
             responses={503: {"description": "Redis is down: no process state can be read"}})
def system_status(ctx: AdminContext = Depends(get_context)) -> JSONResponse | dict[str, object]:
    """Which workers/beat are alive and how fresh their heartbeats are (no secrets).

    503 (with the same fields) when the Redis this app was given does not answer; an app built without
    Redis (embedding, tests) says "not configured" with 200, as there is nothing to be down.
    """
    ok, redis_state = _redis_ok(ctx)
    simulated = bool(ctx.settings.vastkeep_simulated)
    if not ok and ctx.redis is not None:
        return JSONResponse(status_code=503, content={
            "error": "unavailable", "reason": f"Redis {redis_state}", "redis": redis_state,
            "simulated": simulated, "processes": {}})
    beats = read_heartbeats(ctx.redis, ctx.keys, ctx.clock) if ok and ctx.redis is not None else {}
    return {"redis": redis_state, "simulated": simulated,
            "processes": {n: {"kind": b.get("kind"), "pid": b.get("pid"), "ageSeconds": b.get("age_s"),
                              "lastHeartbeat": iso(b.get("at")), "queues": b.get("queues")}
                          for n, b in beats.items()}}


@guarded.post("/ping", status_code=202, summary="Queue vastkeep.system.ping (proves the broker path)")
def system_ping(ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    """Returns the task id; look it up in Flower or the result backend."""
    return {"queued": True, "task": "vastkeep.system.ping", "taskId": ctx.send("vastkeep.system.ping", {})}


router.include_router(guarded)
