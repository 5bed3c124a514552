"""The ComfyUI stand-in every running instance serves: real routes, real shapes, real websocket.

One aiohttp application answers on every instance's ComfyUI listeners; the listening address a request
arrived on (``sockname``) says which instance and which path it is, so 10,000 instances cost one socket
each and no extra Python objects per connection beyond aiohttp's own.

It fails the way a real ComfyUI (0.3.64, measured) fails, where the keepalive layer depends on it:

* ``hang`` (a SIGSTOPped process): new connections complete at TCP but get no answer; after
  :data:`~vastkeep.sim.net.HANG_ACCEPT_QUEUE` of them the accept queue is full and connects time out. Held
  websockets get nothing, not even pongs (we answer pings ourselves instead of letting aiohttp do it).
* ``blackhole`` / host ``offline``: the same silence on held connections.
* ``crash``: held connections are aborted, new connects refused (the network layer does that).
* ``/ws`` and ``/api/ws``: one status frame, a reply to a client's ``feature_flags``, and then only the
  messages of prompts (``engine.py``), held back while the path is silent and late while it is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web
from aiohttp.web_protocol import RequestHandler

from vastkeep.sim.comfy import routes
from vastkeep.sim.comfy.host import ComfyHost
from vastkeep.sim.net import HANG_ACCEPT_QUEUE, Network, Path
from vastkeep.sim.state import Instance

if TYPE_CHECKING:
    from vastkeep.sim.core import Simulator

COMFYUI_VERSION = "0.3.64"
FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
SERVER_FEATURE_FLAGS = {"supports_preview_metadata": True, "max_upload_size": 104857600}
MAX_UPLOAD_SIZE = 104857600  # ComfyUI's --max-upload-size default (100 MB): the aiohttp body limit
GiB = 1024**3
INDEX_HTML = (
    "<!doctype html><html><head><title>ComfyUI</title>"
    '<link rel="stylesheet" href="./assets/index.css">'
    '<script type="module" crossorigin src="./assets/index.js"></script></head>'
    '<body><div id="vue-app"></div></body></html>'
)
#: What the page loads; index.js asks the API the way the frontend does (relative to the page).
ASSETS = {
    "index.css": ("#vue-app{height:100%}", "text/css"),
    "index.js": ("const r=await fetch('./api/system_stats');document.title='ComfyUI '+"
                 "(await r.json()).system.comfyui_version;", "text/javascript"),
}


def system_stats(inst: Instance) -> dict[str, object]:
    """``GET /system_stats`` as ComfyUI's server.py builds it."""
    vram = int(inst.offer.get("gpu_ram", 24564)) * 1024 * 1024
    return {
        "system": {
            "os": "posix",
            "ram_total": 64 * GiB,
            "ram_free": 51 * GiB,
            "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.94",
            "required_templates_version": "0.1.94",
            "python_version": "3.12.3 (main, Jun 18 2025, 17:59:45) [GCC 13.3.0]",
            "pytorch_version": "2.8.0+cu128",
            "embedded_python": False,
            "argv": ["main.py", "--listen", "0.0.0.0", "--port", "8188"],
        },
        # exactly one device, the one torch uses, however many GPUs the machine has
        "devices": [
            {
                "name": f"cuda:0 NVIDIA GeForce {inst.offer.get('gpu_name', 'RTX 4090')} : cudaMallocAsync",
                "type": "cuda",
                "index": 0,
                "vram_total": vram,
                "vram_free": vram - 512 * 1024 * 1024,
                "torch_vram_total": 0,
                "torch_vram_free": 0,
            }
        ],
    }


