"""``GET /api/proxy/admin/keepalive/status``: Layer 4 figures for the pool, in the guide's shape.

Per ready instance: ``isRunning`` (a shard runner watches it), ``consecutiveFailures``, ``lastSuccessTime``,
``totalPings``, ``totalSuccesses``, ``totalFailures``, ``successRate``; plus the pool totals and the shard
owners. Two Redis round trips whatever the pool size (the records, then one MGET of the counters).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, get_context
from vastkeep.admin.auth import require_admin_key
from vastkeep.keepalive import is_watched, lease_name, pool_view, read_states
from vastkeep.state import InstanceStatus

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin_key)], tags=["keepalive"])


@router.get("/keepalive/status", summary="ComfyUI keepalive figures per ready instance and for the pool")
async def keepalive_status(ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    (store, redis), keys = ctx.need_state(), ctx.keys

    def read() -> dict[str, object]:
        watched = [r.instance_id for r in store.list_instances()
                   if r.status == InstanceStatus.READY or is_watched(r)]
        states = read_states(redis, keys, watched)
        view = pool_view({iid: (st, True) for iid, st in states.items()})
        shards = ctx.settings.comfyui_keepalive_shards
        pipe = redis.pipeline(transaction=False)
        for n in range(shards):
            pipe.exists(keys.lease(lease_name(n)))
        view["shards"] = {"count": shards, "owned": sum(1 for held in pipe.execute() if held)}
        return view

    return await run_in_threadpool(read)
