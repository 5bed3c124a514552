"""The ComfyUI endpoint: an aiohttp reverse proxy for HTTP and websockets.

Two ways in. ``/c/{endpointToken}/...`` follows a lease (the token is the credential; see ``endpoints``).
``/pool/...`` takes ``X-Admin-Key`` (or any live endpoint token in ``X-Endpoint-Token``) and sends each
request to the ready, unleased instance with the fewest requests in flight through this proxy.

Every upstream address passes the ports layer's SSRF guard (``resolve.safe_base``); every upstream call
has a connect timeout and a read timeout (the longest silence). Bodies over ``SMALL_BODY`` stream both ways;
uploads are spooled to disk first, up to a cap, so they can be sent again. Each client (endpoint token, or
address with the admin key) has at most ``client_concurrency`` HTTP requests in flight. Tokens never reach
a log line: the access log and our own lines print paths through ``endpoints.redact``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from vastkeep.proxy import endpoints
from vastkeep.proxy.decide import (
    is_upload,
    may_start,
    pick_instance,
    request_headers,
    response_headers,
    upstream_url,
)
from vastkeep.proxy.failplan import HARD_KINDS, Why
from vastkeep.proxy.metrics import ProxyMetrics
from vastkeep.proxy.prompts import is_prompt_post, observe_answer, observe_request, post_prompt
from vastkeep.proxy.resolve import Resolver, Target
from vastkeep.proxy.wsrelay import relay_websocket

if TYPE_CHECKING:
    from vastkeep.proxy.failover import Failover, LeaseState

log = logging.getLogger("vastkeep.proxy")
access_log = logging.getLogger("vastkeep.proxy.access")

SMALL_BODY = 65_536  # bodies known to be at most this are read whole (one write each way); larger stream
CHUNK = 262_144
READ_BUFFER = 4 * 1024 * 1024  # an upstream body is read in pieces up to this size (fewer, larger writes)


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log with every endpoint token in the path shown as ``ept_***``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %s %s %.1fms', request.remote, request.method,
                         endpoints.redact(request.path), response.status, response.body_length, time * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class ProxyServer:
    """The application and its shared upstream session (connection reuse to every instance)."""

    def __init__(self, resolver: Resolver, *, admin_key: str | None, connect_timeout_s: float,
                 timeout_s: float, max_upload_bytes: int, client_concurrency: int, spool_dir: Path) -> None:
        self.resolver, self.admin_key = resolver, admin_key
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=timeout_s)
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.max_upload_bytes, self.client_concurrency = max_upload_bytes, client_concurrency
        self.spool_dir = spool_dir
        self.metrics = ProxyMetrics()
        self.client_in_flight: Counter[str] = Counter()
        self.instance_in_flight: Counter[str] = Counter()
        self.instance_served: Counter[str] = Counter()
        self.session: aiohttp.ClientSession | None = None
        #: failover (``main.build`` sets it); None: a dead instance answers 502/504, the client leases again
        self.failover: Failover | None = None
        self.app = web.Application(client_max_size=SMALL_BODY)
        self.app.router.add_get("/metrics", self.get_metrics)
        self.app.router.add_get("/health", self.get_health)
        self.app.router.add_route("*", "/c/{token}", self.add_slash)
        self.app.router.add_route("*", "/c/{token}/{tail:.*}", self.via_token)
        self.app.router.add_route("*", "/pool/{tail:.*}", self.via_pool)
        self.app.on_startup.append(self._open)
        self.app.on_cleanup.append(self._close)

    async def _open(self, _app: web.Application) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             read_bufsize=READ_BUFFER, cookie_jar=aiohttp.DummyCookieJar(),
                                             timeout=self.timeout,
                                             skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"))

    async def _close(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    # ── plain routes ────────────────────────────────────────────────────────
    async def get_metrics(self, request: web.Request) -> web.Response:
        if self.resolver.refused_unsafe:
            self.metrics.upstream_errors["refused-address"] = self.resolver.refused_unsafe
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def get_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def add_slash(self, request: web.Request) -> web.StreamResponse:
        """``/c/{token}`` → ``/c/{token}/``: ComfyUI's page uses relative paths, which need the slash."""
        qs = request.rel_url.raw_query_string
        raise web.HTTPMovedPermanently(f"{request.rel_url.raw_path}/" + (f"?{qs}" if qs else ""))

    # ── the two ways in ─────────────────────────────────────────────────────
    async def via_token(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        target = await self.resolver.token(token)
        if target is None:
            if self.failover is not None:
                self.failover.forget(token)
            self.metrics.rejected["unknown-endpoint"] += 1
            return self._answer(request, "c", 404, {"error": "not_found",
                                                     "reason": "unknown endpoint, or its lease ended"})
        tail = _tail(request.rel_url.raw_path, 3)
        st = None
        if self.failover is not None:
            st = self.failover.state(token, target)
            if target.lost and st.task is None and st.target.instance_id == target.instance_id:
                self.failover.start(st, Why(target.lost))
            target = await self.failover.settled(st)
            if st.pending_error is not None:  # the one error of a failover that lost prompts
                body, st.pending_error = st.pending_error, None
                return self._answer(request, "c", 503, body, headers={"Retry-After": "0"})
            if not target.url:
                return self._answer(request, "c", 503, {"error": "unavailable", "reason":
                                    f"instance {target.instance_id} is lost and no instance is ready to take "
                                    "the lease yet"}, headers={"Retry-After": "5"})
        return await self._forward(request, "c", target, "t:" + endpoints.digest(token)[:16], tail, st)

    async def via_pool(self, request: web.Request) -> web.StreamResponse:
        if not await self._pool_allowed(request):
            self.metrics.rejected["auth"] += 1
            return self._answer(request, "pool", 401, {"error": "unauthorized",
                                                        "reason": "X-Admin-Key or X-Endpoint-Token needed"})
        candidate = pick_instance(await self.resolver.pool_candidates(), self.instance_in_flight,
                                  self.instance_served)
        if candidate is None:
            self.metrics.upstream_errors["none-ready"] += 1
            return self._answer(request, "pool", 503, {"error": "unavailable",
                                                        "reason": "no ready, unleased instance"},
                                headers={"Retry-After": "5"})
        target = Target(candidate.instance_id, candidate.url)
        return await self._forward(request, "pool", target, "a:" + (request.remote or "?"),
                                   _tail(request.rel_url.raw_path, 2))

    async def _pool_allowed(self, request: web.Request) -> bool:
        key = request.headers.get("X-Admin-Key")
        if key is not None and self.admin_key and hmac.compare_digest(key.encode(), self.admin_key.encode()):
            return True
        token = request.headers.get("X-Endpoint-Token")
        return token is not None and await self.resolver.token(token) is not None

    def _answer(self, request: web.Request, route: str, status: int, body: dict[str, object],
                headers: dict[str, str] | None = None) -> web.Response:
        self.metrics.requests[(route, status)] += 1
        return web.json_response(body, status=status, headers=headers)

    # ── relaying ────────────────────────────────────────────────────────────
    async def _forward(self, request: web.Request, route: str, target: Target, client: str,
                       tail: str, st: LeaseState | None = None) -> web.StreamResponse:
        query = request.rel_url.raw_query_string
        if request.headers.get("Upgrade", "").lower() == "websocket":
            assert self.session is not None
            return await relay_websocket(self, request, route, target, tail, query, st)
        if not may_start(self.client_in_flight[client], self.client_concurrency):
            self.metrics.rejected["concurrency"] += 1
            return self._answer(request, route, 429, {"error": "too_many_requests",
                                                       "reason": f"at most {self.client_concurrency} "
                                                                 "requests in flight per client"},
                                headers={"Retry-After": "1"})
        self.client_in_flight[client] += 1
        self.instance_in_flight[target.instance_id] += 1
        self.instance_served[target.instance_id] += 1
        spool: Path | None = None
        try:
            if is_upload(request.method, tail):
                spool = await self._spool(request)
                if spool is None:
                    self.metrics.rejected["too-large"] += 1
                    return self._answer(request, route, 413, {
                        "error": "payload_too_large",
                        "reason": f"uploads are limited to {self.max_upload_bytes} bytes "
                                  "(PROXY_MAX_UPLOAD_BYTES)"})
            if st is not None and is_prompt_post(request.method, tail):
                return await post_prompt(self, request, route, st, tail)
            url = upstream_url(target.url, tail, query)
            resp = await self._http(request, route, target, url, spool, st, tail)
            kind = request.get("vastkeep_upstream_error")
            if (st is not None and self.failover is not None and kind in HARD_KINDS and not resp.prepared
                    and request.method in ("GET", "HEAD")
                    and self.failover.strike(st, kind, asyncio.get_running_loop().time())):
                target = await self.failover.settled(st)  # gone: the same read, once, on the new instance
                url = upstream_url(target.url, tail, query)
                resp = await self._http(request, route, target, url, None, st, tail)
            if spool is not None and st is not None and self.failover is not None and resp.status == 200:
                self.failover.keep_upload(st, spool, tail, request.headers.get("Content-Type", ""))
                spool = None  # kept for replay after a failover
            return resp
        finally:
            self.client_in_flight[client] -= 1
            if self.client_in_flight[client] <= 0:
                del self.client_in_flight[client]
            self.instance_in_flight[target.instance_id] -= 1
            if spool is not None:
                with contextlib.suppress(OSError):
                    spool.unlink()

    async def _spool(self, request: web.Request) -> Path | None:
        """The request body in a spool file (None when it passes the cap; nothing is kept then)."""
        path = self.spool_dir / f"{uuid.uuid4().hex}.upload"
        size = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise _TooLarge
                    fh.write(chunk)
        except _TooLarge:
            path.unlink(missing_ok=True)
            return None
        self.metrics.uploads_spooled += 1
        return path

    async def _http(self, request: web.Request, route: str, target: Target, url: str,
                    spool: Path | None, st: LeaseState | None = None, tail: str = "") -> web.StreamResponse:
        assert self.session is not None
        headers = request_headers(request.headers.items())
        headers.append(("X-Forwarded-For", request.remote or ""))
        data: BinaryIO | bytes | AsyncIterator[bytes] | None = None
        spooled: BinaryIO | None = None
        length = request.content_length
        if spool is not None:
            data = spooled = spool.open("rb")
            size = spool.stat().st_size
            headers.append(("Content-Length", str(size)))
            self.metrics.bytes["up"] += size
        elif length is not None and length <= SMALL_BODY:
            data = await request.read() if length else None
            self.metrics.bytes["up"] += length
            if st is not None:
                observe_request(st, request.method, tail, data)
        elif request.body_exists:
            data = self._count_up(request)
        resp: web.StreamResponse | None = None
        try:
            async with self.session.request(request.method, url, headers=headers, data=data,
                                            allow_redirects=False) as up:
                out_headers = response_headers(up.headers.items())
                if up.status in (301, 302, 303, 307, 308):
                    out_headers = _prefixed_location(out_headers, request, route)
                n = up.content_length
                if n is not None and n <= SMALL_BODY:
                    body = await up.read()
                    if st is not None:
                        observe_answer(st, tail, up.status, body)
                    self.metrics.bytes["down"] += len(body)
                    self.metrics.requests[(route, up.status)] += 1
                    return web.Response(status=up.status, headers=out_headers, body=body)
                resp = web.StreamResponse(status=up.status, headers=out_headers)
                if n is not None:
                    resp.content_length = n
                if request.transport is not None:  # large bodies: fewer, larger writes before a drain
                    request.transport.set_write_buffer_limits(high=READ_BUFFER)
                await resp.prepare(request)
                self.metrics.requests[(route, up.status)] += 1
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                    self.metrics.bytes["down"] += len(chunk)
                await resp.write_eof()
                return resp
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return self._failed(request, route, target, "timeout", 504, resp)
        except aiohttp.ClientConnectorError:
            return self._failed(request, route, target, "connect", 502, resp)
        except (aiohttp.ClientError, ConnectionError):
            return self._failed(request, route, target, "upstream", 502, resp)
        finally:
            if spooled is not None:
                spooled.close()

    async def _count_up(self, request: web.Request) -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(CHUNK):
            self.metrics.bytes["up"] += len(chunk)
            yield chunk

    def _failed(self, request: web.Request, route: str, target: Target, kind: str, status: int,
                resp: web.StreamResponse | None = None) -> web.StreamResponse:
        self.metrics.upstream_errors[kind] += 1
        request["vastkeep_upstream_error"] = kind
        log.warning("upstream %s on instance %s: %s %s", kind, target.instance_id, request.method,
                    endpoints.redact(request.path)[:200])
        if resp is not None and resp.prepared:  # the status line is gone: cut the body short instead
            if request.transport is not None:
                request.transport.close()
            return resp
        return self._answer(request, route, status, {"error": "bad_gateway" if status == 502 else "timeout",
                                                      "reason": f"instance {target.instance_id}: {kind}"})


class _TooLarge(Exception):
    pass


def _tail(raw_path: str, skip: int) -> str:
    """The path after ``/c/{token}/`` (skip 3 parts) or ``/pool/`` (skip 2), still percent-encoded."""
    parts = raw_path.split("/", skip)
    return parts[skip] if len(parts) > skip else ""


def _prefixed_location(headers: list[tuple[str, str]], request: web.Request,
                       route: str) -> list[tuple[str, str]]:
    """An upstream redirect to ``/x`` means ``/c/{token}/x`` (or ``/pool/x``) to the client."""
    prefix = "/".join(request.rel_url.raw_path.split("/", 3)[:3]) if route == "c" else "/pool"
    return [(k, prefix + v if k.lower() == "location" and v.startswith("/") else v) for k, v in headers]


async def serve(server: ProxyServer, host: str, port: int, stop: asyncio.Event) -> None:
    """Listen until ``stop`` is set."""
    runner = web.AppRunner(server.app, access_log_class=RedactingAccessLogger, access_log=access_log,
                           handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("ComfyUI endpoint listening on http://%s:%d (/c/{endpointToken}/, /pool/)", host, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


__all__ = ["ProxyServer", "RedactingAccessLogger", "serve"]
