"""The stack under soak: ``vastkeep up``'s children (reused from :mod:`vastkeep.stack`) in a temporary folder,
on free ports, with canary secrets planted in their environment.

The soak destroys instances at random, so it only ever runs on its own simulated cloud:
:func:`refuse_real_cloud` stops it when ``VAST_API_KEY`` is set and ``VAST_API_URL`` is not a loopback address
(the real Vast.ai, or any remote stand-in). The children never see the caller's ``REDIS_URL``,
``VAST_API_KEY`` or credentials: the stack gets an embedded Redis and a fresh simulator.
"""

from __future__ import annotations

import io
import os
import secrets
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from vastkeep.core.errors import StackError
from vastkeep.soak.hostb import Relay, redis_target, relayed_url

if TYPE_CHECKING:
    from vastkeep.stack import Stack

#: Variables of the caller's environment that never reach the soaked stack.
DROPPED = (
    "REDIS_URL",
    "VAST_API_KEY",
    "VAST_API_URL",
    "ADMIN_API_KEY",
    "FLOWER_BASIC_AUTH",
    "VASTKEEP_HOME",
    "HUGGINGFACE_HUB_TOKEN",
    "HUGGINGFACE_API_URL",
    "CIVITAI_TOKEN",
    "CIVITAI_API_URL",
    "VASTKEEP_SIMULATED",
    "ADMIN_API_PORT",
    "FLOWER_PORT",
    "PROXY_PORT",
    "VASTKEEP_PROFILE",
    "PYTHONPATH",
)


def refuse_real_cloud(environ: dict[str, str]) -> str | None:
    """The reason the soak must not run with this environment, or None."""
    if not environ.get("VAST_API_KEY"):
        return None
    host = urlparse(environ.get("VAST_API_URL") or "https://console.vast.ai/api/v0").hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        return None
    return (
        f"VAST_API_KEY is set and VAST_API_URL points at {host} (a real cloud): the soak destroys instances "
        "at random and runs only on its own simulated cloud. Unset VAST_API_KEY to run it."
    )


def free_port() -> int:
    """A port free on 127.0.0.1 now (the kernel's pick)."""
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def canary(name: str) -> str:
    return f"soakcanary{name}{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Endpoints:
    """Where the running stack serves, and its credentials (read from ``vastkeep up``'s info)."""

    redis_url: str
    admin_api_url: str
    admin_api_key: str
    flower_url: str
    flower_user: str
    flower_password: str
    sim_control_url: str
    sim_control_token: str


class SoakStack:
    """Start and stop the supervised stack for one soak; ``info``, ``env``, ``pids()``, ``status()``."""

    def __init__(self, environ: dict[str, str], pool_size: int, *, keep: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vastkeep-soak-"))
        self.keep = keep
        self.canaries = {"ADMIN_API_KEY": canary("admin"), "FLOWER_PASSWORD": canary("flower")}
        env = {k: v for k, v in environ.items() if k not in DROPPED}
        env.update(
            {
                "VASTKEEP_HOME": str(self.dir / ".vastkeep"),
                "ADMIN_API_PORT": str(free_port()),
                "FLOWER_PORT": str(free_port()),
                "PROXY_PORT": str(free_port()),
                "ADMIN_API_KEY": self.canaries["ADMIN_API_KEY"],
                "FLOWER_BASIC_AUTH": f"admin:{self.canaries['FLOWER_PASSWORD']}",
                "WARM_POOL_DESIRED_SIZE": str(pool_size),
                "WARM_POOL_MAX_SIZE": str(max(50, pool_size)),
                "LOG_LEVEL": environ.get("LOG_LEVEL", "INFO"),
            }
        )
        self.environ = env
        self.stack: Stack | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.out = io.StringIO()
        self.relay: Relay | None = None

    def start(self) -> None:
        from vastkeep.core.settings import load_settings  # noqa: PLC0415
        from vastkeep.stack import Stack  # noqa: PLC0415

        settings = load_settings(self.environ, env_file=False)
        self.settings = settings
        self.stack = Stack(settings, dict(self.environ), out=self.out)
        cwd = os.getcwd()
        os.chdir(self.dir)  # children start here: no .env of the caller's folder is read
        try:
            self.stack.start(self._stop)
        except StackError:
            self.stop()
            raise
        finally:
            os.chdir(cwd)
        env = self.stack.env
        self.canaries.update(
            {
                "VAST_API_KEY": env["VAST_API_KEY"],
                "HUGGINGFACE_HUB_TOKEN": env["HUGGINGFACE_HUB_TOKEN"],
                "CIVITAI_TOKEN": env["CIVITAI_TOKEN"],
            }
        )
        self._thread = threading.Thread(
            target=self.stack.supervisor.run, args=(self._stop,), daemon=True, name="soak-supervisor"
        )
        self._thread.start()

    def start_hostb(self) -> None:
        """Host B (:mod:`vastkeep.soak.hostb`): a control and a keepalive worker that reach Redis through a
        relay the soak can cut, supervised beside the stack's own children."""
        stack = self._started()
        url = stack.env["REDIS_URL"]
        self.relay = Relay(*redis_target(url)).start()
        env = {**stack.env, "REDIS_URL": relayed_url(url, self.relay.port)}
        stack.spawn_worker("hostb-control", "control", node="control-b@%h", env=env, concurrency=2)
        stack.spawn_worker("hostb-keepalive", "keepalive", node="keepalive-b@%h", env=env)

    @property
    def running(self) -> Stack:
        """The started stack (``spawn_worker`` / ``spawn_beat`` add hosts and beats to it)."""
        return self._started()

    def _started(self) -> Stack:
        if self.stack is None:
            raise StackError("the soak's stack is not started")
        return self.stack

    @property
    def info(self) -> Mapping[str, object]:
        return self._started().info

    @property
    def endpoints(self) -> Endpoints:
        info = self.info
        sim = info["simulator"]
        if not isinstance(sim, Mapping):
            raise StackError("the soak's stack runs no simulator")
        return Endpoints(
            redis_url=str(info["redis_url"]),
            admin_api_url=str(info["admin_api_url"]),
            admin_api_key=str(info["admin_api_key"]),
            flower_url=str(info["flower_url"]),
            flower_user=str(info["flower_user"]),
            flower_password=str(info["flower_password"]),
            sim_control_url=str(sim["control_url"]),
            sim_control_token=str(sim["control_token"]),
        )

    @property
    def home(self) -> Path:
        return self.dir / ".vastkeep"

    def pids(self) -> dict[str, int | None]:
        return self._started().supervisor.pids()

    def status(self) -> Mapping[str, Mapping[str, object]]:
        return self._started().supervisor.status()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.stack is not None:
            self.stack.shutdown()
        if self.relay is not None:
            self.relay.stop()

    def cleanup(self) -> None:
        if not self.keep:
            import shutil  # noqa: PLC0415

            shutil.rmtree(self.dir, ignore_errors=True)


__all__ = ["DROPPED", "Endpoints", "SoakStack", "free_port", "refuse_real_cloud"]
