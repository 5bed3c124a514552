"""Connect to the address a check passed, not to whatever DNS answers next (no rebinding between them).

An SSRF guard resolves a URL's host and judges every address; if the HTTP client then resolved the host
again to connect, a DNS answer that changed in between (rebinding) would reach an address nobody checked.
:class:`PinnedAdapter` closes that gap: each ``(host, port)`` is connected only to the address pinned for
it (by the guard, before the request or a redirect is sent), and a host without a pin is refused. Only the
TCP destination changes: the URL, the ``Host`` header, TLS SNI and certificate verification all keep the
host *name* (urllib3 connects to its ``_dns_host`` and verifies against ``host``). Proxies from the
environment are not used on a pinned session (a proxy would resolve the name itself).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.connectionpool import HTTPConnectionPool

from vastkeep.core.errors import UnsafeTarget
from vastkeep.providers.deadline import _WATCHED_POOLS, DeadlineAdapter

#: ``(host, port)`` → the IP address to connect to.
Pins = MutableMapping[tuple[str, int], str]


def pin_key(url: str) -> tuple[str, int]:
    """``(lower-case host without brackets, port with the scheme's default)`` of ``url``."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.hostname or "").lower(), int(port)


def _pinned_pool(base: type[HTTPConnectionPool], pins: Pins, default_port: int) -> type[HTTPConnectionPool]:
    class Pinned(base):  # type: ignore[valid-type,misc]
        def _new_conn(self) -> Any:
            conn = super()._new_conn()
            host = (self.host or "").strip("[]").lower()
            address = pins.get((host, int(self.port or default_port)))
            if address is None:
                raise UnsafeTarget(f"refusing to connect to {host}: no checked address is pinned for it",
                                   reason="not pinned")
            conn._dns_host = address  # the TCP destination; Host, SNI and the certificate keep the name
            return conn

    return Pinned


class PinnedAdapter(DeadlineAdapter):
    """A :class:`DeadlineAdapter` whose connections go only to pinned addresses (see the module doc)."""

    def __init__(self, pins: Pins, **kwargs: Any) -> None:
        self.pins = pins
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _pinned_pool(_WATCHED_POOLS["http"], self.pins, 80),
            "https": _pinned_pool(_WATCHED_POOLS["https"], self.pins, 443)}


def pin_session(session: requests.Session, check: Callable[[str], str]) -> Callable[[str], None]:
    """Make ``session`` connect only to checked addresses; returns the guard to call on every URL (and
    redirect target) before it is fetched: ``check(url)`` raises to refuse, or returns the address to pin."""
    pins: dict[tuple[str, int], str] = {}
    adapter = PinnedAdapter(pins)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False

    def guard(url: str) -> None:
        address = check(url)
        if not isinstance(address, str) or not address:
            raise UnsafeTarget("refusing a URL: its check named no address to connect to",
                               reason="not pinned")
        pins[pin_key(url)] = address

    return guard


__all__ = ["PinnedAdapter", "Pins", "pin_key", "pin_session"]
