"""``POST /prompt`` through a lease's endpoint: remembered so a failover can send it again.

The body is read whole (up to the upload cap), sent upstream unchanged, and on ComfyUI's 200 the prompt is
tracked with its ``prompt_id``, its ``client_id`` and whether the client consented to re-submission: an
``Idempotency-Key`` header (a repeat with the same key is answered with the first answer and queues nothing),
or the lease's ``resubmitPrompts`` setting. When the instance is found gone while the POST is sent and the
client consented, the POST waits for the failover and goes to the new instance. Queue deletes and
``/interrupt`` with a ``prompt_id`` mark a prompt as not to be sent again; so does a ``/history/{id}`` that
has it.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from vastkeep.proxy.decide import upstream_url
from vastkeep.proxy.failplan import Tracked

if TYPE_CHECKING:
    from vastkeep.proxy.failover import LeaseState
    from vastkeep.proxy.server import ProxyServer

PROMPT_TAILS = ("prompt", "api/prompt")
_KEY_MAX = 200


def is_prompt_post(method: str, tail: str) -> bool:
    return method == "POST" and tail.strip("/") in PROMPT_TAILS


def observe_request(st: LeaseState, method: str, tail: str, body: bytes | None) -> None:
    """A queue delete or an interrupt naming prompts: they are not sent again after a failover."""
    path = tail.strip("/").removeprefix("api/")
    if method != "POST" or path not in ("queue", "interrupt") or not body:
        return
    try:
        data = json.loads(body)
    except ValueError:
        return
    if not isinstance(data, dict):
        return
    ids = data.get("delete") if path == "queue" else [data.get("prompt_id")]
    for pid in ids if isinstance(ids, list) else []:
        if isinstance(pid, str) and pid in st.prompts:
            st.prompts[pid].done = True


def observe_answer(st: LeaseState, tail: str, status: int, body: bytes) -> None:
    """``/history/{prompt_id}`` answered with the prompt: it finished; it is not sent again."""
    path = tail.strip("/").removeprefix("api/")
    if status != 200 or not path.startswith("history/"):
        return
    pid = path.split("/", 1)[1]
    if pid in st.prompts and len(body) > 2:
        try:
            data = json.loads(body)
        except ValueError:
            return
        if isinstance(data, dict) and pid in data:
            st.prompts[pid].done = True


async def post_prompt(server: ProxyServer, request: web.Request, route: str, st: LeaseState,
                      tail: str) -> web.StreamResponse:
    """Send the prompt, remember it, answer as ComfyUI answered."""
    assert server.failover is not None and server.session is not None
    key = request.headers.get("Idempotency-Key", "")[:_KEY_MAX]
    if key and key in st.answers:
        status, first = st.answers[key]
        server.metrics.requests[(route, status)] += 1
        return web.Response(status=status, body=first, content_type="application/json")
    raw = await _body(request, server.max_upload_bytes)
    if raw is None:
        server.metrics.rejected["too-large"] += 1
        return server._answer(request, route, 413, {
            "error": "payload_too_large", "reason": "the prompt is larger than PROXY_MAX_UPLOAD_BYTES"})
    server.metrics.bytes["up"] += len(raw)
    consent = bool(key) or st.target.resubmit
    for attempt in range(2):
        target = st.target
        try:
            async with server.session.post(upstream_url(target.url, tail, request.rel_url.raw_query_string),
                                           data=raw, headers={"Content-Type": "application/json"}) as up:
                body = await up.read()
                status = up.status
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return server._failed(request, route, target, "timeout", 504)
        except (aiohttp.ClientError, ConnectionError) as exc:
            kind = "connect" if isinstance(exc, aiohttp.ClientConnectorError) else "upstream"
            gone = server.failover.strike(st, kind, asyncio.get_running_loop().time())
            if gone and consent and attempt == 0:
                await server.failover.settled(st)
                continue
            return server._failed(request, route, target, kind, 502)
        break
    server.metrics.bytes["down"] += len(body)
    server.metrics.requests[(route, status)] += 1
    _track(server, st, raw, status, body, consent)
    if key and status == 200:
        st.answers[key] = (status, body)
        if len(st.answers) > server.failover.policy.max_prompts:
            st.answers.pop(next(iter(st.answers)))
    return web.Response(status=status, body=body, content_type="application/json")


async def _body(request: web.Request, limit: int) -> bytes | None:
    """The whole request body, or None past ``limit`` bytes (a prompt graph is JSON: read whole)."""
    parts, size = [], 0
    async for chunk in request.content.iter_chunked(65_536):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _track(server: ProxyServer, st: LeaseState, raw: bytes, status: int, body: bytes, consent: bool) -> None:
    if status != 200:
        return
    try:
        sent, answer = json.loads(raw), json.loads(body)
    except ValueError:
        return
    if not (isinstance(sent, dict) and isinstance(answer, dict) and isinstance(answer.get("prompt_id"), str)):
        return
    client_id = sent.get("client_id")
    assert server.failover is not None
    st.track(Tracked(answer["prompt_id"], sent, consent, client_id=client_id if isinstance(client_id, str)
                     else None), server.failover.policy.max_prompts)


__all__ = ["PROMPT_TAILS", "is_prompt_post", "observe_answer", "observe_request", "post_prompt"]
