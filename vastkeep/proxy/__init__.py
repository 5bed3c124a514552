"""The ComfyUI endpoint (``vastkeep proxy``): HTTP and websocket relay to a leased instance or the pool.

- ``endpoints``: endpoint tokens, issued with a lease (``/c/{endpointToken}/``), resolved against the lease.
- ``decide``: pure decisions: headers that cross, shortest queue for ``/pool``, uploads, per-client limits.
- ``resolve``: token / pool → the upstream, read from Redis, judged by the SSRF guard.
- ``server``: the aiohttp application (streams, spool, timeouts, redacted access log); ``wsrelay``: /ws.
- ``failplan`` (pure) and ``failover``: the endpoint outlives its instance: the lease moves, websockets
  reconnect, prompts sent with consent are re-submitted (``prompts``: ``POST /prompt`` remembered).
- ``metrics``: the proxy's Prometheus figures; ``main``: the process.

The front door stays light (no aiohttp import): the admin API and the tasks use ``endpoints`` only.
Logger: ``vastkeep.proxy`` (access log ``vastkeep.proxy.access``).
"""

from vastkeep.proxy import endpoints
from vastkeep.proxy.endpoints import REDACTED, endpoint_url, lease_endpoints, redact


def run_proxy(loop: str = "asyncio") -> int:
    """``vastkeep proxy``: serve until SIGINT/SIGTERM (imports aiohttp only now)."""
    from vastkeep.proxy.main import main  # noqa: PLC0415

    return main(loop)


__all__ = ["REDACTED", "endpoint_url", "endpoints", "lease_endpoints", "redact", "run_proxy"]
