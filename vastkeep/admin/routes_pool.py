"""Warm-pool status, the event stream and on-demand port validation, for operators and client services.

``GET /api/proxy/admin/warm-pool/status`` keeps the guide's shape; ``GET .../events`` lets another
service follow the durable event stream by id without touching Redis; ``POST .../ports/validate``
queues Layer 3 for one instance or the whole pool (the work runs on a worker, not in the API).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, get_context
from vastkeep.admin.auth import require_admin_key
from vastkeep.monitoring import warm_pool_status
from vastkeep.polling import PollSchedule
from vastkeep.pool import PoolBook, build_leases, pool_figures
from vastkeep.state.events import STREAM_ID_PART_MAX, is_stream_id

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin_key)], tags=["pool"])

_INSTANCE_ID = re.compile(r"^\d{1,20}$")


def _store(ctx: AdminContext) -> Any:
    if ctx.store is None:
        raise HTTPException(status_code=503, detail="state store not available in this process")
    return ctx.store


@router.get("/warm-pool/status", summary="The guide's warm-pool status (desiredSize, instance, safeMode)")
async def pool_status(ctx: AdminContext = Depends(get_context)) -> dict[str, Any]:
    store = _store(ctx)

    def read() -> dict[str, Any]:
        pool, records = store.get_pool(), store.list_instances()
        polls = (PollSchedule(ctx.redis, ctx.keys, ctx.clock).poll_times([r.instance_id for r in records])
                 if ctx.redis is not None else {})
        book = PoolBook(ctx.redis, ctx.keys, ctx.settings.warm_pool_name)
        now = ctx.clock.now()
        leases = build_leases(ctx.settings, ctx.redis, ctx.keys, ctx.clock)
        figures = pool_figures(ctx.settings, book, records, pool.safe_mode, leases, now, pool.desired_size)
        return warm_pool_status(pool, records, now, polls, figures)

    return await run_in_threadpool(read)


@router.get("/events", summary="Read the durable event stream after a stream id, oldest first")
async def read_events(after: str = Query("0-0", description="stream id to read after, e.g. 1767225600000-0"),
                      count: int = Query(100, ge=1, le=1000),
                      ctx: AdminContext = Depends(get_context)) -> dict[str, Any]:
    if not is_stream_id(after):
        raise HTTPException(status_code=400, detail="after must be a stream id like 1767225600000-0 "
                                                    f"(each part at most {STREAM_ID_PART_MAX})")
    if ctx.events is None:
        raise HTTPException(status_code=503, detail="event stream not available in this process")
    events = await run_in_threadpool(ctx.events.read, after, count)
    items = [e.to_dict() for e in events]
    return {"events": items, "next": items[-1]["id"] if items else after}


@router.post("/ports/validate", status_code=202,
             summary="Queue port validation for one instance ({\"instanceId\": \"...\"}) or the whole pool")
async def validate_ports(body: dict[str, Any] | None = None,
                         ctx: AdminContext = Depends(get_context)) -> dict[str, Any]:
    extra = set(body or {}) - {"instanceId"}
    if extra:  # a misspelt field must not silently turn into a sweep of the whole pool
        raise HTTPException(status_code=400,
                            detail=f"unknown field(s): {', '.join(sorted(extra))[:200]}; expected instanceId")
    instance_id = (body or {}).get("instanceId")
    if instance_id is None:
        return {"taskId": ctx.send("vastkeep.ports.validate_pool"), "scope": "pool"}
    instance_id = str(instance_id)
    if not _INSTANCE_ID.match(instance_id):
        raise HTTPException(status_code=400, detail="instanceId must be a Vast.ai contract id (digits)")
    task_id = ctx.send("vastkeep.ports.validate_instance", {"instance_id": instance_id})
    return {"taskId": task_id, "scope": "instance", "instanceId": instance_id}
