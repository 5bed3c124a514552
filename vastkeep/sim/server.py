"""The simulated cloud's one HTTP port: Vast.ai (``/api/v0``, ``/api/v1/instances``), HuggingFace
(``/api/whoami-v2``), Civitai (``/api/v1/me``) and control (``/_sim``), served by aiohttp on top of the
:class:`~vastkeep.sim.core.Simulator` core, plus the ComfyUI stand-in on every instance's listeners.

The route modules get the core, never this module: this is the only place that knows them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.sim import control_api, tokens_api, vast_api
from vastkeep.sim.comfy.app import ComfyApp
from vastkeep.sim.core import SimConfig, Simulator
from vastkeep.sim.faults import fault_body

log = logging.getLogger("vastkeep.sim")

__all__ = ["SimConfig", "SimServer", "Simulator"]


class SimServer:
    """The aiohttp application and runner around one :class:`Simulator` (``.sim``)."""

    def __init__(self, config: SimConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self.comfy = ComfyApp()
        self.sim = Simulator(config, clock, comfy_protocol=self.comfy.protocol_factory)
        self.comfy.attach(self.sim)
        self.app = web.Application(middlewares=[self._service_middleware])
        vast_api.add_routes(self.app, self.sim)
        tokens_api.add_routes(self.app, self.sim)
        control_api.add_routes(self.app, self.sim)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        sim = self.sim
        await sim.start()
        await self.comfy.setup()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, sim.config.host, sim.config.port, backlog=1024)
        await site.start()
        sim.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.sim.stop_instances()
        await self.comfy.cleanup()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._runner.cleanup(), 5)
        self.sim.stop_ssh()

    @web.middleware
    async def _service_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Control-token check for ``/_sim``; for the provider APIs: request log, faults, key check; and a
        JSON answer for unknown routes (the real API never answers an API client in plain text)."""
        path = request.path
        if path.startswith("/_sim"):
            if request.headers.get("X-Sim-Token") != self.sim.config.control_token:
                return web.json_response({"error": "control token required"}, status=401)
            return await _json_errors(handler, request)
        admission = self.sim.admit(
            request.method, path, dict(request.query), request.headers.get("Authorization", "")
        )
        if admission.service is None:
            return await _json_errors(handler, request)
        fault, entry = admission.fault, admission.entry
        assert entry is not None
        if fault is not None and fault.delay_s > 0:
            entry["fault"] = "slow"
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.status == 200:  # ambiguous: a 200 whose body says nothing reliable
            entry["status"] = 200
            entry["fault"] = fault.body_kind or "200-body"
            return web.Response(body=(fault.body or "").encode(), status=200,
                                headers={"Content-Type": "application/json"})
        if fault is not None and fault.status is not None:
            body, ctype = fault_body(fault.status, admission.service)
            entry["status"] = fault.status
            entry["fault"] = str(fault.status)
            text = fault.body if fault.body is not None else body
            if ctype == "application/json":
                return web.Response(body=text.encode(), status=fault.status, headers={"Content-Type": ctype})
            return web.Response(text=text, status=fault.status, content_type=ctype)
        too_soon = admission.service == "vast" and self.sim.rate_limit.check(
            request.method, path, entry["key_fingerprint"] or "anonymous", self.sim.clock.monotonic())
        if too_soon:  # Vast.ai's minimum gap: plain text, no Retry-After
            entry["status"] = 429
            return web.Response(text=too_soon, status=429, content_type="text/plain")
        if not admission.authorized:
            entry["status"] = 401
            return tokens_api.unauthorized(admission.service)
        response = await _json_errors(handler, request)
        entry["status"] = response.status
        return response


async def _json_errors(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], request: web.Request
) -> web.StreamResponse:
    """Unknown routes and wrong methods answer the API's JSON error shape instead of aiohttp's text."""
    try:
        return await handler(request)
    except web.HTTPNotFound as exc:
        if exc.text and exc.content_type == "application/json":
            raise
        return vast_api.api_json(
            {"success": False, "error": "not_found", "msg": f"no route {request.method} {request.path}"}, 404
        )
    except web.HTTPMethodNotAllowed as exc:
        return vast_api.api_json(
            {"success": False, "error": "method_not_allowed", "msg": f"{exc.method} not allowed here"}, 405
        )
