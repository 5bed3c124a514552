"""Websocket relay details: binary and text frames both ways and the close code, through the proxy's
aiohttp application in-process (a real Redis holds the lease and the token), in front of a real echo
websocket server on a loopback address; and ComfyUI's binary previews through the real proxy process.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import redis.asyncio as aredis
from aiohttp import web

from tests.fixtures.comfy import Client, txt2img_graph
from tests.fixtures.helpers import free_port
from vastkeep.core.clock import SystemClock
from vastkeep.pool import PoolLeases
from vastkeep.proxy import endpoints
from vastkeep.proxy.resolve import Resolver
from vastkeep.proxy.server import ProxyServer
from vastkeep.state import InstanceRecord, Keys


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            if msg.data == "close":
                await ws.close(code=4001, message=b"bye")
                break
            await ws.send_str("echo:" + msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(b"echo:" + msg.data)
    return ws


def test_frames_cross_both_ways_and_the_upstream_close_code_reaches_the_client(redis_server, redis_client,
                                                                               store, tmp_path):
    port = free_port()
    store.put_instance(InstanceRecord("77", status="ready", label="vastkeep:default:0",
                                      connection_url=f"http://127.0.0.1:{port}"))
    grant = PoolLeases(redis_client, Keys(), "default", "vastkeep", store=store).grant(60, "ws-test")
    token = endpoints.issue(redis_client, Keys(), "default", grant.instance_id, grant.fence,
                            grant.leased_until)

    async def go():
        upstream = web.Application()
        upstream.router.add_get("/ws", echo)
        up_runner = web.AppRunner(upstream)
        await up_runner.setup()
        await web.TCPSite(up_runner, "127.0.0.1", port).start()
        r = aredis.Redis.from_url(redis_server.url)
        server = ProxyServer(Resolver(r, Keys(), "default", "vastkeep", simulated=True, clock=SystemClock()),
                             admin_key=None, connect_timeout_s=2, timeout_s=5, max_upload_bytes=1000,
                             client_concurrency=4, spool_dir=tmp_path / "spool")
        runner = web.AppRunner(server.app)
        await runner.setup()
        pport = free_port()
        await web.TCPSite(runner, "127.0.0.1", pport).start()
        try:
            ws_url = f"http://127.0.0.1:{pport}/c/{token}/ws"
            async with aiohttp.ClientSession() as s, s.ws_connect(ws_url) as ws:
                await ws.send_str("hi")
                assert (await ws.receive(timeout=5)).data == "echo:hi"
                blob = bytes(range(256)) * 100
                await ws.send_bytes(blob)
                got = await ws.receive(timeout=5)
                assert got.type == aiohttp.WSMsgType.BINARY and got.data == b"echo:" + blob
                await ws.send_str("close")
                closing = await ws.receive(timeout=5)
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                await asyncio.sleep(0.05)
                code = ws.close_code
            m = server.metrics
            return code, m.ws_messages["up"], m.ws_messages["down"], m.websockets_open, m.bytes["down"]
        finally:
            await runner.cleanup()
            await up_runner.cleanup()
            await r.aclose()

    code, up, down, still_open, down_bytes = asyncio.run(go())
    assert code == 4001  # the upstream's own close code
    assert (up, down, still_open) == (3, 2, 0) and down_bytes >= 25_600


def test_comfyuis_binary_previews_arrive_through_the_endpoint(proxy_rig):
    proxy_rig.ready_instance(prompt_s=0.5)
    url = proxy_rig.lease()["endpointUrl"].rstrip("/")

    async def go():
        async with Client(url, client_id="previews") as c:
            assert c.ws is not None
            flags = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
            await c.ws.send_str(json.dumps(flags))
            await c.wait_for(lambda f: f.type == "feature_flags")  # a text frame up, its answer down
            pid = await c.queue(txt2img_graph(steps=4))
            await c.finished(pid)
            return [f for f in c.frames if f.type == "binary"]

    previews = asyncio.run(go())
    assert len(previews) >= 1 and all(isinstance(f.data, bytes) and len(f.data) > 8 for f in previews)
