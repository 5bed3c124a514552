"""The two SSH routes to an instance, in the order to try them (pure).

Vast.ai offers two ways in: the instance's own ``22/tcp`` port mapping on its public IP (``direct``) and
the provider's SSH proxy ``ssh_host:ssh_port`` (``proxy``). Either can be down while the other works (a
host firewall, a proxy hiccup), so the collector tries both, the one that worked last first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vastkeep.state import InstanceRecord

DIRECT = "direct"
PROXY = "proxy"


@dataclass(frozen=True)
class Route:
    """One way to reach an instance's sshd."""

    name: str  # direct | proxy
    host: str
    port: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "host": self.host, "port": self.port}


def _port(value: object) -> int | None:
    if not isinstance(value, int | float | str):
        return None
    try:
        port = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return port if 0 < port < 65536 else None


def ssh_routes(public_ip: str | None, ports: Mapping[str, object] | None, ssh_host: str | None,
               ssh_port: object, last_good: str | None = None) -> list[Route]:
    """The usable routes: ``direct`` (public IP + the ``22/tcp`` mapping) then ``proxy``; the route named
    ``last_good`` moves to the front. A route with a missing host or port is left out."""
    routes: list[Route] = []
    direct_port = _port(ports.get("22/tcp")) if isinstance(ports, Mapping) else None
    ip = (public_ip or "").strip()
    if ip and direct_port:
        routes.append(Route(DIRECT, ip, direct_port))
    proxy_port = _port(ssh_port)
    host = (ssh_host or "").strip()
    if host and proxy_port:
        routes.append(Route(PROXY, host, proxy_port))
    if last_good:
        routes.sort(key=lambda r: r.name != last_good)  # stable: the other keeps its place
    return routes


def routes_for(record: InstanceRecord, last_good: str | None = None) -> list[Route]:
    """:func:`ssh_routes` for an instance record (``public_ip``, ``ports``, ``ssh_host``, ``ssh_port``)."""
    return ssh_routes(record.public_ip, record.ports, record.ssh_host, record.ssh_port, last_good)
