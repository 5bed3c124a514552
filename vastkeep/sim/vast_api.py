"""The Vast.ai REST API as the official CLI/SDK and our client use it, under ``/api/v0`` plus the paged
``/api/v1/instances/`` (shapes: docs/simulator.md, checked by tests/integration/test_sim_official_cli.py).

Auth, rate-limit and 5xx faults are applied before these handlers by the server's middleware. Every JSON
answer carries ``Content-Type: application/json`` exactly: the CLI's offer search refuses anything else.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

from vastkeep.sim.json_body import json_object
from vastkeep.sim.query import filter_offers, filter_values, number, page_instances
from vastkeep.sim.state import GPUS

if TYPE_CHECKING:
    from vastkeep.sim.core import Simulator
    from vastkeep.sim.state import Instance

#: Rent options a body may carry that change the instance (everything else is accepted and ignored).
PORT_18188 = "-p 18188:18188"


def api_json(data: object, status: int = 200) -> web.Response:
    """A JSON answer with the exact ``Content-Type: application/json`` the real API sends."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _error(status: int, error: str, msg: str) -> web.Response:
    return api_json({"success": False, "error": error, "msg": msg}, status)


async def _body(request: web.Request) -> dict[str, object]:
    return await json_object(request, lambda msg: {"success": False, "error": "invalid_args", "msg": msg},
                             strict=False)


def _ids(body: dict[str, object], key: str) -> list[int] | None:
    raw = body.get(key)
    if not isinstance(raw, list) or not raw:
        return None
    try:
        return [int(number(x, key)) for x in raw]
    except (TypeError, ValueError):
        return None


def rent_options(body: dict[str, object]) -> dict[str, object]:
    """What a rent body changes: label, image, env (``extra_env`` and port options), disk, onstart, runtype,
    a bid price. ``runtype: args`` launches the image as is, so there is no SSH into it."""
    raw_env = body.get("env")
    env = raw_env if isinstance(raw_env, dict) else {}
    opts: dict[str, object] = {
        "label": body.get("label"),
        "image": body.get("image"),
        "env": {str(k): str(v) for k, v in env.items() if not str(k).startswith("-")},
        "onstart": body.get("onstart") or None,
        "runtype": body.get("runtype") or None,
        "price": body.get("price"),
    }
    if body.get("disk") is not None:
        opts["disk"] = float(number(body["disk"], "disk"))
    if PORT_18188 in env:
        opts["port_18188"] = True
    if opts["runtype"] == "args":
        opts["ssh"] = False
    return opts


def user_record(sim: Simulator) -> dict[str, object]:
    """``GET /users/current``: the simulated account, without a key (the CLI drops the real one)."""
    return {
        "id": 424242,
        "username": "vastkeep-sim",
        "fullname": "Simulated User",
        "email": "sim@vastkeep.invalid",
        "email_verified": True,
        "balance": 0.0,
        "credit": 100.0,
        "can_pay": True,
        "has_billing": True,
        "host_agreement_accepted": False,
        "ssh_key": None,
        "user": "vastkeep-sim",
        "instances": len(sim.instances),
    }


