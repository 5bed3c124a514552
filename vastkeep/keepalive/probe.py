"""Layer 4's one network check: ``GET /system_stats`` within a whole-call deadline, failures named the way
the guide's log lines and events report them (timeout, refused, reset, HTTP status, wrong body)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from yarl import URL

from vastkeep.ports import is_comfyui_stats

MAX_BODY_BYTES = 64 * 1024


async def ping(session: aiohttp.ClientSession, url: str, timeout_s: float) -> tuple[bool, str | None]:
    """One keepalive ping: ``GET <url>/system_stats`` → 200 with ComfyUI's stats body, within the deadline."""
    return await ping_stats(session, URL(url.rstrip("/") + "/system_stats"), timeout_s)


async def ping_stats(session: aiohttp.ClientSession, stats_url: URL,
                     timeout_s: float) -> tuple[bool, str | None]:
    """:func:`ping` with the ``/system_stats`` URL already built (what a shard runner calls)."""
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(stats_url, allow_redirects=False) as resp:
                body = await resp.content.read(MAX_BODY_BYTES + 1)
                if resp.status != 200:
                    return False, f"HTTP {resp.status}"
        data = json.loads(body) if len(body) <= MAX_BODY_BYTES else None
    except TimeoutError:
        return False, f"timeout after {timeout_s:g}s"
    except aiohttp.ClientConnectorError as exc:
        os_error = getattr(exc, "os_error", None)
        refused = isinstance(os_error, ConnectionRefusedError) or "refused" in str(exc).lower()
        return False, "connection refused" if refused else f"connect failed: {exc.strerror}"
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError):
        return False, "connection reset"
    except aiohttp.ClientError as exc:
        return False, f"HTTP error: {type(exc).__name__}"
    except ValueError:
        return False, "wrong body: not JSON"
    if not is_comfyui_stats(data):
        return False, "wrong body: not ComfyUI system_stats"
    return True, None
