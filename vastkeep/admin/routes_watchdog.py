"""``GET /api/proxy/admin/watchdog/status``: Layer 6, the guide's ``processWatchdog.getStatus()`` shape.

``processes``: the local processes of ``vastkeep up`` (its watchdog publishes their status to Redis every
few seconds; empty when no stack runs or under systemd/Compose, where the service manager supervises).
``daemons``: the logical daemons from the supervision book, each with the guide's fields (``name``, ``pid``,
``status``, ``restartCount``, ``consecutiveCrashes``, ``lastStartTime``, ``lastCrashTime``, ``lastError``)
plus ``heartbeatAgeS`` and ``nextRestartAt``. A fixed number of Redis calls whatever the pool size.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from starlette.concurrency import run_in_threadpool

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, get_context
from vastkeep.admin.auth import require_admin_key
from vastkeep.supervision import watchdog_status

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin_key)], tags=["watchdog"])


@router.get("/watchdog/status", summary="Supervised processes (vastkeep up) and logical daemons (Layer 6)")
async def watchdog(ctx: AdminContext = Depends(get_context)) -> dict[str, Any]:
    if ctx.redis is None:
        raise HTTPException(status_code=503, detail="state store not available in this process")
    redis, keys, clock = ctx.redis, ctx.keys, ctx.clock
    return await run_in_threadpool(watchdog_status, redis, keys, clock)
