"""The Vast.ai REST subset our client uses, under ``/api/v0`` (shapes: shared/reference/providers.md).

Auth, rate-limit and 5xx faults are applied before these handlers by the simulator's middleware.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from vastkeep.sim.server import Simulator


def _error(status: int, error: str, msg: str) -> web.Response:
    return web.json_response({"success": False, "error": error, "msg": msg}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, ValueError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"success": False, "error": "invalid_args", "msg": "body is not JSON"}),
            content_type="application/json",
        ) from exc
    return data if isinstance(data, dict) else {}


def add_routes(app: web.Application, sim: Simulator) -> None:
    """Register the Vast.ai routes on the simulator's application."""

    def find(request: web.Request) -> Any:
        try:
            return sim.instances.get(int(request.match_info["id"]))
        except ValueError:
            return None

    async def list_instances(request: web.Request) -> web.Response:
        now = sim.clock.now()
        return web.json_response({"instances": [i.to_api(now) for i in sim.instances.values()]})

    async def show_instance(request: web.Request) -> web.Response:
        inst = find(request)
        if inst is None:
            return _error(404, "no_such_instance", "Instance not found.")
        return web.json_response({"instances": inst.to_api(sim.clock.now())})

    async def search_offers(request: web.Request) -> web.Response:
        from vastkeep.sim.state import filter_offers  # noqa: PLC0415

        query = await _body(request)
        if isinstance(query.get("q"), dict):  # the CLI's GET form wraps the query in "q"
            query = query["q"]
        rented = {i.machine_id for i in sim.instances.values()}
        offers = [o for o in sim.offers if o["machine_id"] not in rented]
        try:
            found = filter_offers(offers, query)
        except ValueError as exc:
            return _error(400, "invalid_args", str(exc))
        return web.json_response({"offers": found})

    async def rent(request: web.Request) -> web.Response:
        try:
            offer_id = int(request.match_info["offer_id"])
        except ValueError:
            return _error(400, "invalid_args", "offer id must be an integer")
        offer = next((o for o in sim.offers if o["id"] == offer_id), None)
        if offer is None or not offer["rentable"]:
            return _error(404, "no_such_ask", "Instance type is no longer available.")
        if any(i.machine_id == offer["machine_id"] for i in sim.instances.values()):
            return _error(400, "no_such_ask", "Instance type is no longer available.")
        body = await _body(request)
        env = body.get("env") if isinstance(body.get("env"), dict) else {}
        opts: dict[str, Any] = {"label": body.get("label"), "image": body.get("image")}
        if "-p 18188:18188" in env:
            opts["port_18188"] = True
        inst = sim.new_instance(offer, opts)
        if body.get("price") is not None:
            inst.offer = {**offer}
        sim.begin(inst)
        return web.json_response({"success": True, "new_contract": inst.id})

    async def destroy(request: web.Request) -> web.Response:
        inst = find(request)
        if inst is None:
            return _error(404, "no_such_instance", "Instance not found.")
        await sim.destroy(inst)
        return web.json_response({"success": True})

    async def change(request: web.Request) -> web.Response:
        inst = find(request)
        if inst is None:
            return _error(404, "no_such_instance", "Instance not found.")
        body = await _body(request)
        if "label" in body:
            inst.label = None if body["label"] is None else str(body["label"])
        if "state" in body:
            if body["state"] not in ("running", "stopped"):
                return _error(400, "invalid_args", "state must be running or stopped")
            await sim.set_intended(inst, body["state"])
        if "label" not in body and "state" not in body:
            return _error(400, "invalid_args", "nothing to change")
        return web.json_response({"success": True})

    for base in ("/api/v0", "/api/v1"):
        app.router.add_get(base + "/instances", list_instances)
        app.router.add_get(base + "/instances/", list_instances)
    app.router.add_get("/api/v0/instances/{id}", show_instance)
    app.router.add_get("/api/v0/instances/{id}/", show_instance)
    app.router.add_post("/api/v0/bundles", search_offers)
    app.router.add_post("/api/v0/bundles/", search_offers)
    app.router.add_put("/api/v0/asks/{offer_id}", rent)
    app.router.add_put("/api/v0/asks/{offer_id}/", rent)
    app.router.add_delete("/api/v0/instances/{id}", destroy)
    app.router.add_delete("/api/v0/instances/{id}/", destroy)
    app.router.add_put("/api/v0/instances/{id}", change)
    app.router.add_put("/api/v0/instances/{id}/", change)
