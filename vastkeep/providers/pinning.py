"""Connect to the address a check passed, not to whatever DNS answers next (no rebinding between them).

An SSRF guard resolves a URL's host and judges every address; if the HTTP client then resolved the host
again to connect, a DNS answer that changed in between (rebinding) would reach an address nobody checked.
:class:`PinnedAdapter` closes that gap: each ``(host, port)`` is connected only to the address pinned for
it (by the guard, before the request or a redirect is sent), and a host without a pin is refused. Only the
TCP destination changes: the URL, the ``Host`` header, TLS SNI and certificate verification all keep the
host *name* (only urllib3's TCP connect, which dials ``_dns_host``, sees the pinned address). Proxies from the
environment are not used on a pinned session (a proxy would resolve the name itself).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from vastkeep.core.errors import UnsafeTarget
from vastkeep.providers.deadline import (
    _WATCHED_POOLS,
    DeadlineAdapter,
    _WatchedHTTPConnection,
    _WatchedHTTPSConnection,
)
from vastkeep.providers.http import FailureReason

#: ``(host, port)`` → the IP address to connect to.
Pins = MutableMapping[tuple[str, int], str]


def pin_key(url: str) -> tuple[str, int]:
    """``(lower-case host without brackets, port with the scheme's default)`` of ``url``."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.hostname or "").lower(), int(port)


def _connect_pinned(conn: HTTPConnection, pinned_address: str | None,
                    connect: Callable[[], socket.socket]) -> socket.socket:
    """``connect()`` with urllib3's TCP destination (``_dns_host``) set to ``pinned_address`` for the
    duration: the ``Host`` header, SNI and certificate checks keep using the host name."""
    if not pinned_address:
        raise UnsafeTarget("refusing to connect: no checked address is pinned for this host",
                           reason=FailureReason.NOT_PINNED)
    name = conn._dns_host
    conn._dns_host = pinned_address  # what urllib3 hands to create_connection
    try:
        return connect()
    finally:
        conn._dns_host = name


class _PinnedHTTPConnection(_WatchedHTTPConnection):
    pinned_address: str | None = None

    def _new_conn(self) -> socket.socket:
        return _connect_pinned(self, self.pinned_address, super()._new_conn)


class _PinnedHTTPSConnection(_WatchedHTTPSConnection):
    pinned_address: str | None = None

    def _new_conn(self) -> socket.socket:
        return _connect_pinned(self, self.pinned_address, super()._new_conn)


def _pinned_pool(base: type[HTTPConnectionPool], conn: type[_PinnedHTTPConnection | _PinnedHTTPSConnection],
                 pins: Pins, default_port: int) -> type[HTTPConnectionPool]:
    """A pool class of ``base`` whose new connections carry the address pinned for the pool's host."""
    if TYPE_CHECKING:  # the checker sees the common base; at run time the class extends ``base`` itself
        class _Base(HTTPConnectionPool): ...
    else:
        _Base = base

    class Pinned(_Base):
        ConnectionCls = conn

        def _new_conn(self) -> _PinnedHTTPConnection | _PinnedHTTPSConnection:
            made = super()._new_conn()
            assert isinstance(made, _PinnedHTTPConnection | _PinnedHTTPSConnection)
            host = (self.host or "").strip("[]").lower()
            made.pinned_address = pins.get((host, int(self.port or default_port)))
            return made

    return Pinned


class PinnedAdapter(DeadlineAdapter):
    """A :class:`DeadlineAdapter` whose connections go only to pinned addresses (see the module doc)."""

    def __init__(self, pins: Pins) -> None:
        self.pins = pins
        super().__init__()

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: object) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _pinned_pool(_WATCHED_POOLS["http"], _PinnedHTTPConnection, self.pins, 80),
            "https": _pinned_pool(_WATCHED_POOLS["https"], _PinnedHTTPSConnection, self.pins, 443)}


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
                               reason=FailureReason.NOT_PINNED)
        pins[pin_key(url)] = address

    return guard


__all__ = ["PinnedAdapter", "Pins", "pin_key", "pin_session"]
