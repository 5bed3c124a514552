"""Health, metrics and system status: what load balancers, Prometheus and operators poll.

``/health`` and ``/metrics`` are unguarded (they reveal counts, never data or secrets) so probes
need no key; everything under ``/api/proxy/admin`` needs ``X-Admin-Key``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, get_context
from vastkeep.admin.auth import require_admin_key
from vastkeep.core.clock import iso
from vastkeep.state.heartbeats import read_heartbeats

router = APIRouter()
guarded = APIRouter(prefix=f"{ADMIN_PREFIX}/system", dependencies=[Depends(require_admin_key)],
                    tags=["system"])


def _redis_ok(ctx: AdminContext) -> tuple[bool, str]:
    if ctx.redis is None:
        return False, "not configured"
    try:
        return bool(ctx.redis.ping()), "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the type is enough
        return False, f"down ({type(exc).__name__})"


@router.get("/health", tags=["health"], summary="Liveness + Redis reachability (no key needed)")
def health(ctx: AdminContext = Depends(get_context)) -> JSONResponse:
    """200 when Redis answers PING, else 503, so a load balancer can act on the status code alone."""
    ok, redis_state = _redis_ok(ctx)
    body = {"status": "ok" if ok else "degraded", "redis": redis_state,
            "simulated": bool(ctx.settings.vastkeep_simulated), "time": iso(ctx.clock.now())}
    return JSONResponse(status_code=200 if ok else 503, content=body)


def _gauge(lines: list[str], name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} gauge")
    for labels, value in samples:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def collect_metrics(ctx: AdminContext) -> str:
    """Prometheus text exposition (format 0.0.4) of a few gauges read from Redis and the store."""
    lines: list[str] = []
    ok, _ = _redis_ok(ctx)
    _gauge(lines, "vastkeep_redis_up", "1 when Redis answers PING", [({}, 1.0 if ok else 0.0)])
    if ok:
        beats = read_heartbeats(ctx.redis, ctx.keys, ctx.clock)
        workers = {n: b for n, b in beats.items() if b.get("kind") == "worker"}
        _gauge(lines, "vastkeep_workers_alive", "workers with a live heartbeat", [({}, float(len(workers)))])
        _gauge(lines, "vastkeep_heartbeat_age_seconds", "age of each process heartbeat",
               [({"process": n}, float(b["age_s"])) for n, b in beats.items()])
        if ctx.store is not None:
            instances = ctx.store.list_instances()
            by_status: dict[str, int] = {}
            for rec in instances:
                by_status[rec.status] = by_status.get(rec.status, 0) + 1
            _gauge(lines, "vastkeep_instances", "instances known to the control plane, by status",
                   [({"status": s}, float(c)) for s, c in sorted(by_status.items())])
            pool = ctx.store.get_pool()
            _gauge(lines, "vastkeep_pool_desired_size", "warm pool desired size",
                   [({}, float(pool.desired_size))])
            _gauge(lines, "vastkeep_safe_mode", "1 while spending is stopped",
                   [({}, 1.0 if pool.safe_mode else 0.0)])
        if ctx.events is not None:
            _gauge(lines, "vastkeep_events_stream_length", "entries in the event stream",
                   [({}, float(ctx.events.length()))])
    return "\n".join(lines) + "\n"


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse,
            summary="Prometheus metrics (text format, no key needed)")
def metrics(ctx: AdminContext = Depends(get_context)) -> PlainTextResponse:
    """Scraped by Prometheus; always 200 so a Redis outage shows as ``vastkeep_redis_up 0``."""
    try:
        text = collect_metrics(ctx)
    except Exception as exc:  # noqa: BLE001 - a scrape must not 500 on a Redis hiccup mid-read
        text = f"# collection failed: {type(exc).__name__}\nvastkeep_redis_up 0\n"
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@guarded.get("/status", summary="Process heartbeats and Redis state",
             responses={503: {"description": "Redis is down: no process state can be read"}})
def system_status(ctx: AdminContext = Depends(get_context)) -> Any:
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
    beats = read_heartbeats(ctx.redis, ctx.keys, ctx.clock) if ok else {}
    return {"redis": redis_state, "simulated": simulated,
            "processes": {n: {"kind": b.get("kind"), "pid": b.get("pid"), "ageSeconds": b.get("age_s"),
                              "lastHeartbeat": iso(b.get("at")), "queues": b.get("queues")}
                          for n, b in beats.items()}}


@guarded.post("/ping", status_code=202, summary="Queue vastkeep.system.ping (proves the broker path)")
def system_ping(ctx: AdminContext = Depends(get_context)) -> dict[str, Any]:
    """Returns the task id; look it up in Flower or the result backend."""
    return {"queued": True, "task": "vastkeep.system.ping", "taskId": ctx.send("vastkeep.system.ping", {})}


router.include_router(guarded)
