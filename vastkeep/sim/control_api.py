"""The simulator's control API under ``/_sim`` (guarded by ``X-Sim-Token``): create instances, inject and
clear faults, set lifecycle delays and valid keys, read the request log. :class:`SimControl` wraps it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from vastkeep.sim.json_body import json_object
from vastkeep.sim.state import (
    COMFY_ENDPOINTS,
    COMFY_MODES,
    DEFAULT_ERROR_STATUS,
    FAULT_STATES,
    NET_MODES,
    SSH_ENDPOINTS,
    SSH_MODES,
    Endpoint,
    Instance,
)

if TYPE_CHECKING:
    from vastkeep.sim.core import Simulator

OPTION_KEYS = (
    "ssh",
    "ssh_proxy",
    "direct_8188",
    "port_18188",
    "label",
    "image",
    "lifecycle",
    "ip_trailing_newline",
)


def _bad(msg: str, status: int = 400) -> web.Response:
    return web.json_response({"error": msg}, status=status)


async def _json(request: web.Request) -> dict[str, Any]:
    return await json_object(request, lambda msg: {"error": msg}, strict=True)


def _synthetic_offer(sim: Simulator, n: int) -> dict[str, Any]:
    base = sim.offers[n % len(sim.offers)]
    return {**base, "machine_id": 100_000 + n, "id": 900_000 + n}


class ControlRoutes:
    """The ``/_sim`` handlers, one method each, on one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.created = 0  # instances made through the control API (numbers their synthetic offers)

    def find(self, request: web.Request) -> Instance:
        try:
            inst = self.sim.instances.get(int(request.match_info["id"]))
        except ValueError:
            inst = None
        if inst is None:
            raise web.HTTPNotFound(text='{"error": "no such instance"}', content_type="application/json")
        return inst

    def view(self, inst: Instance) -> dict[str, object]:
        return {
            "instance": inst.to_api(self.sim.clock.now()),
            "sim": inst.to_control(),
            "log_path": str(self.sim.log_path(inst)),
        }

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "simulated": True, **self.sim.stats()})

    async def reset(self, request: web.Request) -> web.Response:
        await self.sim.reset()
        return web.json_response({"ok": True})

    async def clear_faults(self, request: web.Request) -> web.Response:
        await self.sim.clear_faults()
        return web.json_response({"ok": True})

    async def create(self, request: web.Request) -> web.Response:
        body = await _json(request)
        self.created += 1
        offer = next((o for o in self.sim.offers if o["id"] == body.get("offer_id")), None)
        offer = offer or _synthetic_offer(self.sim, self.created)
        try:
            inst = self.sim.new_instance(offer, {k: body[k] for k in OPTION_KEYS if k in body})
        except ValueError as exc:
            return _bad(str(exc))
        self.sim.ledger.add("rent", inst.id, self.sim.clock.now(), label=inst.label, via="control")
        if body.get("running", False):
            await self.sim.make_running(inst)
        else:
            self.sim.begin(inst)
        return web.json_response(self.view(inst))

    async def bulk(self, request: web.Request) -> web.Response:
        body = await _json(request)
        count = int(body.get("count", 0))
        if not 0 < count <= 50_000:
            return _bad("count must be 1..50000")
        opts = {"ssh": False, "ssh_proxy": False, **{k: body[k] for k in OPTION_KEYS if k in body}}
        loop = asyncio.get_running_loop()
        started = loop.time()
        ids, failed = [], 0
        for _ in range(count):
            self.created += 1
            inst = self.sim.new_instance(_synthetic_offer(self.sim, self.created), opts)
            try:
                await self.sim.make_running(inst)
            except OSError:
                failed += 1
                await self.sim.destroy(inst)
                continue
            ids.append(inst.id)
            if len(ids) % 500 == 0:
                await asyncio.sleep(0)  # let probes and other requests in
        return web.json_response({"ids": ids, "failed": failed, "elapsed_s": round(loop.time() - started, 3)})

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response(self.view(self.find(request)))

    async def set_state(self, request: web.Request) -> web.Response:
        inst, body = self.find(request), await _json(request)
        state = body.get("state")
        if state not in (*FAULT_STATES, "running"):
            return _bad(f"state must be one of {FAULT_STATES + ('running',)}")
        await self.sim.set_fault_state(inst, state)
        return web.json_response(self.view(inst))

    def targets(self, inst: Instance, body: Mapping[str, object], allowed: tuple[str, ...]) -> list[Endpoint]:
        name = body.get("endpoint")
        if name is None:
            return [ep for n, ep in inst.endpoints.items() if n in allowed]
        if name not in inst.endpoints:
            raise web.HTTPBadRequest(
                text=json.dumps(
                    {"error": f"instance has no endpoint {name!r}", "endpoints": list(inst.endpoints)}
                ),
                content_type="application/json",
            )
        return [inst.endpoints[name]]

    async def comfy(self, request: web.Request) -> web.Response:
        inst, body = self.find(request), await _json(request)
        if "prompt_s" in body:  # how long this instance's ComfyUI works on each prompt from now on
            prompt_s = body["prompt_s"]
            if type(prompt_s) not in (int, float) or not 0 <= prompt_s <= 86400:
                return _bad("prompt_s must be a number of seconds, 0..86400")
            inst.prompt_s = float(prompt_s)
            if "mode" not in body:
                return web.json_response(self.view(inst))
        mode = body.get("mode")
        if mode not in COMFY_MODES:
            return _bad(f"mode must be one of {COMFY_MODES} (or prompt_s alone)")
        status = body.get("status", DEFAULT_ERROR_STATUS)
        if mode == "error500" and (type(status) is not int or not 400 <= status <= 599):
            return _bad("status must be an HTTP error status, 400..599")
        for ep in self.targets(inst, body, COMFY_ENDPOINTS):
            ep.comfy_mode, ep.slow_s = mode, float(body.get("delay_s", 0.0))
            ep.error_status = status if mode == "error500" else DEFAULT_ERROR_STATUS
        await self.sim.net.apply(inst)
        return web.json_response(self.view(inst))

    async def comfy_phases(self, request: web.Request) -> web.Response:
        """Each prompt's phases on this instance (queued, execution_start, executing, done, lost, ...)."""
        inst = self.find(request)
        pid = request.query.get("prompt_id")
        phases = [p for p in inst.comfy_phases if pid is None or p["prompt_id"] == pid]
        return web.json_response({"prompt_s": inst.prompt_s, "queue_remaining": inst.queue_remaining,
                                  "phases": phases})

    async def net(self, request: web.Request) -> web.Response:
        inst, body = self.find(request), await _json(request)
        mode = "blackhole" if body.get("mode") == "firewall" else body.get("mode")
        if mode not in NET_MODES:
            return _bad(f"mode must be one of {NET_MODES + ('firewall',)}")
        for ep in self.targets(inst, body, COMFY_ENDPOINTS + SSH_ENDPOINTS):
            ep.net_mode = mode
        await self.sim.net.apply(inst)
        return web.json_response(self.view(inst))

    async def ssh(self, request: web.Request) -> web.Response:
        inst, body = self.find(request), await _json(request)
        eps = self.targets(inst, body, SSH_ENDPOINTS)
        if body.get("action") == "kill_sessions":
            killed = 0
            for ep in eps:
                path = self.sim.net.paths.get((ep.ip, ep.port))
                if path is not None:
                    killed += len(path.conns)
                    path.abort_all()
            return web.json_response({"killed": killed})
        mode = body.get("mode")
        if mode not in SSH_MODES:
            return _bad(f"mode must be one of {SSH_MODES} (or action kill_sessions)")
        for ep in eps:
            ep.ssh_mode = mode
        return web.json_response(self.view(inst))

    async def destroy_outside(self, request: web.Request) -> web.Response:
        """Destroyed behind the API user's back (the host, or the web console): no API request logged."""
        inst = self.find(request)
        await self.sim.destroy(inst, via="control")
        return web.json_response({"ok": True, "instance_id": inst.id})

    async def ledger(self, request: web.Request) -> web.Response:
        return web.json_response({"entries": self.sim.ledger.since(int(request.query.get("since", "0")))})

    async def append_log(self, request: web.Request) -> web.Response:
        inst, body = self.find(request), await _json(request)
        self.sim.append_log(inst, [str(x) for x in body.get("lines", [])])
        return web.json_response({"ok": True})

    async def add_api_fault(self, request: web.Request) -> web.Response:
        try:
            self.sim.api_faults.add(await _json(request))
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        return web.json_response({"active": self.sim.api_faults.active()})

    async def clear_api_faults(self, request: web.Request) -> web.Response:
        self.sim.api_faults.clear()
        return web.json_response({"active": []})

    async def tokens(self, request: web.Request) -> web.Response:
        body = await _json(request)
        try:
            if body.get("reset"):
                self.sim.tokens.reset()
            for service, keys in (body.get("valid") or {}).items():
                self.sim.tokens.set(service, [keys] if isinstance(keys, str) else list(keys))
        except ValueError as exc:
            return _bad(str(exc))
        return web.json_response(
            {"ok": True, "valid_counts": {k: len(v) for k, v in self.sim.tokens.valid.items()}}
        )

    async def lifecycle(self, request: web.Request) -> web.Response:
        try:
            self.sim.lifecycle.update(await _json(request))
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        return web.json_response(self.sim.lifecycle.as_dict())

    async def rent_defaults(self, request: web.Request) -> web.Response:
        body = await _json(request)
        unknown = set(body) - set(self.sim.rent_defaults)
        if unknown:
            return _bad(f"unknown options {sorted(unknown)}")
        self.sim.rent_defaults.update(body)
        return web.json_response(self.sim.rent_defaults)

    async def requests_seen(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response({"requests": self.sim.requests.since(since, request.query.get("service"))})

    async def rate_limit(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await _json(request)
            try:
                self.sim.rate_limit.configure(body.get("min_gap_s"), body.get("endpoints"))
            except ValueError as exc:
                return _bad(str(exc))
        return web.json_response(self.sim.rate_limit.as_dict())

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.sim.requests.clear()
        return web.json_response({"ok": True})


#: method, path, handler: the ``/_sim`` contract (tests, benches and users' scripts drive faults through it)
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/_sim/health", "health"),
    ("POST", "/_sim/reset", "reset"),
    ("POST", "/_sim/clear_faults", "clear_faults"),
    ("POST", "/_sim/instances", "create"),
    ("POST", "/_sim/instances/bulk", "bulk"),
    ("GET", "/_sim/instances/{id}", "show"),
    ("POST", "/_sim/instances/{id}/state", "set_state"),
    ("POST", "/_sim/instances/{id}/comfy", "comfy"),
    ("GET", "/_sim/instances/{id}/comfy", "comfy_phases"),
    ("POST", "/_sim/instances/{id}/net", "net"),
    ("POST", "/_sim/instances/{id}/ssh", "ssh"),
    ("POST", "/_sim/instances/{id}/log", "append_log"),
    ("POST", "/_sim/instances/{id}/destroy", "destroy_outside"),
    ("GET", "/_sim/ledger", "ledger"),
    ("POST", "/_sim/api_faults", "add_api_fault"),
    ("DELETE", "/_sim/api_faults", "clear_api_faults"),
    ("POST", "/_sim/tokens", "tokens"),
    ("POST", "/_sim/lifecycle", "lifecycle"),
    ("POST", "/_sim/rent_defaults", "rent_defaults"),
    ("GET", "/_sim/requests", "requests_seen"),
    ("DELETE", "/_sim/requests", "clear_requests"),
    ("GET", "/_sim/rate_limit", "rate_limit"),
    ("POST", "/_sim/rate_limit", "rate_limit"),
)


def add_routes(app: web.Application, sim: Simulator) -> None:
    """Register every ``/_sim`` route."""
    handlers = ControlRoutes(sim)
    for method, path, name in ROUTES:
        if method == "GET":
            app.router.add_get(path, getattr(handlers, name))  # HEAD too, as before
        else:
            app.router.add_route(method, path, getattr(handlers, name))
