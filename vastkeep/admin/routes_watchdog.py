"""Layer 6 for operators: the watchdog's status, and the reset of a daemon supervision gave up on.

``GET /api/proxy/admin/watchdog/status``, the guide's ``processWatchdog.getStatus()`` shape:
``processes``: the local processes of ``vastkeep up`` (its watchdog publishes their status to Redis every
few seconds; empty when no stack runs or under systemd/Compose, where the service manager supervises).
``daemons``: the logical daemons from the supervision book, each with the guide's fields (``name``, ``pid``,
``status``, ``restartCount``, ``consecutiveCrashes``, ``lastStartTime``, ``lastCrashTime``, ``lastError``)
plus ``heartbeatAgeS`` and ``nextRestartAt``. A fixed number of Redis calls whatever the pool size.

``POST /api/proxy/admin/watchdog/{name}/reset`` (``name``: a key of ``daemons``, or its display ``name``):
a ``failed`` daemon goes back to ``registered`` with zero counters and the next sweep starts it at once;
200 with its new status (one ``daemons`` entry plus ``id`` and ``previousStatus``), 404 for a daemon the
book does not know, 409 for one that is not failed. Recorded as the event ``process-reset`` (and the
Celery event ``vastkeep-process-reset`` through the app's notifier).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from starlette.concurrency import run_in_threadpool

from vastkeep.admin.app import ADMIN_PREFIX, NO_STATE_STORE, AdminContext, get_context
from vastkeep.admin.auth import require_admin_key
from vastkeep.core.redact import redact_path
from vastkeep.supervision import (
    NOT_FAILED,
    RESET,
    UNKNOWN,
    ResetOutcome,
    ResetView,
    SupervisionBook,
    reset_daemon,
    watchdog_status,
)

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin_key)], tags=["watchdog"])
KNOWN_SHOWN = 20
_TIME = {"type": ["string", "null"], "description": "ISO 8601"}
#: the reset's answer: one ``daemons`` entry of watchdog/status, plus ``id`` and ``previousStatus``
RESET_ANSWER = {
    "type": "object", "required": ["id", "name", "status", "previousStatus", "restartCount"],
    "properties": {
        "id": {"type": "string", "description": "the book's key (keepalive-shard-0, poll-dispatcher, ...)"},
        "name": {"type": "string", "description": "the guide-style display name (KeepaliveShard-0)"},
        "status": {"type": "string", "description": "registered: the next sweep starts it"},
        "previousStatus": {"type": "string"}, "pid": {"type": ["integer", "null"]},
        "restartCount": {"type": "integer"}, "consecutiveCrashes": {"type": "integer"},
        "lastStartTime": _TIME, "lastCrashTime": _TIME, "lastError": {"type": ["string", "null"]},
        "heartbeatAgeS": {"type": ["number", "null"]}, "nextRestartAt": _TIME},
}


@router.get("/watchdog/status", summary="Supervised processes (vastkeep up) and logical daemons (Layer 6)")
async def watchdog(ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    redis, keys, clock = ctx.need_redis(NO_STATE_STORE), ctx.keys, ctx.clock
    return await run_in_threadpool(watchdog_status, redis, keys, clock)


@router.post("/watchdog/{name}/reset",
             summary="Reset a daemon supervision marked failed: the next sweep starts it",
             responses={200: {"content": {"application/json": {"schema": RESET_ANSWER}}},
                        404: {"description": "no daemon of that id or name in the supervision book"},
                        409: {"description": "the daemon is not failed (supervision is handling it)"}})
async def reset(name: str, ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    """``{"id", "name", "status": "registered", "previousStatus": "failed", "restartCount": 0, ...}``."""
    redis, keys, clock = ctx.need_redis(NO_STATE_STORE), ctx.keys, ctx.clock

    def go() -> tuple[ResetOutcome, ResetView | None, list[str]]:
        outcome, view = reset_daemon(redis, keys, clock, name, ctx.sink)
        known = sorted(SupervisionBook(redis, keys).all()) if outcome == UNKNOWN else []
        return outcome, view, known

    outcome, view, known = await run_in_threadpool(go)
    if outcome == UNKNOWN or view is None:
        listed = ", ".join(known[:KNOWN_SHOWN]) + (", ..." if len(known) > KNOWN_SHOWN else "")
        raise HTTPException(status_code=404, detail=f"no daemon {redact_path(name[:80])!r} in the "
                                                    f"supervision book; known: {listed or 'none yet'}")
    if outcome == NOT_FAILED:
        raise HTTPException(status_code=409, detail=f"{view['id']} is {view['status']}, not failed: "
                                                    "supervision restarts it on its own schedule")
    if outcome == RESET:
        ctx.announce("process-reset", {"id": view["id"], "name": view["name"],
                                       "previousStatus": view["previousStatus"]})
    return dict(view)
