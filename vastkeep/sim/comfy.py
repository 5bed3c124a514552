"""The ComfyUI stand-in every running instance serves: real routes, real shapes, real websocket.

One aiohttp application answers on every instance's ComfyUI listeners; the listening address a request
arrived on (``sockname``) says which instance and which path it is, so 10,000 instances cost one socket
each and no extra Python objects per connection beyond aiohttp's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.web_protocol import RequestHandler

from vastkeep.sim.net import Network, Path
from vastkeep.sim.state import Instance

COMFYUI_VERSION = "0.3.43"
GiB = 1024**3


def system_stats(inst: Instance) -> dict[str, Any]:
    """``GET /system_stats`` as ComfyUI's server.py builds it."""
    vram = int(inst.offer.get("gpu_ram", 24564)) * 1024 * 1024
    return {
        "system": {
            "os": "posix",
            "ram_total": 64 * GiB,
            "ram_free": 51 * GiB,
            "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": "1.23.4",
            "python_version": "3.12.3 (main, Jun 18 2025, 17:59:45) [GCC 13.3.0]",
            "pytorch_version": "2.7.1+cu128",
            "embedded_python": False,
            "argv": ["main.py", "--listen", "0.0.0.0", "--port", "8188"],
        },
        "devices": [
            {
                "name": f"cuda:{i} NVIDIA GeForce {inst.offer.get('gpu_name', 'RTX 4090')} : cudaMallocAsync",
                "type": "cuda",
                "index": i,
                "vram_total": vram,
                "vram_free": vram - 512 * 1024 * 1024,
                "torch_vram_total": 0,
                "torch_vram_free": 0,
            }
            for i in range(int(inst.offer.get("num_gpus", 1)))
        ],
    }


class ComfyApp:
    """Routes plus the per-request gate that turns a path's faults into hangs and delays."""

    def __init__(self, network: Network, instances: Callable[[int], Instance | None]) -> None:
        self.network = network
        self.instances = instances
        self.app = web.Application(middlewares=[self._gate])
        for prefix in ("", "/api"):
            self.app.router.add_get(prefix + "/system_stats", self.get_system_stats)
            self.app.router.add_get(prefix + "/prompt", self.get_prompt)
            self.app.router.add_get(prefix + "/queue", self.get_queue)
        self.app.router.add_get("/ws", self.ws)
        self.app.router.add_get("/", self.index)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        self._server: web.Server | None = None

    async def setup(self) -> None:
        await self.runner.setup()
        self._server = self.runner.server

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.runner.cleanup(), 5)

    def protocol_factory(self) -> asyncio.Protocol:
        """A RequestHandler that registers its transport with its path, so a crash can abort it."""
        server = self._server
        assert server is not None
        network = self.network

        class Tracked(RequestHandler):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                path = network.lookup(transport.get_extra_info("sockname"))
                if path is not None:
                    path.track(transport)

        return Tracked(server, loop=asyncio.get_running_loop(), **server._kwargs)

    def _resolve(self, request: web.Request) -> tuple[Path, Instance]:
        transport = request.transport
        path = self.network.lookup(transport.get_extra_info("sockname") if transport else None)
        inst = self.instances(path.instance_id) if path else None
        if path is None or inst is None:
            raise web.HTTPServiceUnavailable(text="no such instance")
        return path, inst

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path, inst = self._resolve(request)
        ep = path.endpoint
        if ep.comfy_mode == "hang":
            await asyncio.Future()  # accepted, never answered (until the connection is closed)
        if not path.flowing.is_set():
            await path.flowing.wait()  # a black-holed route: silence until the fault is cleared
        if ep.comfy_mode == "slow" and ep.slow_s > 0:
            await asyncio.sleep(ep.slow_s)
        request["sim_instance"] = inst
        request["sim_endpoint"] = ep
        return await handler(request)

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><title>ComfyUI</title></html>", content_type="text/html")

    async def get_system_stats(self, request: web.Request) -> web.Response:
        ep = request["sim_endpoint"]
        if ep.comfy_mode == "error500":  # ComfyUI (or a proxy in front of it) failing: an HTTP error status
            return web.json_response({"error": "Internal Server Error"}, status=ep.error_status)
        if ep.comfy_mode == "wrong_body":  # something answers 200 JSON on the port, but it is not ComfyUI
            return web.json_response({"ok": True})
        return web.json_response(system_stats(request["sim_instance"]))

    async def get_prompt(self, request: web.Request) -> web.Response:
        inst: Instance = request["sim_instance"]
        return web.json_response({"exec_info": {"queue_remaining": inst.queue_remaining}})

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response({"queue_running": [], "queue_pending": []})

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        inst: Instance = request["sim_instance"]
        sid = request.query.get("clientId") or uuid.uuid4().hex
        sock = web.WebSocketResponse(heartbeat=None)
        await sock.prepare(request)
        await sock.send_json(
            {
                "type": "status",
                "data": {"status": {"exec_info": {"queue_remaining": inst.queue_remaining}}, "sid": sid},
            }
        )
        async for msg in sock:
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
        return sock

