"""Steer the warm pool: its desired size and safe mode, and client leases.

``PUT /api/proxy/admin/warm-pool/size`` ``{"desiredSize": n}`` stores the size
(0..WARM_POOL_MAX_SIZE, else 422 with the reason) and queues a reconcile round so the pool starts
converging now, not at the next beat.
``GET|POST /api/proxy/admin/safe-mode`` shows or switches safe mode (``{"enabled": bool, "reason": "..."}``);
switching it on here is an operator's safe mode, which never ends by itself.
``POST /api/proxy/admin/warm-pool/leases`` ``{"durationS", "client"}`` leases a ready instance (201 with
``leaseId``, ``instanceId``, ``connectionUrl``, ``leasedUntil``, ``fence``, ``endpointToken``,
``endpointUrl`` (the proxy's ``/c/{endpointToken}/``, docs/proxy.md); 409 when all are leased, 503
when none is ready, both with ``retryAfterS``); ``POST .../leases/{leaseId}/renew``;
``DELETE .../leases/{leaseId}``. A refusal (409/503) carries ``Retry-After``: 1 s while the instance a
lease just ended is health-checked (the release queues that check at once).

Each request is one logical call with one request id (the client's ``Idempotency-Key`` header, else one
made here before the first attempt), so a Lua script redis-py re-sends after a timeout answers with its
first answer: never two instances for one grant, a release or rotation answered as it happened. A client
that retries its own HTTP call after a lost answer sends the same ``Idempotency-Key`` to get that answer.
"""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Header, HTTPException
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, get_context, json_whole
from vastkeep.admin.auth import require_admin_key
from vastkeep.admin.openapi import json_body
from vastkeep.core.errors import InvalidInput, LeaseBroken, LeaseBusy
from vastkeep.core.settings import Settings
from vastkeep.pool import PoolBook, build_leases, safe_mode_view, set_safe_mode, set_size
from vastkeep.pool.leasing import MAX_LEASE_S, PoolLeases, check_request_id, new_request_id
from vastkeep.pool.ops import MAX_REASON_CHARS
from vastkeep.proxy import endpoints
from vastkeep.state import StateStore

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin_key)], tags=["warm-pool"])
RECONCILE_TASK = "vastkeep.pool.reconcile"
SIZE_PATH = f"{ADMIN_PREFIX}/warm-pool/size"
#: The health check after a client lease: Layer 3's port validation of that one instance.
CHECK_TASK = "vastkeep.ports.validate_instance"
#: One logical call's request id, chosen by the client (the same on a retry of a call whose answer it lost).
IDEMPOTENCY_KEY = Header(None, alias="Idempotency-Key", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$",
                         description="the same key on a retry gets the first answer of a call that went "
                                     "through")

# What each handler accepts, exactly (an unknown field is refused with 422 by ``_body``).
DURATION = {"type": "integer", "minimum": 1, "maximum": MAX_LEASE_S, "description": "seconds"}
SIZE_BODY = {"type": "object", "required": ["desiredSize"], "additionalProperties": False,
             "properties": {"desiredSize": {"type": "integer", "minimum": 0,
                                            "description": "0..WARM_POOL_MAX_SIZE"}}}
SAFE_MODE_BODY = {"type": "object", "required": ["enabled"], "additionalProperties": False,
                  "properties": {"enabled": {"type": "boolean"},
                                 "reason": {"type": ["string", "null"], "maxLength": MAX_REASON_CHARS}}}
LEASE_BODY = {"type": "object", "required": ["durationS", "client"], "additionalProperties": False,
              "properties": {"durationS": DURATION,
                             "client": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$",
                                        "description": "the client service's name"},
                             "resubmitPrompts": {"type": "boolean", "default": False,
                                                 "description": "after a failover, the endpoint re-submits "
                                                                "this lease's prompts in flight"}}}
RENEW_BODY = {"type": ["object", "null"], "additionalProperties": False,
              "properties": {"durationS": {**DURATION, "default": 600}}}
BUSY = {"description": "every ready instance is leased (409) / none is ready (503: also while the only free "
                       "one is health-checked after a lease, Retry-After 1; and when Redis is down); "
                       "retryAfterS and Retry-After say when to try again"}


