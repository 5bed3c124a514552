"""``vastkeep proxy``: build the endpoint from the settings and serve until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp
    from redis.asyncio import Redis

    from vastkeep.core.settings import Settings
    from vastkeep.proxy.failover import Failover
    from vastkeep.proxy.server import ProxyServer

log = logging.getLogger("vastkeep.proxy")


def build(settings: Settings, redis_client: Redis[bytes]) -> ProxyServer:
    """A :class:`ProxyServer` for ``settings`` over an asyncio Redis client."""
    from vastkeep.proxy.resolve import Resolver  # noqa: PLC0415
    from vastkeep.proxy.server import ProxyServer  # noqa: PLC0415
    from vastkeep.state import Keys  # noqa: PLC0415

    resolver = Resolver(redis_client, Keys(), settings.warm_pool_name, settings.warm_pool_label_prefix,
                        simulated=bool(settings.vastkeep_simulated))
    key = settings.admin_api_key.reveal() if settings.admin_api_key else None
    server = ProxyServer(resolver, admin_key=key, connect_timeout_s=settings.proxy_upstream_connect_timeout_s,
                         timeout_s=settings.proxy_upstream_timeout_s,
                         max_upload_bytes=settings.proxy_max_upload_bytes,
                         client_concurrency=settings.proxy_client_concurrency,
                         spool_dir=Path(settings.vastkeep_home) / "proxy-spool")
    if settings.redis_url:
        server.failover = build_failover(settings, server)
    return server


def build_failover(settings: Settings, server: ProxyServer) -> Failover:
    """Failover for ``server``: the lease moves run on a synchronous client (in a thread; they are rare)."""
    from vastkeep.pool import build_leases  # noqa: PLC0415
    from vastkeep.proxy.failover import Failover  # noqa: PLC0415
    from vastkeep.state import EventLog, Keys, StateStore, connect  # noqa: PLC0415

    assert settings.redis_url
    sync = connect(settings.redis_url)
    keys = Keys()
    leases = build_leases(settings, sync, keys, store=StateStore(sync, keys), events=EventLog(sync, keys))

    def session() -> aiohttp.ClientSession:
        assert server.session is not None
        return server.session

    return Failover(server.resolver, leases, EventLog(sync, keys), server.metrics, session)


def async_redis(url: str) -> Redis[bytes]:
    import redis.asyncio as aredis  # noqa: PLC0415

    return aredis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0,
                                 health_check_interval=30)


async def run(settings: Settings) -> None:
    from vastkeep.proxy.server import serve  # noqa: PLC0415

    if not settings.redis_url:
        raise SystemExit("vastkeep proxy: REDIS_URL is not set (run it under `vastkeep up`, or set it)")
    client = async_redis(settings.redis_url)
    server = build(settings, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchers = [asyncio.ensure_future(server.resolver.watch_drops(client, stop))]
    if server.failover is not None:
        watchers.append(asyncio.ensure_future(server.failover.watch(stop)))
    try:
        await serve(server, settings.proxy_host, settings.proxy_port, stop)
    finally:
        stop.set()
        await asyncio.wait(watchers, timeout=3)
        await client.aclose()  # type: ignore[attr-defined]  # types-redis predates aclose (redis-py 5)


def use_loop(loop: str) -> str:
    """``auto``: uvloop where installed, else asyncio's own; returns the one in use."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop  # type: ignore[import-not-found]  # noqa: PLC0415 - optional, not in the test extras
        except ImportError:
            if loop == "uvloop":
                raise SystemExit("vastkeep proxy: --loop uvloop, but uvloop is not installed") from None
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return "uvloop"
    return "asyncio"


def main(loop: str = "asyncio") -> int:
    from vastkeep.core.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("event loop: %s", use_loop(loop))
    asyncio.run(run(settings))
    return 0


__all__ = ["async_redis", "build", "main", "run"]
