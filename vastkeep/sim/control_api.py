"""The simulator's control API under ``/_sim`` (guarded by ``X-Sim-Token``): create instances, inject and
clear faults, set lifecycle delays and valid keys, read the request log. :class:`SimControl` wraps it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

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
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, ValueError) as exc:
        raise web.HTTPBadRequest(
            text='{"error": "body is not JSON"}', content_type="application/json"
        ) from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be an object"}', content_type="application/json")
    return data


def _synthetic_offer(sim: Simulator, n: int) -> dict[str, Any]:
    base = sim.offers[n % len(sim.offers)]
    return {**base, "machine_id": 100_000 + n, "id": 900_000 + n}


def add_routes(app: web.Application, sim: Simulator) -> None:
    """Register every ``/_sim`` route."""
    counter = {"n": 0}

    def find(request: web.Request) -> Instance:
        try:
            inst = sim.instances.get(int(request.match_info["id"]))
        except ValueError:
            inst = None
        if inst is None:
            raise web.HTTPNotFound(text='{"error": "no such instance"}', content_type="application/json")
        return inst

    def view(inst: Instance) -> dict[str, object]:
        return {
            "instance": inst.to_api(sim.clock.now()),
            "sim": inst.to_control(),
            "log_path": str(sim.log_path(inst)),
        }

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "simulated": True, **sim.stats()})

    async def reset(request: web.Request) -> web.Response:
        await sim.reset()
        return web.json_response({"ok": True})

    async def clear_faults(request: web.Request) -> web.Response:
        await sim.clear_faults()
        return web.json_response({"ok": True})

    async def create(request: web.Request) -> web.Response:
        body = await _json(request)
        counter["n"] += 1
        offer = next((o for o in sim.offers if o["id"] == body.get("offer_id")), None) or _synthetic_offer(
            sim, counter["n"]
        )
        try:
            inst = sim.new_instance(offer, {k: body[k] for k in OPTION_KEYS if k in body})
        except ValueError as exc:
            return _bad(str(exc))
        sim.ledger.add("rent", inst.id, sim.clock.now(), label=inst.label, via="control")
        if body.get("running", False):
            await sim.make_running(inst)
        else:
            sim.begin(inst)
        return web.json_response(view(inst))

    async def bulk(request: web.Request) -> web.Response:
        body = await _json(request)
        count = int(body.get("count", 0))
        if not 0 < count <= 50_000:
            return _bad("count must be 1..50000")
        opts = {"ssh": False, "ssh_proxy": False, **{k: body[k] for k in OPTION_KEYS if k in body}}
        loop = asyncio.get_running_loop()
        started = loop.time()
        ids, failed = [], 0
        for _ in range(count):
            counter["n"] += 1
            inst = sim.new_instance(_synthetic_offer(sim, counter["n"]), opts)
            try:
                await sim.make_running(inst)
            except OSError:
                failed += 1
                await sim.destroy(inst)
                continue
            ids.append(inst.id)
            if len(ids) % 500 == 0:
                await asyncio.sleep(0)  # let probes and other requests in
        return web.json_response({"ids": ids, "failed": failed, "elapsed_s": round(loop.time() - started, 3)})

    async def show(request: web.Request) -> web.Response:
        return web.json_response(view(find(request)))

    async def set_state(request: web.Request) -> web.Response:
        inst, body = find(request), await _json(request)
        state = body.get("state")
        if state not in (*FAULT_STATES, "running"):
            return _bad(f"state must be one of {FAULT_STATES + ('running',)}")
        await sim.set_fault_state(inst, state)
        return web.json_response(view(inst))

    def targets(inst: Instance, body: Mapping[str, object], allowed: tuple[str, ...]) -> list[Endpoint]:
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

    async def comfy(request: web.Request) -> web.Response:
        inst, body = find(request), await _json(request)
        if "prompt_s" in body:  # how long this instance's ComfyUI works on each prompt from now on
            prompt_s = body["prompt_s"]
            if type(prompt_s) not in (int, float) or not 0 <= prompt_s <= 86400:
                return _bad("prompt_s must be a number of seconds, 0..86400")
            inst.prompt_s = float(prompt_s)
            if "mode" not in body:
                return web.json_response(view(inst))
        mode = body.get("mode")
        if mode not in COMFY_MODES:
            return _bad(f"mode must be one of {COMFY_MODES} (or prompt_s alone)")
        status = body.get("status", DEFAULT_ERROR_STATUS)
        if mode == "error500" and (type(status) is not int or not 400 <= status <= 599):
            return _bad("status must be an HTTP error status, 400..599")
        for ep in targets(inst, body, COMFY_ENDPOINTS):
            ep.comfy_mode, ep.slow_s = mode, float(body.get("delay_s", 0.0))
            ep.error_status = status if mode == "error500" else DEFAULT_ERROR_STATUS
        await sim.net.apply(inst)
        return web.json_response(view(inst))

    async def comfy_phases(request: web.Request) -> web.Response:
        """Each prompt's phases on this instance (queued, execution_start, executing, done, lost, ...)."""
        inst = find(request)
        pid = request.query.get("prompt_id")
        phases = [p for p in inst.comfy_phases if pid is None or p["prompt_id"] == pid]
        return web.json_response({"prompt_s": inst.prompt_s, "queue_remaining": inst.queue_remaining,
                                  "phases": phases})

    async def net(request: web.Request) -> web.Response:
        inst, body = find(request), await _json(request)
        mode = "blackhole" if body.get("mode") == "firewall" else body.get("mode")
        if mode not in NET_MODES:
            return _bad(f"mode must be one of {NET_MODES + ('firewall',)}")
        for ep in targets(inst, body, COMFY_ENDPOINTS + SSH_ENDPOINTS):
            ep.net_mode = mode
        await sim.net.apply(inst)
        return web.json_response(view(inst))

    async def ssh(request: web.Request) -> web.Response:
        inst, body = find(request), await _json(request)
        eps = targets(inst, body, SSH_ENDPOINTS)
        if body.get("action") == "kill_sessions":
            killed = 0
            for ep in eps:
                path = sim.net.paths.get((ep.ip, ep.port))
                if path is not None:
                    killed += len(path.conns)
                    path.abort_all()
            return web.json_response({"killed": killed})
        mode = body.get("mode")
        if mode not in SSH_MODES:
            return _bad(f"mode must be one of {SSH_MODES} (or action kill_sessions)")
        for ep in eps:
            ep.ssh_mode = mode
        return web.json_response(view(inst))

    async def destroy_outside(request: web.Request) -> web.Response:
        """Destroyed behind the API user's back (the host, or the web console): no API request logged."""
        inst = find(request)
        await sim.destroy(inst, via="control")
        return web.json_response({"ok": True, "instance_id": inst.id})

    async def ledger(request: web.Request) -> web.Response:
        return web.json_response({"entries": sim.ledger.since(int(request.query.get("since", "0")))})

    async def append_log(request: web.Request) -> web.Response:
        inst, body = find(request), await _json(request)
        sim.append_log(inst, [str(x) for x in body.get("lines", [])])
        return web.json_response({"ok": True})

    async def add_api_fault(request: web.Request) -> web.Response:
        try:
            sim.api_faults.add(await _json(request))
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        return web.json_response({"active": sim.api_faults.active()})

    async def clear_api_faults(request: web.Request) -> web.Response:
        sim.api_faults.clear()
        return web.json_response({"active": []})

    async def tokens(request: web.Request) -> web.Response:
        body = await _json(request)
        try:
            if body.get("reset"):
                sim.tokens.reset()
            for service, keys in (body.get("valid") or {}).items():
                sim.tokens.set(service, [keys] if isinstance(keys, str) else list(keys))
        except ValueError as exc:
            return _bad(str(exc))
        return web.json_response(
            {"ok": True, "valid_counts": {k: len(v) for k, v in sim.tokens.valid.items()}}
        )

    async def lifecycle(request: web.Request) -> web.Response:
        try:
            sim.lifecycle.update(await _json(request))
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        return web.json_response(sim.lifecycle.as_dict())

    async def rent_defaults(request: web.Request) -> web.Response:
        body = await _json(request)
        unknown = set(body) - set(sim.rent_defaults)
        if unknown:
            return _bad(f"unknown options {sorted(unknown)}")
        sim.rent_defaults.update(body)
        return web.json_response(sim.rent_defaults)

    async def requests_seen(request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response({"requests": sim.requests.since(since, request.query.get("service"))})

    async def rate_limit(request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await _json(request)
            try:
                sim.rate_limit.configure(body.get("min_gap_s"), body.get("endpoints"))
            except ValueError as exc:
                return _bad(str(exc))
        return web.json_response(sim.rate_limit.as_dict())

    async def clear_requests(request: web.Request) -> web.Response:
        sim.requests.clear()
        return web.json_response({"ok": True})

    r = app.router
    r.add_get("/_sim/health", health)
    r.add_post("/_sim/reset", reset)
    r.add_post("/_sim/clear_faults", clear_faults)
    r.add_post("/_sim/instances", create)
    r.add_post("/_sim/instances/bulk", bulk)
    r.add_get("/_sim/instances/{id}", show)
    r.add_post("/_sim/instances/{id}/state", set_state)
    r.add_post("/_sim/instances/{id}/comfy", comfy)
    r.add_get("/_sim/instances/{id}/comfy", comfy_phases)
    r.add_post("/_sim/instances/{id}/net", net)
    r.add_post("/_sim/instances/{id}/ssh", ssh)
    r.add_post("/_sim/instances/{id}/log", append_log)
    r.add_post("/_sim/instances/{id}/destroy", destroy_outside)
    r.add_get("/_sim/ledger", ledger)
    r.add_post("/_sim/api_faults", add_api_fault)
    r.add_delete("/_sim/api_faults", clear_api_faults)
    r.add_post("/_sim/tokens", tokens)
    r.add_post("/_sim/lifecycle", lifecycle)
    r.add_post("/_sim/rent_defaults", rent_defaults)
    r.add_get("/_sim/requests", requests_seen)
    r.add_delete("/_sim/requests", clear_requests)
    r.add_get("/_sim/rate_limit", rate_limit)
    r.add_post("/_sim/rate_limit", rate_limit)
