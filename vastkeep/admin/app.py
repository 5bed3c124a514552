"""The admin API: a FastAPI app factory that knows nothing about Celery.

Operators and other services use it to look at and steer the control plane (the guide's
``/api/proxy/admin/...`` endpoints). Tasks are triggered through an injected ``dispatch(name,
kwargs) -> task_id`` callable, which ``worker/api.py`` implements with ``app.send_task`` - so this
package stays importable and testable without a broker. Likewise an optional ``notify(kind, fields)``
callable announces what happened in this process (``token-invalid`` after validate-tokens);
``worker/api.py`` sends it as a Celery event, since these checks run here and not in a worker.

Routers live in ``vastkeep/admin/routes_<concern>.py`` and each exports ``router``; add your module
name to :data:`ROUTERS`. Guarded routes use :func:`vastkeep.admin.auth.require_admin_key` and live
under :data:`ADMIN_PREFIX`; shared objects come from :func:`get_context`.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import redis
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vastkeep.admin.openapi import build_document
from vastkeep.core import errors
from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.redact import redact_path
from vastkeep.core.settings import Settings
from vastkeep.providers.deadline import DeadlineWatchdog
from vastkeep.state.keys import Keys
from vastkeep.state.protocols import NULL_EVENTS, EventSink
from vastkeep.tokens import CheckPools

if TYPE_CHECKING:
    from vastkeep.ssh import LogStore
    from vastkeep.state import EventLog, StateStore

ADMIN_PREFIX = "/api/proxy/admin"
MAX_BODY_BYTES = 64 * 1024
#: modules under vastkeep.admin that export ``router`` (append yours; order = OpenAPI order)
ROUTERS: tuple[str, ...] = ("routes_health", "routes_tokens", "routes_pool", "routes_keepalive",
                             "routes_logs", "routes_instances", "routes_warm_pool", "routes_watchdog")
log = logging.getLogger("vastkeep.admin")

Dispatch = Callable[[str, dict[str, object]], str]
Notify = Callable[[str, dict[str, object]], None]
#: A client made with or without ``decode_responses``.
Redis = Union["redis.Redis[str]", "redis.Redis[bytes]"]


NO_STATE_STORE = "state store not available in this process"


@dataclass
class AdminContext:
    """What route handlers share: settings, Redis, store, events, the task dispatcher, notifier, clock."""

    settings: Settings
    redis: Redis | None
    keys: Keys
    clock: Clock
    store: StateStore | None = None
    events: EventLog | None = None
    dispatch: Dispatch | None = None
    notify: Notify | None = None
    #: the bytes-client log store, made on first use (:mod:`vastkeep.admin.routes_logs`)
    logstore: LogStore | None = field(default=None, repr=False)
    #: the process's bounded token-check threads and deadline watchdog, shared by the per-request managers
    check_pools: CheckPools = field(default_factory=CheckPools)
    deadline_watchdog: DeadlineWatchdog = field(default_factory=DeadlineWatchdog)

    @property
    def sink(self) -> EventSink:
        """Where handlers report what happened: the event stream, or the sink that keeps nothing."""
        return self.events if self.events is not None else NULL_EVENTS

    def need_redis(self, detail: str = "Redis not available in this process") -> Redis:
        """This app's Redis client; 503 (with ``detail``) when it was built without one."""
        if self.redis is None:
            raise HTTPException(status_code=503, detail=detail)
        return self.redis

    def need_store(self) -> StateStore:
        """This app's state store; 503 when it was built without one."""
        if self.store is None:
            raise HTTPException(status_code=503, detail=NO_STATE_STORE)
        return self.store

    def need_state(self) -> tuple[StateStore, Redis]:
        """The state store and the Redis client; 503 when either is missing."""
        if self.store is None or self.redis is None:
            raise HTTPException(status_code=503, detail=NO_STATE_STORE)
        return self.store, self.redis

    def send(self, name: str, kwargs: dict[str, object] | None = None) -> str:
        """Queue task ``name`` and return its id; 503 when this app was built without a dispatcher."""
        if self.dispatch is None:
            raise HTTPException(status_code=503, detail="task dispatch not available in this process")
        try:
            return self.dispatch(name, dict(kwargs or {}))
        except Exception as exc:  # broker down etc.: a clean 503, never a traceback
            log.warning("dispatch of %s failed: %s", name, type(exc).__name__)
            raise HTTPException(status_code=503,
                                detail=f"could not queue {name}: broker unavailable") from None

    def announce(self, kind: str, fields: dict[str, object]) -> None:
        """Hand ``kind`` + plain JSON ``fields`` (never a secret) to ``notify``; a failure is only logged.

        The durable record is the event stream; this is the live notification on top of it, so losing
        it must never fail the request that produced it.
        """
        if self.notify is None:
            return
        try:
            self.notify(kind, dict(fields))
        except Exception as exc:  # noqa: BLE001 - a notification channel outage is not the caller's problem
            log.warning("could not announce %s: %s", kind, type(exc).__name__)


def json_whole(value: object) -> object:
    """A JSON number that is a whole number as an int (JSON Schema's ``integer`` admits 3.0 as well as 3)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def get_context(request: Request) -> AdminContext:
    """FastAPI dependency: the app's :class:`AdminContext`."""
    ctx: AdminContext = request.app.state.vk
    return ctx