def document(doc: dict[str, object], settings: Settings) -> None:
    """This deployment's bound on the desired size, in the OpenAPI document."""
    node: object = doc
    for step in ("paths", SIZE_PATH, "put", "requestBody", "content", "application/json", "schema",
                 "properties", "desiredSize"):
        node = node[step] if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise KeyError(f"{SIZE_PATH}: no desiredSize schema in the document")
    node["maximum"] = settings.warm_pool_max_size


def _parts(ctx: AdminContext) -> tuple[StateStore, PoolBook]:
    store, redis = ctx.need_state()
    return store, PoolBook(redis, ctx.keys, ctx.settings.warm_pool_name)


def _body(body: object, allowed: set[str]) -> dict[str, object]:
    """The raw JSON body as an object with only ``allowed`` fields (whole-number floats as ints), else 422."""
    if not isinstance(body, dict):
        raise HTTPException(status_code=422, detail="the body must be a JSON object")
    extra = set(body) - allowed
    if extra:
        raise HTTPException(status_code=422, detail=f"unknown field(s): {', '.join(sorted(extra))[:200]}; "
                                                    f"expected {', '.join(sorted(allowed))}")
    return {str(k): json_whole(v) for k, v in body.items()}


def _kick(ctx: AdminContext) -> str | None:
    """Queue a reconcile round now (best effort: the beat runs one within its interval anyway)."""
    if ctx.dispatch is None:
        return None
    try:
        return ctx.dispatch(RECONCILE_TASK, {})
    except Exception:  # noqa: BLE001 - the size is stored; the beat will converge
        return None


@router.put("/warm-pool/size", summary="Set the warm pool's desired size ({\"desiredSize\": n})",
            openapi_extra=json_body(SIZE_BODY))