class VastRoutes:
    """The Vast.ai handlers, one method each, on one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def find(self, request: web.Request) -> Instance | None:
        try:
            return self.sim.instances.get(int(request.match_info["id"]))
        except ValueError:
            return None

    def rows(self) -> list[dict[str, object]]:
        now = self.sim.clock.now()
        return [i.to_api(now) for i in self.sim.instances.values()]

    async def list_instances(self, request: web.Request) -> web.Response:
        return api_json({"instances": self.rows()})

    async def list_instances_v1(self, request: web.Request) -> web.Response:
        try:
            return api_json(page_instances(self.rows(), dict(request.query)))
        except ValueError as exc:
            return _error(400, "invalid_args", str(exc))

    async def instance_filters(self, request: web.Request) -> web.Response:
        return api_json({"filters": filter_values(self.rows())})

    async def show_instance(self, request: web.Request) -> web.Response:
        inst = self.find(request)
        if inst is None:
            return _error(404, "no_such_instance", "Instance not found.")
        return api_json({"instances": inst.to_api(self.sim.clock.now())})

    async def current_user(self, request: web.Request) -> web.Response:
        return api_json(user_record(self.sim))

    async def gpu_names(self, request: web.Request) -> web.Response:
        return api_json({"gpu_names": sorted({name for name, _ram, _dph in GPUS})})

    async def search_offers(self, request: web.Request) -> web.Response:
        query = await _body(request)
        wrapped = query.get("q")
        if isinstance(wrapped, dict):  # the CLI's --new form wraps the query in "q"
            query = wrapped
        rented = {i.machine_id for i in self.sim.instances.values()}
        offers = [{**o, "rented": o["machine_id"] in rented} for o in self.sim.offers]
        try:
            found = filter_offers([o for o in offers if not o["rented"]], query)
        except ValueError as exc:
            return _error(400, "invalid_args", str(exc))
        return api_json({"offers": found})

    def rent_one(self, offer_id: int, body: dict[str, object]) -> tuple[int | None, web.Response | None]:
        offer = next((o for o in self.sim.offers if o["id"] == offer_id), None)
        if offer is None or not offer["rentable"]:
            return None, _error(404, "no_such_ask", "Instance type is no longer available.")
        if any(i.machine_id == offer["machine_id"] for i in self.sim.instances.values()):
            return None, _error(400, "no_such_ask", "Instance type is no longer available.")
        try:
            inst = self.sim.new_instance(offer, rent_options(body))
        except (TypeError, ValueError) as exc:
            return None, _error(400, "invalid_args", str(exc))
        self.sim.ledger.add("rent", inst.id, self.sim.clock.now(), label=inst.label, via="api")
        self.sim.begin(inst)
        return inst.id, None

    async def rent(self, request: web.Request) -> web.Response:
        try:
            offer_id = int(request.match_info["offer_id"])
        except ValueError:
            return _error(400, "invalid_args", "offer id must be an integer")
        new_id, failure = self.rent_one(offer_id, await _body(request))
        return failure or api_json({"success": True, "new_contract": new_id})

    async def rent_many(self, request: web.Request) -> web.Response:
        body = await _body(request)
        ids = _ids(body, "ids")
        if ids is None:
            return _error(400, "invalid_args", "ids must be a non-empty list of offer ids")
        created: list[int] = []
        failed: list[int] = []
        for offer_id in ids:
            new_id, failure = self.rent_one(offer_id, body)
            (created if new_id is not None else failed).append(new_id if new_id is not None else offer_id)
        return api_json({"success": not failed, "new_contracts": created, "failed_offers": failed})

    async def destroy(self, request: web.Request) -> web.Response:
        inst = self.find(request)
        if inst is None:
            return _error(404, "no_such_instance", "Instance not found.")
        await self.sim.destroy(inst)
        return api_json({"success": True})

    async def destroy_many(self, request: web.Request) -> web.Response:
        ids = _ids(await _body(request), "instance_ids")
        if ids is None:
            return _error(400, "invalid_args", "instance_ids must be a non-empty list of instance ids")
        missing = [i for i in ids if i not in self.sim.instances]
        for iid in ids:
            if iid in self.sim.instances:
                await self.sim.destroy(self.sim.instances[iid])
        if missing:
            return _error(404, "no_such_instance", f"Instances not found: {missing}")
        return api_json({"success": True})

    async def change_state(self, inst: Instance, body: dict[str, object]) -> web.Response | None:
        if "label" in body:
            inst.label = None if body["label"] is None else str(body["label"])
        if "state" in body:
            if body["state"] not in ("running", "stopped"):
                return _error(400, "invalid_args", "state must be running or stopped")
            await self.sim.set_intended(inst, body["state"])
        if "label" not in body and "state" not in body:
            return _error(400, "invalid_args", "nothing to change")
        return None

    async def change(self, request: web.Request) -> web.Response:
        inst = self.find(request)
        if inst is None:
            return _error(404, "no_such_instance", "Instance not found.")
        return await self.change_state(inst, await _body(request)) or api_json({"success": True})

    async def change_many(self, request: web.Request) -> web.Response:
        body = await _body(request)
        ids = _ids(body, "ids")
        if ids is None or "state" not in body:
            return _error(400, "invalid_args", "ids (a non-empty list) and state are required")
        missing = [i for i in ids if i not in self.sim.instances]
        if missing:
            return _error(404, "no_such_instance", f"Instances not found: {missing}")
        for iid in ids:
            failure = await self.change_state(self.sim.instances[iid], {"state": body["state"]})
            if failure is not None:
                return failure
        return api_json({"success": True})

    async def request_logs(self, request: web.Request) -> web.Response:
        inst = self.find(request)
        if inst is None:
            return _error(404, "no_such_instance", "Instance not found.")
        body = await _body(request)
        try:
            tail = int(number(body["tail"], "tail")) if body.get("tail") not in (None, "") else 1000
        except ValueError as exc:
            return _error(400, "invalid_args", str(exc))
        grep = str(body["filter"]) if body.get("filter") else None
        text = self.sim.container_log(inst, tail=tail, grep=grep)
        name = self.sim.store_log_result(text)
        url = f"{request.scheme}://{request.host}/logs/{name}.txt"
        return api_json({"success": True, "msg": "Logs will be uploaded to result_url", "result_url": url})

    async def log_result(self, request: web.Request) -> web.Response:
        """The uploaded log, fetched without auth like the real presigned URL (the name is the secret)."""
        text = self.sim.log_results.get(request.match_info["name"])
        if text is None:
            return web.Response(text="Not Found", status=404)
        return web.Response(text=text, content_type="text/plain")


#: method, path, handler; each path is served with and without a trailing slash, as the real API does
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/api/v0/instances", "list_instances"),
    ("GET", "/api/v1/instances", "list_instances_v1"),
    ("DELETE", "/api/v0/instances", "destroy_many"),
    ("PUT", "/api/v0/instances", "change_many"),
    ("GET", "/api/v0/instances/filters", "instance_filters"),
    ("PUT", "/api/v0/instances/request_logs/{id}", "request_logs"),
    ("GET", "/api/v0/instances/{id}", "show_instance"),
    ("DELETE", "/api/v0/instances/{id}", "destroy"),
    ("PUT", "/api/v0/instances/{id}", "change"),
    ("GET", "/api/v0/users/current", "current_user"),
    ("GET", "/api/v0/gpu_names/unique", "gpu_names"),
    ("POST", "/api/v0/bundles", "search_offers"),
    ("POST", "/api/v0/asks/bulk", "rent_many"),
    ("PUT", "/api/v0/asks/{offer_id}", "rent"),
)


def add_routes(app: web.Application, sim: Simulator) -> None:
    """Register the Vast.ai routes on the simulator's application."""
    handlers = VastRoutes(sim)
    for method, path, name in ROUTES:
        for served in (path, path + "/"):
            app.router.add_route(method, served, getattr(handlers, name))
    app.router.add_get("/logs/{name}.txt", handlers.log_result)
