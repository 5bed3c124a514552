"""Warm-pool status, the event stream and on-demand port validation, for operators and client services.

``GET /api/proxy/admin/warm-pool/status`` keeps the guide's shape; ``GET .../events`` lets another
service follow the durable event stream by id without touching Redis; ``POST .../ports/validate``
queues Layer 3 for one instance or the whole pool (the work runs on a worker, not in the API).
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, get_context, json_whole
from vastkeep.admin.auth import require_admin_key
from vastkeep.admin.openapi import INSTANCE_ID_PATTERN, decimal_at_most, json_body
from vastkeep.monitoring import warm_pool_status
from vastkeep.polling import PollSchedule
from vastkeep.pool import PoolBook, build_leases, pool_figures
from vastkeep.state.events import STREAM_ID_PART_MAX, is_stream_id

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin_key)], tags=["pool"])

_INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)
_PART = decimal_at_most(STREAM_ID_PART_MAX, 20)
#: exactly what :func:`is_stream_id` accepts, for the document
STREAM_ID_PATTERN = f"^{_PART}-{_PART}$"
VALIDATE_BODY = {
    "type": ["object", "null"], "additionalProperties": False,
    "description": "{} or no body: the whole pool; instanceId: one instance",
    "properties": {"instanceId": {"anyOf": [
        {"type": "string", "pattern": INSTANCE_ID_PATTERN},
        {"type": "integer", "minimum": 0, "maximum": 10**20 - 1},
        {"type": "null"}]}},
}


@router.get("/warm-pool/status", summary="The guide's warm-pool status (desiredSize, instance, safeMode)")
async def pool_status(ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    store = ctx.need_store()

    def read() -> dict[str, object]:
        pool, records = store.get_pool(), store.list_instances()
        polls = (PollSchedule(ctx.redis, ctx.keys, ctx.clock).poll_times([r.instance_id for r in records])
                 if ctx.redis is not None else {})
        book = PoolBook(ctx.need_redis(), ctx.keys, ctx.settings.warm_pool_name)
        now = ctx.clock.now()
        leases = build_leases(ctx.settings, ctx.need_redis(), ctx.keys, ctx.clock)
        figures = pool_figures(ctx.settings, book, records, pool.safe_mode, leases, now, pool.desired_size)
        return warm_pool_status(pool, records, now, polls, figures)

    return await run_in_threadpool(read)


@router.get("/events", summary="Read the durable event stream after a stream id, oldest first",
            responses={400: {"description": "after is not a stream id <ms>-<seq> (each part <= 2**64-1)"}})
async def read_events(after: str = Query("0-0", description="stream id to read after, e.g. 1767225600000-0",
                                         json_schema_extra={"pattern": STREAM_ID_PATTERN}),
                      count: int = Query(100, ge=1, le=1000),
                      ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    if not is_stream_id(after):
        raise HTTPException(status_code=400, detail="after must be a stream id like 1767225600000-0 "
                                                    f"(each part at most {STREAM_ID_PART_MAX})")
    if ctx.events is None:
        raise HTTPException(status_code=503, detail="event stream not available in this process")
    events = await run_in_threadpool(ctx.events.read, after, count)
    items = [e.to_dict() for e in events]
    return {"events": items, "next": items[-1]["id"] if items else after}


@router.post("/ports/validate", status_code=202,
             summary="Queue port validation for one instance ({\"instanceId\": \"...\"}) or the whole pool",
             responses={400: {"description": "an unknown field, or an instanceId that is not a contract id"}},
             openapi_extra=json_body(VALIDATE_BODY, required=False))
async def validate_ports(body: dict[str, object] | None = None,
                         ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    extra = set(body or {}) - {"instanceId"}
    if extra:  # a misspelt field must not silently turn into a sweep of the whole pool
        raise HTTPException(status_code=400,
                            detail=f"unknown field(s): {', '.join(sorted(extra))[:200]}; expected instanceId")
    given = (body or {}).get("instanceId")
    whole = json_whole(given)
    if whole is None:
        return {"taskId": ctx.send("vastkeep.ports.validate_pool"), "scope": "pool"}
    instance_id = str(whole)
    if not _INSTANCE_ID.fullmatch(instance_id) or isinstance(given, bool):
        raise HTTPException(status_code=400, detail="instanceId must be a Vast.ai contract id (digits)")
    task_id = ctx.send("vastkeep.ports.validate_instance", {"instance_id": instance_id})
    return {"taskId": task_id, "scope": "instance", "instanceId": instance_id}