class BodyLimit:
    """Refuse request bodies above ``limit`` bytes with 413 (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _json(send, 400, {"error": "bad_request", "reason": "invalid Content-Length"})
                    return
                if declared > self.limit:
                    await _json(send, 413, {"error": "payload_too_large",
                                            "reason": f"request body over {self.limit} bytes"})
                    return
        # Bodies are small (<= limit): read them whole here, so an over-long stream is refused before
        # any handler sees it (FastAPI would turn an error raised mid-parse into a generic 400).
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.limit:
                await _json(send, 413, {"error": "payload_too_large",
                                        "reason": f"request body over {self.limit} bytes"})
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _json(send: Send, status: int, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _status_for(exc: errors.VastkeepError) -> int:
    """Map the error tree onto HTTP: permanent → 4xx, transient → 503 (redis-py errors: 503 too, below)."""
    if isinstance(exc, errors.NotFound):
        return 404
    if isinstance(exc, errors.LeaseBusy | errors.SafeModeActive):
        return 409
    if isinstance(exc, errors.TransientError):
        return 503
    if isinstance(exc, errors.AuthError):
        return 502  # the provider refused *our* credentials: not the caller's fault
    return 400


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo "input": a rejected update-token body would put the token in the response.
        problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                    for e in exc.errors()]
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse(status_code=422, content={"error": "validation_error",
                                                      "reason": f"{where}: {first['msg']}".strip(": "),
                                                      "problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names only the first route's methods; a path may have several
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return JSONResponse(status_code=exc.status_code, headers=headers or None,
                            content={"error": _error_name(exc.status_code), "reason": str(exc.detail)})

    @app.exception_handler(errors.VastkeepError)
    async def _vastkeep(_: Request, exc: errors.VastkeepError) -> JSONResponse:
        body = exc.to_dict()
        body["reason"] = body.pop("message", "") or type(exc).__name__
        return JSONResponse(status_code=_status_for(exc), content=body)

    @app.exception_handler(redis.RedisError)
    async def _redis(request: Request, exc: redis.RedisError) -> JSONResponse:
        # Redis down, timing out, loading, read-only or refusing writes (OOM): the state is unavailable,
        # not the caller's fault and not a crash. Only the type is shown: messages name hosts and ports.
        name = type(exc).__name__
        log.warning("admin API: Redis error on %s %s: %s", request.method, redact_path(request.url.path),
                    name)
        return JSONResponse(status_code=503, content={"error": "unavailable",
                                                      "reason": f"Redis unavailable ({name})"})

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": "bad_request", "reason": str(exc)[:300]})


def flat_routes(app: FastAPI) -> list[object]:
    """Every route of the app, routers included (FastAPI >= 0.160 keeps included routers as nodes)."""
    from fastapi import routing  # noqa: PLC0415

    flatten: Callable[[list[BaseRoute]], Iterable[object]] | None = getattr(routing, "iter_route_contexts",
                                                                            None)
    return list(flatten(app.routes)) if flatten is not None else list(app.routes)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves at ``path`` (the ``Allow`` header of a 405)."""
    methods: set[str] = set()
    for route in flat_routes(app):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


_ERROR_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                415: "unsupported_media_type", 422: "validation_error", 503: "unavailable"}


def _error_name(status: int) -> str:
    return _ERROR_NAMES.get(status, "error")


def create_app(
    settings: Settings,
    *,
    store: StateStore | None = None,
    events: EventLog | None = None,
    dispatch: Dispatch | None = None,
    notify: Notify | None = None,
    extra_routers: Iterable[APIRouter] = (),
    redis: Redis | None = None,
    clock: Clock = SYSTEM_CLOCK,
    keys: Keys | None = None,
) -> FastAPI:
    """Build the admin app. ``redis`` defaults to ``store.redis`` or a client for ``settings.redis_url``.

    ``notify(kind, fields)``, when given, is called for events worth a live notification (for now
    ``token-invalid`` with ``service``, ``error``, ``http_status``); its failures are logged, never raised.
    """
    if redis is None and store is not None:
        redis = store.redis
    if redis is None and settings.redis_url:
        from vastkeep.state.connection import connect  # noqa: PLC0415

        redis = connect(settings.redis_url)
    keys = keys or (store.keys if store is not None else None) or Keys()
    app = FastAPI(title="vastkeep admin API", version="1", docs_url="/docs", openapi_url="/openapi.json",
                  redoc_url=None,
                  description="Steer the vastkeep control plane. "
                              "Guarded endpoints need the `X-Admin-Key` header.")
    app.state.admin_key = settings.admin_api_key
    app.state.vk = AdminContext(settings=settings, redis=redis, keys=keys, clock=clock, store=store,
                                events=events, dispatch=dispatch, notify=notify)
    _install_error_handlers(app)
    for module_name in ROUTERS:
        module = importlib.import_module(f"vastkeep.admin.{module_name}")
        app.include_router(module.router)
    for router in extra_routers:
        app.include_router(router)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    def document() -> dict[str, object]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, settings, ROUTERS)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]  # FastAPI's documented way to replace the document
    return app
