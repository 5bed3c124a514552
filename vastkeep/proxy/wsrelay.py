"""Websockets through the proxy: ComfyUI's ``/ws?clientId=`` relayed both ways, text and binary frames.

The upstream handshake is made first (under the connect + read timeouts), so a dead instance answers the
client with a plain 502/504 instead of an accepted socket that never speaks. Pings and pongs are relayed
as frames, not answered here, so each end sees the other's liveness; the first side to close closes the
other with the same code.

Behind a lease's endpoint (``st`` given, failover on) the client's socket outlives the instance: when the
upstream drops (and a probe is refused) or the lease's failover moves it (the keepalive declared the instance
lost), the relay reconnects upstream to the new instance with the same path and ``clientId``, sends the client
the failover's status frame (and the one error of each of its prompts lost for want of consent), then relays
the new instance's messages. Frames the client sends during the switch are dropped. A client that left (its
socket closing while a frame was written to it) ends the relay: it is never taken for the instance dropping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web

from vastkeep.proxy import endpoints
from vastkeep.proxy.decide import request_headers, upstream_url

if TYPE_CHECKING:
    from vastkeep.proxy.failover import LeaseState
    from vastkeep.proxy.metrics import ProxyMetrics
    from vastkeep.proxy.resolve import Target
    from vastkeep.proxy.server import ProxyServer

log = logging.getLogger("vastkeep.proxy")
#: What the relay does once one of its waits ended (:func:`next_step`).
CLOSE, PROBE, RECONNECT = "close", "probe", "reconnect"
_WS_HEADERS = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
               "sec-websocket-protocol"}


async def _connect(server: ProxyServer, request: web.Request, url: str) -> aiohttp.ClientWebSocketResponse:
    """The upstream handshake, under the connect + read timeouts (raises as aiohttp does)."""
    assert server.session is not None
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    headers = [(k, v) for k, v in request_headers(request.headers.items()) if k.lower() not in _WS_HEADERS]
    return await asyncio.wait_for(
        server.session.ws_connect(url, headers=headers, protocols=protocols, autoping=False,
                                  heartbeat=None, max_msg_size=0, compress=0,
                                  timeout=aiohttp.ClientWSTimeout(ws_close=5.0)),
        server.connect_timeout_s + server.timeout_s)


class ClientGone(Exception):
    """A frame could not be written to the client: its socket is closing (it left)."""


def next_step(*, client_done: bool, client_gone: bool, failover: bool, upstream_done: bool,
              moved: bool) -> str:
    """After a wait of the relay: ``CLOSE`` (the client left or closed, or no failover behind this socket),
    ``PROBE`` (the instance dropped us and the lease did not move: a strike, a probe, then reconnect) or
    ``RECONNECT`` (the lease moved: to the new instance)."""
    if client_done or client_gone or not failover:
        return CLOSE
    if upstream_done and not moved:
        return PROBE
    return RECONNECT


async def relay_websocket(server: ProxyServer, request: web.Request, route: str, target: Target, tail: str,
                          query: str, st: LeaseState | None = None) -> web.StreamResponse:
    try:
        up = await _connect(server, request, upstream_url(target.url, tail, query))
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
    holder = [up]
    rid = id(holder)
    fresh_socket = False
    if st is not None and server.failover is not None:
        st.relays[rid] = request.query.get("clientId")
    client = asyncio.ensure_future(_pump_client(down, holder, m))
    try:
        while True:
            first = (lambda: st.reconnected.add(rid)) if st is not None and fresh_socket else None
            up_pump = asyncio.ensure_future(_pump(holder[0], down, m, "down", st, first))
            waiters: set[asyncio.Future[Any]] = {client, up_pump}
            changed = st.changed if st is not None else None
            moved = asyncio.ensure_future(changed.wait()) if changed is not None else None
            if moved is not None:
                waiters.add(moved)
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for f in (up_pump, moved):
                if f is not None and f not in done:
                    f.cancel()
            gone = up_pump in done and isinstance(up_pump.exception(), ClientGone)
            step = next_step(client_done=client in done, client_gone=gone or down.closed,
                             failover=st is not None and changed is not None and server.failover is not None,
                             upstream_done=up_pump in done, moved=moved is not None and moved in done)
            if step == CLOSE or st is None or changed is None or server.failover is None:
                finished = client if client in done else up_pump
                code = finished.result() if finished.done() and not finished.cancelled() \
                    and not finished.exception() else None
                await _close_both(holder[0], down, code)
                break
            if step == PROBE:  # the instance dropped us: is anybody there?
                server.failover.strike(st, "ws-drop", asyncio.get_running_loop().time())
                await server.failover.probe(st)
            _close_soon(holder[0])
            fresh = await _reconnect(server, request, tail, query, st, changed)
            if fresh is None:
                await _close_both(None, down, aiohttp.WSCloseCode.TRY_AGAIN_LATER)
                break
            holder[0], target = fresh
            if changed.is_set():  # moved: the client hears why before the new instance's messages
                try:
                    for frame in server.failover.frames_for(st, st.relays.get(rid)):
                        await down.send_str(frame)
                except (ConnectionError, RuntimeError, aiohttp.ClientError):  # the client left meanwhile
                    await _close_both(holder[0], down, None)
                    break
            fresh_socket = True  # reconnected once ComfyUI's first frame (its status) shows it registered us
    finally:
        client.cancel()
        if st is not None:
            st.relays.pop(rid, None)
        m.websockets_open -= 1
        log.debug("websocket closed: instance %s %s", target.instance_id, endpoints.redact(request.path))
    return down


async def _reconnect(server: ProxyServer, request: web.Request, tail: str, query: str, st: LeaseState,
                     changed: asyncio.Event) -> tuple[aiohttp.ClientWebSocketResponse, Target] | None:
    """The upstream socket again: on the new instance as soon as the lease moved (``changed``), else on the
    same one if it answers again; retried with full jitter, probing the silent instance now and then (each
    refusal is a strike towards a failover) until ``move_wait_s``. None: nothing to reconnect to."""
    assert server.failover is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + server.failover.policy.move_wait_s
    attempt = 0
    while True:
        target = st.target
        if target.url and (changed.is_set() or st.task is None):
            try:
                return await _connect(server, request, upstream_url(target.url, tail, query)), target
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
        attempt += 1
        if loop.time() > deadline:
            return None
        if not changed.is_set() and st.task is None:
            await server.failover.probe(st)  # nobody there? one more strike (a failover at the limit)
        with contextlib.suppress(TimeoutError):  # full jitter, cut short by the lease's move
            await asyncio.wait_for(changed.wait(), random.uniform(0, min(1.0, 0.05 * 2**attempt)))


def _close_soon(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close a dead instance's socket without waiting on its silence."""
    task = asyncio.ensure_future(asyncio.wait_for(ws.close(), 1.0))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


