"""The two SSH routes to an instance, in the order to try them (pure).

A provider may offer two ways in: the instance's own ``22/tcp`` port mapping on its public IP (``direct``)
and the provider's SSH gateway (``proxy``: the record's ``ssh_proxy_host``/``ssh_proxy_port``). Either can
be down while the other works (a host firewall, a gateway hiccup), so the collector tries both, the one that
worked last first. The derivation itself lives with the provider seam (:func:`vastkeep.providers.ssh_routes`)
so that a provider instance and a stored record give the same routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vastkeep.providers.base import DIRECT, PROXY, ssh_routes
from vastkeep.providers.base import SshRoute as Route

if TYPE_CHECKING:
    from vastkeep.state import InstanceRecord


def routes_for(record: InstanceRecord, last_good: str | None = None) -> list[Route]:
    """:func:`ssh_routes` for an instance record (``public_ip``, ``ports``, its SSH gateway)."""
    return ssh_routes(record.public_ip, record.ports, record.ssh_proxy_host, record.ssh_proxy_port, last_good)


__all__ = ["DIRECT", "PROXY", "Route", "routes_for", "ssh_routes"]
