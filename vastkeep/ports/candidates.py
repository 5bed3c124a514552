"""Layer 3, part 1: which ComfyUI ports to try, in which order, and which addresses are safe to try.

The guide's priority is fixed: direct 8188 on the public IP, then the host port Vast maps to the
container's ``8188/tcp``, then the one mapped to ``18188/tcp``. We only ever probe the address and the
ports the provider reported for that instance, and we refuse every address that is not globally routable
(loopback, RFC 1918, link-local, benchmarking, tunnels to any of those, ...): a probe is an outbound
connection made on the strength of data a third party sent us, i.e. a classic SSRF vector. The
simulated cloud opens exactly one hole, IPv4 loopback, where it lives.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from vastkeep.core.errors import UnsafeTarget

COMFYUI_PORT = 8188
FALLBACK_INTERNAL_PORT = 18188

#: Candidate kinds in priority order (index = priority, lower wins).
KINDS: tuple[str, ...] = ("direct", "mapped", "fallback")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Private space, named as such in refusals: RFC 1918, RFC 6598 (carrier-grade NAT), "this network",
# IPv6 unique-local and the deprecated IPv6 site-local block.
_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "0.0.0.0/8", "fc00::/7",
              "fec0::/10")
)
# The IANA special-purpose blocks that are not globally reachable, spelled out because the standard
# library's ``is_global`` misses several of them on Python 3.11 (192.0.0.0/24, fec0::/10, ...).
# Embedded-IPv4 forms (IPv4-mapped, 6to4, Teredo, NAT64) are unwrapped before this table is consulted.
_NON_GLOBAL_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24",
              "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
              "::/8", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16")
)
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: The only internal space VASTKEEP_SIMULATED opens: the simulated cloud's instances live on 127.x.y.z.
SIMULATED_NET = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True)
class Candidate:
    """One place ComfyUI may answer: ``host`` as reported (IP or name), the port to connect to, its kind."""

    kind: str
    host: str
    port: int

    @property
    def priority(self) -> int:
        """Lower is better; the guide's order."""
        return KINDS.index(self.kind)


def _host_port(value: object) -> int | None:
    """A reported mapping → an int port, tolerating Docker's raw list shape and strings."""
    if isinstance(value, list):
        value = value[0].get("HostPort") if value and isinstance(value[0], Mapping) else None
    if isinstance(value, Mapping):
        value = value.get("HostPort")
    try:
        port = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def derive_candidates(public_ip: str | None, ports: Mapping[str, object] | None) -> list[Candidate]:
    """The candidates for one instance, in the guide's priority order, from provider data only.

    The direct candidate is offered only when the provider reports the container's ``8188/tcp`` (the
    instance was rented with 8188 published); the port is never guessed beyond that. A mapping equal to
    8188 is the direct candidate already and is not tried twice. No public IP → no candidates.
    """
    host = (public_ip or "").strip()
    if not host or not ports:
        return []
    out: list[Candidate] = []
    mapped = _host_port(ports.get(f"{COMFYUI_PORT}/tcp"))
    fallback = _host_port(ports.get(f"{FALLBACK_INTERNAL_PORT}/tcp"))
    if f"{COMFYUI_PORT}/tcp" in ports:
        out.append(Candidate("direct", host, COMFYUI_PORT))
    if mapped is not None and mapped != COMFYUI_PORT:
        out.append(Candidate("mapped", host, mapped))
    if fallback is not None and fallback not in {c.port for c in out}:
        out.append(Candidate("fallback", host, fallback))
    return out


def is_allowed_target(host: str, port: int, candidates: list[Candidate]) -> bool:
    """True only for an (address, port) pair that one of the instance's derived candidates names."""
    return any(c.host == host and c.port == port for c in candidates)


def parse_ip(host: str) -> IPAddress | None:
    """An IP literal → address (IPv4-mapped IPv6 unwrapped); a hostname → None (it needs resolving)."""
    try:
        ip = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _embedded(ip: IPAddress) -> list[tuple[IPAddress, str]]:
    """The addresses traffic to ``ip`` really reaches: ``ip`` itself, or the IPv4 inside a tunnel form.

    6to4 (2002::/16) and NAT64 (64:ff9b::/96) carry one IPv4 address; Teredo (2001::/32) carries the
    server's and the (obfuscated) client's, and both must pass. IPv4-mapped is unwrapped by the caller.
    """
    if not isinstance(ip, ipaddress.IPv6Address):
        return [(ip, "")]
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        return [(ip.sixtofour, "6to4")]
    if ip in _TEREDO and ip.teredo is not None:
        server, client = ip.teredo
        return [(server, "Teredo"), (client, "Teredo")]
    if ip in _NAT64:
        return [(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64")]
    return [(ip, "")]


def _plain_reason(ip: IPAddress) -> str | None:
    """Why one (unwrapped) address is not a globally routable unicast address, or None when it is."""
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_multicast:
        return "multicast address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address"
    if any(ip in net for net in _PRIVATE_NETS if net.version == ip.version):
        return "private address"
    if ip.is_reserved:
        return "reserved address"
    if any(ip in net for net in _NON_GLOBAL_NETS if net.version == ip.version) or not ip.is_global:
        return "not a globally routable address"
    return None


def unsafe_reason(host: str | IPAddress, *, simulated: bool = False) -> str | None:
    """Why ``host`` (an IP address or its text) must not be probed, or None when it may be.

    Only globally routable unicast addresses pass: everything ``is_global`` rejects and the IANA
    special-purpose blocks it misses, judged on the address the traffic really reaches (IPv4-mapped,
    6to4, Teredo and NAT64 forms are unwrapped, so ``2002:a9fe:a9fe::`` is the metadata service at
    169.254.169.254). ``simulated`` (VASTKEEP_SIMULATED) admits IPv4 loopback, 127.0.0.0/8, and nothing
    else: that is the whole address space the simulated cloud uses. A hostname is refused: resolve it
    first and judge the address, so the probe connects to exactly what was judged.
    """
    ip = parse_ip(host) if isinstance(host, str) else host
    if ip is None:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if simulated and ip in SIMULATED_NET:
        return None
    for inner, tunnel in _embedded(ip):
        reason = _plain_reason(inner)
        if reason is not None:
            return f"{reason} inside a {tunnel} address ({inner})" if tunnel else reason
    return None


def check_address(ip: IPAddress, *, allow_loopback: bool, instance_id: str | None = None) -> None:
    """Raise :class:`UnsafeTarget` unless ``ip`` may be probed (see :func:`unsafe_reason`)."""
    reason = unsafe_reason(ip, simulated=allow_loopback)
    if reason is not None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        hint = ("allowed only with VASTKEEP_SIMULATED" if ip in SIMULATED_NET
                else "never probed, not even with VASTKEEP_SIMULATED")
        raise UnsafeTarget(
            f"refusing to probe {ip}: {reason} ({hint})",
            address=str(ip), reason=reason, instance_id=instance_id,
        )