async def _close_both(up: aiohttp.ClientWebSocketResponse | None, down: web.WebSocketResponse,
                      code: object) -> None:
    close_code = code if isinstance(code, int) and code else aiohttp.WSCloseCode.OK
    if up is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(up.close(code=close_code), 5.0)
    with contextlib.suppress(Exception):
        await down.close(code=close_code)


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump_client(down: web.WebSocketResponse, holder: list[aiohttp.ClientWebSocketResponse],
                       m: ProxyMetrics) -> int | None:
    """Client → instance for the socket's whole life (whichever instance ``holder`` has now); returns the
    client's close code. A frame the instance cannot take (it is going away) is dropped."""
    while True:
        msg = await down.receive()
        if msg.type not in _FRAMES:
            return down.close_code  # CLOSE, CLOSING, CLOSED, ERROR
        try:
            if not await _write(holder[0], msg):
                continue
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            continue
        m.ws_messages["up"] += 1
        m.bytes["up"] += len(msg.data)


_FRAMES = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG)


async def _write(dst: WebSocket, msg: aiohttp.WSMessage) -> bool:
    """Write one frame of ``_FRAMES`` to ``dst``; True for a data frame (the metrics count those only)."""
    if msg.type == WSMsgType.TEXT:
        await dst.send_str(msg.data)
    elif msg.type == WSMsgType.BINARY:
        await dst.send_bytes(msg.data)
    elif msg.type == WSMsgType.PING:
        await dst.ping(msg.data)
        return False
    else:
        await dst.pong(msg.data)
        return False
    return True


async def _pump(src: WebSocket, dst: WebSocket, m: ProxyMetrics, direction: str,
                st: LeaseState | None = None, first: Callable[[], None] | None = None) -> int | None:
    """Copy frames from ``src`` to ``dst`` until ``src`` closes; returns its close code. ``first`` is called
    when the first frame arrives. Raises :class:`ClientGone` when ``dst`` is the client (``direction``
    "down") and a frame cannot be written to it."""
    while True:
        msg = await src.receive()
        if first is not None:
            first()
            first = None
        if msg.type not in _FRAMES:
            return src.close_code  # CLOSE, CLOSING, CLOSED, ERROR
        if msg.type == WSMsgType.TEXT and st is not None and '"prompt_id"' in msg.data:
            st.observe(msg.data)
        try:
            if not await _write(dst, msg):
                continue
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            if direction == "down":
                raise ClientGone from exc
            raise
        m.ws_messages[direction] += 1
        m.bytes[direction] += len(msg.data)
