"""Per-instance operator actions of Layer 5: adopt, forget, poll now.

``POST /api/proxy/admin/instances/{id}/adopt`` takes an unlabelled instance the provider lists into our
care (404: not in the provider listing; 409: already ours; 422: not a contract id). ``.../forget``
releases one: its record and schedule go, discovery leaves it alone from then on, and nothing at all is
done to the instance itself (404: no record; 409: leased to a client right now). ``.../poll`` makes it
due now (a lease taken elsewhere, an operator's doubt): the dispatcher polls it within a moment.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, HTTPException, Path
from starlette.concurrency import run_in_threadpool

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, get_context
from vastkeep.admin.auth import require_admin_key
from vastkeep.admin.openapi import INSTANCE_ID_PATTERN
from vastkeep.core.errors import NotFound
from vastkeep.polling import PollSchedule, ProviderSnapshot, adopt, forget
from vastkeep.state import StateStore

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin_key)], tags=["instances"])

_INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)
#: the path parameter as documented (the handlers check it themselves: 422 with their own reason)
INSTANCE_ID = Path(description="a Vast.ai contract id", json_schema_extra={"pattern": INSTANCE_ID_PATTERN})
NOT_A_CONTRACT_ID = "instance id must be a Vast.ai contract id (digits)"


def _checked(ctx: AdminContext, instance_id: str) -> StateStore:
    if not _INSTANCE_ID.fullmatch(instance_id):
        raise HTTPException(status_code=422, detail=NOT_A_CONTRACT_ID)
    return ctx.need_store()


def _schedule(ctx: AdminContext) -> PollSchedule:
    return PollSchedule(ctx.need_redis(), ctx.keys, ctx.clock)


@router.post("/instances/{instance_id}/adopt", summary="Take an unlabelled instance into vastkeep's care",
             responses={404: {"description": "not in the provider listing (the reason says when read)"},
                        409: {"description": "already in vastkeep's care"}})
async def adopt_instance(instance_id: str = INSTANCE_ID,
                         ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    store = _checked(ctx, instance_id)
    snapshot = ProviderSnapshot(ctx.need_redis(), ctx.keys, ctx.clock,
                                label_prefix=ctx.settings.warm_pool_label_prefix)

    def go() -> dict[str, object]:
        try:
            rec = adopt(store, snapshot, _schedule(ctx), instance_id)
        except NotFound as exc:
            raise HTTPException(status_code=404, detail=exc.message) from None
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return {"instanceId": rec.instance_id, "adopted": True, "status": rec.status,
                "vastStatus": rec.provider_status, "label": rec.label}

    return await run_in_threadpool(go)


@router.post("/instances/{instance_id}/forget",
             summary="Release an instance from vastkeep's care (nothing is done to the instance)",
             responses={404: {"description": "no record for this instance"},
                        409: {"description": "leased to a client right now"}})
async def forget_instance(instance_id: str = INSTANCE_ID,
                          ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    store = _checked(ctx, instance_id)

    def go() -> dict[str, object]:
        rec = store.get_instance(instance_id)
        if rec is None:
            raise HTTPException(status_code=404, detail=f"no record for instance {instance_id}")
        if rec.leased_until is not None and rec.leased_until > ctx.clock.now():
            raise HTTPException(status_code=409, detail=f"instance {instance_id} is leased to "
                                f"{rec.lease_owner or 'a client'}; release the lease first")
        forget(store, _schedule(ctx), instance_id)
        return {"instanceId": instance_id, "forgotten": True}

    return await run_in_threadpool(go)


@router.post("/instances/{instance_id}/poll", status_code=202, summary="Poll one instance now",
             responses={404: {"description": "no record for this instance"}})
async def poll_instance(instance_id: str = INSTANCE_ID,
                        ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    store = _checked(ctx, instance_id)

    def go() -> dict[str, object]:
        if store.get_instance(instance_id) is None:
            raise HTTPException(status_code=404, detail=f"no record for instance {instance_id}")
        _schedule(ctx).poll_now(instance_id)
        return {"instanceId": instance_id, "requested": True}

    return await run_in_threadpool(go)