class ComfyApp:
    """Routes plus the per-request gate that turns a path's faults into hangs and delays."""

    def __init__(self) -> None:
        self.network: Network | None = None
        self.host: ComfyHost | None = None
        self.instances: Callable[[int], Instance | None] = lambda iid: None
        self.app = web.Application(middlewares=[self._gate], client_max_size=MAX_UPLOAD_SIZE)
        for prefix in ("", "/api"):
            self.app.router.add_get(prefix + "/system_stats", self.get_system_stats)
            self.app.router.add_get(prefix + "/features", self.get_features)
            self.app.router.add_get(prefix + "/ws", self.ws)
        routes.add_routes(self.app, lambda: self.host)
        self.app.router.add_get("/", self.index)
        self.app.router.add_get("/assets/{name}", self.asset)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        self._server: web.Server | None = None

    def attach(self, sim: Simulator) -> None:
        """Serve ``sim``'s instances: its network carries the connections, its faults reach the processes."""
        self.network = sim.net
        self.instances = sim.instances.get
        self.host = ComfyHost(sim)
        sim.net.on_apply = self.host.observe
        sim.net.on_remove = self.host.forget

    async def setup(self) -> None:
        await self.runner.setup()
        self._server = self.runner.server

    async def cleanup(self) -> None:
        if self.host is not None:
            self.host.stop_all()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.runner.cleanup(), 5)

    def protocol_factory(self) -> asyncio.Protocol:
        """A RequestHandler that registers its transport with its path, so a crash can abort it."""
        server = self._server
        assert server is not None and self.network is not None
        network: Network = self.network

        class Tracked(RequestHandler):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                path = network.lookup(transport.get_extra_info("sockname"))
                if path is not None and isinstance(transport, asyncio.Transport):
                    path.track(transport)

        return Tracked(server, loop=asyncio.get_running_loop(), **server._kwargs)

    def _resolve(self, request: web.Request) -> tuple[Path, Instance]:
        transport = request.transport
        assert self.network is not None
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
        if not path.awake.is_set():  # hung: accepted by the kernel, never answered until the hang ends
            ep.hung_conns += 1
            if ep.hung_conns == HANG_ACCEPT_QUEUE:  # the accept queue is full from now on
                asyncio.get_running_loop().create_task(self.network.apply(inst))  # type: ignore[union-attr]
            await path.awake.wait()
        if not path.flowing.is_set():
            await path.flowing.wait()  # a black-holed route: silence until the fault is cleared
        if ep.comfy_mode == "slow" and ep.slow_s > 0:
            await asyncio.sleep(ep.slow_s)
        request["sim_instance"] = inst
        request["sim_endpoint"] = ep
        path_ = request.match_info.route.resource
        if path_ is None:  # unknown path: ComfyUI answers 404 with an empty body
            return web.Response(status=404)
        return await handler(request)

    async def index(self, request: web.Request) -> web.Response:
        """ComfyUI's page in miniature: like the real frontend it names its assets and API by relative
        paths, so it also works under a proxy's path prefix (``/c/{token}/``)."""
        return web.Response(text=INDEX_HTML, content_type="text/html")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            return web.Response(status=404)
        text, ctype = ASSETS[name]
        return web.Response(text=text, content_type=ctype)

    async def get_system_stats(self, request: web.Request) -> web.Response:
        ep = request["sim_endpoint"]
        if ep.comfy_mode == "error500":  # ComfyUI (or a proxy in front of it) failing: an HTTP error status
            return web.json_response({"error": "Internal Server Error"}, status=ep.error_status)
        if ep.comfy_mode == "wrong_body":  # something answers 200 JSON on the port, but it is not ComfyUI
            return web.json_response({"ok": True})
        return web.json_response(system_stats(request["sim_instance"]))

    async def get_features(self, request: web.Request) -> web.Response:
        return web.json_response(FEATURES)

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        """``/ws?clientId=``: the status frame, then whatever the process sends this client, through the
        path's faults (nothing while it hangs or is black-holed, ``delay_s`` late while slow)."""
        inst: Instance = request["sim_instance"]
        path, _ = self._resolve(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        # autoping off: a hung or cut-off ComfyUI must not answer pings (aiohttp would, on its own)
        sock = web.WebSocketResponse(heartbeat=None, autoping=False)
        await sock.prepare(request)
        assert self.host is not None
        proc = self.host.process(inst)
        client = WsClient(sock, path)
        writer = asyncio.get_running_loop().create_task(client.write_all())
        proc.attach(sid, client)
        try:
            async for msg in sock:
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                if path.frozen():
                    continue  # silence: no pong, no reply, nothing
                if msg.type == WSMsgType.PING:
                    await sock.pong(msg.data)
                elif msg.type == WSMsgType.TEXT and _is_feature_flags(msg.data):
                    client.push("json", {"type": "feature_flags", "data": SERVER_FEATURE_FLAGS})
        finally:
            proc.detach(sid, client)
            writer.cancel()
        return sock


class WsClient:
    """One websocket's outgoing frames, in order: held while its path is silent, late while it is slow."""

    def __init__(self, sock: web.WebSocketResponse, path: Path) -> None:
        self.sock = sock
        self.path = path
        self.frames: asyncio.Queue[tuple[float, str, object]] = asyncio.Queue()

    def push(self, kind: str, payload: object) -> None:
        self.frames.put_nowait((asyncio.get_running_loop().time(), kind, payload))

    async def write_all(self) -> None:
        loop = asyncio.get_running_loop()
        ep = self.path.endpoint
        try:
            while True:
                made, kind, payload = await self.frames.get()
                await self.path.awake.wait()
                await self.path.flowing.wait()
                if ep.comfy_mode == "slow" and (late := made + ep.slow_s - loop.time()) > 0:
                    await asyncio.sleep(late)
                if kind == "json":
                    await self.sock.send_str(json.dumps(payload))
                else:
                    assert isinstance(payload, bytes)
                    await self.sock.send_bytes(payload)
        except (ConnectionError, RuntimeError):
            return  # the socket is gone


def _is_feature_flags(text: str) -> bool:
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("type") == "feature_flags"