async def put_size(body: object = Body(None), ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    store, _ = _parts(ctx)
    data = _body(body, {"desiredSize"})
    if "desiredSize" not in data:
        raise HTTPException(status_code=422, detail="desiredSize is required")
    size = data["desiredSize"]
    if isinstance(size, bool) or not isinstance(size, int):
        raise HTTPException(status_code=422, detail="desiredSize must be a JSON whole number "
                                                    f"from 0 to {ctx.settings.warm_pool_max_size}")
    try:
        result = await run_in_threadpool(set_size, store, ctx.sink, size,
                                         ctx.settings.warm_pool_max_size)
    except InvalidInput as exc:
        raise HTTPException(status_code=422, detail=exc.message) from None
    return {**result, "maxSize": ctx.settings.warm_pool_max_size, "taskId": _kick(ctx)}


@router.get("/safe-mode", summary="Is spending stopped, and why ({enabled, reason, cause, since})")
async def get_safe_mode(ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    store, book = _parts(ctx)
    return await run_in_threadpool(safe_mode_view, store, book)


@router.post("/safe-mode", summary="Switch safe mode ({\"enabled\": bool, \"reason\": \"...\"})",
             openapi_extra=json_body(SAFE_MODE_BODY))
async def post_safe_mode(body: object = Body(None),
                         ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    store, book = _parts(ctx)
    data = _body(body, {"enabled", "reason"})
    if "enabled" not in data:
        raise HTTPException(status_code=422, detail="enabled is required (true or false)")
    try:
        view = await run_in_threadpool(set_safe_mode, store, book, ctx.sink,
                                       data["enabled"], data.get("reason"), ctx.clock.now())
    except InvalidInput as exc:
        raise HTTPException(status_code=422, detail=exc.message) from None
    if not view["enabled"]:
        view["taskId"] = _kick(ctx)
    return view


# ── client leases ────────────────────────────────────────────────────────────
def _leases(ctx: AdminContext) -> PoolLeases:
    store, _ = _parts(ctx)
    dispatch = ctx.dispatch

    def check(instance_id: str) -> None:  # the leasing flow's check port: a port validation by name
        if dispatch is not None:
            dispatch(CHECK_TASK, {"instance_id": instance_id})

    return build_leases(ctx.settings, ctx.need_redis(), ctx.keys, ctx.clock, store, ctx.events,
                        check=check if dispatch is not None else None)


def _request_id(given: str | None) -> str:
    """The call's request id: the client's ``Idempotency-Key``, else a new one (fixed before any attempt)."""
    if given is None:
        return new_request_id()
    try:
        return check_request_id(given)
    except InvalidInput as exc:
        raise HTTPException(status_code=422, detail=f"Idempotency-Key: {exc.message}") from None


def _busy(exc: LeaseBusy) -> JSONResponse:
    """409 when every ready instance is leased, 503 when none is ready yet; both say when to retry."""
    given = exc.data.get("retry_after_s")
    retry = int(given) if isinstance(given, int | float) and given else 1
    status = 409 if exc.data.get("reason") == "all-leased" else 503
    return JSONResponse(status_code=status, headers={"Retry-After": str(retry)},
                        content={"error": "conflict" if status == 409 else "unavailable",
                                 "reason": exc.message, "retryAfterS": retry})


@router.post("/warm-pool/leases", status_code=201,
             summary="Lease a ready instance ({\"durationS\": 600, \"client\": \"name\"}) → 201, or 409/503",
             responses={409: BUSY, 503: BUSY}, openapi_extra=json_body(LEASE_BODY), response_model=object)
async def create_lease(body: object = Body(None), ctx: AdminContext = Depends(get_context),
                       idempotency_key: str | None = IDEMPOTENCY_KEY) -> JSONResponse | dict[str, object]:
    data = _body(body, {"durationS", "client", "resubmitPrompts"})
    resubmit = data.get("resubmitPrompts", False)
    if not isinstance(resubmit, bool):
        raise HTTPException(status_code=422, detail="resubmitPrompts must be true or false")
    leases = _leases(ctx)
    rid = _request_id(idempotency_key)
    try:
        grant = await run_in_threadpool(lambda: leases.grant(data.get("durationS"), data.get("client"),
                                                             request_id=rid))
    except InvalidInput as exc:
        raise HTTPException(status_code=422, detail=exc.message) from None
    except LeaseBusy as exc:
        return _busy(exc)
    # the endpoint token (the proxy's /c/{endpointToken}/) is keyed to this grant: pool + instance + fence
    answer: dict[str, object] = await run_in_threadpool(
        lambda: endpoints.with_endpoint(grant.to_dict(), ctx.need_redis(), ctx.keys,
                                        ctx.settings.warm_pool_name, ctx.settings.proxy_url,
                                        grant.leased_until, resubmit=resubmit))
    return answer


@router.post("/warm-pool/leases/{lease_id}/renew", summary="Extend a lease ({\"durationS\": 600})",
             responses={404: {"description": "no such lease (unknown, released or expired)"},
                        409: {"description": "the leased instance is being destroyed; take a new lease"}},
             openapi_extra=json_body(RENEW_BODY, required=False))
async def renew_lease(lease_id: str, body: object = Body(None), ctx: AdminContext = Depends(get_context),
                      idempotency_key: str | None = IDEMPOTENCY_KEY) -> dict[str, object]:
    data = _body(body if body is not None else {}, {"durationS"})
    leases = _leases(ctx)
    rid = _request_id(idempotency_key)
    try:
        answer: dict[str, object] = await run_in_threadpool(
            lambda: leases.renew(lease_id, data.get("durationS", 600), request_id=rid))
    except InvalidInput as exc:
        raise HTTPException(status_code=422, detail=exc.message) from None
    except LeaseBroken as exc:
        raise HTTPException(status_code=409, detail=exc.message) from None
    instance_id, fence = endpoints.grant_of(answer)
    await run_in_threadpool(endpoints.follow_lease, ctx.need_redis(), ctx.keys, ctx.settings.warm_pool_name,
                            instance_id, fence)
    return answer


@router.delete("/warm-pool/leases/{lease_id}", summary="Give a leased instance back to the pool",
               responses={404: {"description": "no such lease (unknown, released already or expired)"}})
async def release_lease(lease_id: str, ctx: AdminContext = Depends(get_context),
                        idempotency_key: str | None = IDEMPOTENCY_KEY) -> dict[str, object]:
    leases = _leases(ctx)
    rid = _request_id(idempotency_key)
    answer: dict[str, object] = await run_in_threadpool(lambda: leases.release(lease_id, request_id=rid))
    instance_id, fence = endpoints.grant_of(answer)
    await run_in_threadpool(endpoints.drop, ctx.need_redis(), ctx.keys, ctx.settings.warm_pool_name,
                            instance_id, fence)
    return answer
