"""Layer 2 admin endpoints: validate the tokens now, replace one at runtime, show where each comes from.

``POST /api/proxy/admin/validate-tokens`` and ``POST /api/proxy/admin/update-token`` keep the guide's
paths and bodies. The handlers call :class:`vastkeep.tokens.manager.TokenManager` directly (a fresh check
takes at most the check timeout, and an update must be validated before it is answered), in
FastAPI's thread pool because the checks block. A token sent to update-token is never echoed, logged
or put in an error: bodies are parsed by hand so no validation error can quote it back.

The checks run in this process, not in a worker, so no task event reports a rejection: each token
that validate-tokens finds newly rejected is handed to the app's ``notify`` (``token-invalid``), which
``worker/api.py`` turns into a Celery event. The durable ``token-invalid`` stream entry is written by
the :class:`~vastkeep.tokens.manager.TokenManager` either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, get_context
from vastkeep.admin.auth import require_admin_key
from vastkeep.admin.openapi import json_body
from vastkeep.core.errors import InvalidInput
from vastkeep.tokens.manager import INVALID, MAX_TOKEN_BYTES, SERVICES, TokenManager, UpdateRefusal

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin_key)], tags=["tokens"])

UPDATE_FIELDS = frozenset({"service", "token", "force"})
UPDATE_STATUS: dict[UpdateRefusal | None, int] = {None: 200, UpdateRefusal.REJECTED: 422,
                                                  UpdateRefusal.UNVERIFIED: 503}
#: exactly what ``_update_body`` and ``token_problem`` accept: printable ASCII, no spaces, at most 4 KiB
UPDATE_BODY = {"type": "object", "required": ["service", "token"], "additionalProperties": False,
               "properties": {"service": {"enum": list(SERVICES)},
                              "token": {"type": "string", "pattern": "^[!-~]+$", "maxLength": MAX_TOKEN_BYTES,
                                        "writeOnly": True, "description": "never echoed or logged"},
                              "force": {"type": "boolean", "default": False,
                                        "description": "store it even when the provider cannot be reached"}}}


def token_manager(request: Request, ctx: AdminContext = Depends(get_context)) -> TokenManager:
    """The app's manager (``app.state.token_manager`` if set, else one built from settings + store)."""
    manager = getattr(request.app.state, "token_manager", None)
    if isinstance(manager, TokenManager):
        return manager
    return TokenManager.from_settings(ctx.settings, ctx.need_store(), events=ctx.sink, clock=ctx.clock,
                                      pools=ctx.check_pools, watchdog=ctx.deadline_watchdog)


@router.post("/validate-tokens", summary="Validate every token now (real API calls, not the cache)")
def validate_tokens(background: BackgroundTasks, manager: TokenManager = Depends(token_manager),
                    ctx: AdminContext = Depends(get_context)) -> dict[str, object]:
    """``{"success": true, "validation": {service: result}}``; a rejected token is a result, not an error.

    Each newly rejected token is announced after the response is sent, so a slow or unreachable
    broker never delays the answer.
    """
    results = manager.validate_all(use_cache=False)
    for service, result in results.items():
        if result.get("status") == INVALID and not result.get("cached"):
            code = result.get("httpStatus")
            fields: dict[str, object] = {"service": service, "error": str(result.get("error")),
                                         "http_status": code if isinstance(code, int) else 0}
            background.add_task(ctx.announce, "token-invalid", fields)
    return {"success": True, "validation": results}


@router.get("/tokens", summary="Where each token comes from and its cached result (no API calls)")
def token_status(manager: TokenManager = Depends(token_manager)) -> dict[str, object]:
    return {"success": True, "tokens": manager.status()}


@dataclass(frozen=True)
class UpdateBody:
    """An update-token request, parsed: ``token`` is checked by the manager (never quoted back)."""

    service: str
    token: object
    force: bool = False


async def _update_body(request: Request) -> UpdateBody:
    """The JSON object of an update-token request, checked field by field (never quoting a value)."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("request body must be a JSON object", field="body") from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    unknown = sorted(str(k)[:40] for k in body if k not in UPDATE_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}; expected service, token, force",
                           field="body")
    if "service" not in body:
        raise InvalidInput("service is required", field="service")
    if "token" not in body:
        raise InvalidInput("token is required", field="token")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidInput("force must be true or false", field="force")
    return UpdateBody(service=TokenManager.check_service(body["service"]), token=body["token"], force=force)


@router.post("/update-token", summary="Replace a token at runtime, after validating it",
             openapi_extra=json_body(UPDATE_BODY),
             responses={400: {"description": "bad body, unknown service, malformed token"},
                        422: {"description": "the provider rejected the new token (old one kept)"},
                        503: {"description": "the provider could not be reached (old one kept; "
                                             "send force=true to store it anyway)"}})
async def update_token(request: Request, manager: TokenManager = Depends(token_manager)) -> JSONResponse:
    """Body ``{"service": "civitai", "token": "...", "force": false}``; every worker uses it at once.

    Answers ``{"success", "service", "validation"}``; a refusal adds ``error`` and ``reason`` (the same text).
    """
    update = await _update_body(request)
    outcome = await run_in_threadpool(manager.update_token, update.service, update.token, force=update.force)
    answer = outcome.to_dict()
    if "error" in answer:  # a refusal: the API's error shape ({error, reason}) around the guide's fields
        answer["reason"] = answer["error"]
    return JSONResponse(status_code=UPDATE_STATUS[outcome.reason], content=answer)
