"""Websockets through the proxy: ComfyUI's ``/ws?clientId=`` relayed both ways, text and binary frames.

The upstream handshake is made first (under the connect + read timeouts), so a dead instance answers the
client with a plain 502/504 instead of an accepted socket that never speaks. Pings and pongs are relayed
as frames, not answered here, so each end sees the other's liveness; the first side to close closes the
other with the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType, web

from vastkeep.proxy import endpoints
from vastkeep.proxy.decide import request_headers

if TYPE_CHECKING:
    from vastkeep.proxy.metrics import ProxyMetrics
    from vastkeep.proxy.resolve import Target
    from vastkeep.proxy.server import ProxyServer

log = logging.getLogger("vastkeep.proxy")
_WS_HEADERS = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
               "sec-websocket-protocol"}


async def relay_websocket(server: ProxyServer, request: web.Request, route: str, target: Target,
                          url: str) -> web.StreamResponse:
    assert server.session is not None
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    headers = [(k, v) for k, v in request_headers(request.headers.items()) if k.lower() not in _WS_HEADERS]
    try:
        up = await asyncio.wait_for(
            server.session.ws_connect(url, headers=headers, protocols=protocols, autoping=False,
                                      heartbeat=None, max_msg_size=0, compress=0,
                                      timeout=aiohttp.ClientWSTimeout(ws_close=5.0)),
            server.connect_timeout_s + server.timeout_s)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return server._failed(request, route, target, "timeout", 504)
    except aiohttp.WSServerHandshakeError as exc:
        server.metrics.upstream_errors["ws-handshake"] += 1
        return server._answer(request, route, 502, {"error": "bad_gateway",
            "reason": f"instance refused the websocket ({exc.status})"})
    except (aiohttp.ClientError, ConnectionError):
        return server._failed(request, route, target, "connect", 502)
    down = web.WebSocketResponse(protocols=[up.protocol] if up.protocol else (), autoping=False,
                                 heartbeat=None, max_msg_size=0, compress=False)
    try:
        await down.prepare(request)
    except (ConnectionError, RuntimeError):
        await up.close()
        raise
    m = server.metrics
    m.requests[(route, 101)] += 1
    m.websockets_open += 1
    m.websockets_total += 1
    try:
        pumps = [asyncio.ensure_future(_pump(down, up, m, "up")),
                 asyncio.ensure_future(_pump(up, down, m, "down"))]
        done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        code = next(iter(done)).result() if not next(iter(done)).cancelled() else None
        for p in pending:
            p.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await p
        close_code = code if isinstance(code, int) and code else aiohttp.WSCloseCode.OK
        with contextlib.suppress(Exception):
            await up.close(code=close_code)
        with contextlib.suppress(Exception):
            await down.close(code=close_code)
    finally:
        m.websockets_open -= 1
        log.debug("websocket closed: instance %s %s", target.instance_id, endpoints.redact(request.path))
    return down


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(src: WebSocket, dst: WebSocket, m: ProxyMetrics, direction: str) -> int | None:
    """Copy frames from ``src`` to ``dst`` until ``src`` closes; returns its close code."""
    while True:
        msg = await src.receive()
        if msg.type == WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            await dst.ping(msg.data)
            continue
        elif msg.type == WSMsgType.PONG:
            await dst.pong(msg.data)
            continue
        else:  # CLOSE, CLOSING, CLOSED, ERROR
            return src.close_code
        m.ws_messages[direction] += 1
        m.bytes[direction] += len(msg.data)
