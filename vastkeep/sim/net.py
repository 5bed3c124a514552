"""TCP paths into simulated instances, and the socket-level faults laid on them (no iptables needed).

Each endpoint (instance ip:port) is in one socket state:

* ``none``      nothing listens: a connect is *refused* at once (crash, stopped, ``refuse``);
* ``serve``     a listener that answers (ComfyUI HTTP or the SSH proxy);
* ``blackhole`` a listener with ``listen(0)`` whose one-slot accept queue we fill ourselves and never
                accept: Linux then drops further SYNs, so a client's connect *times out* (offline host,
                firewalled port);
* ``reset``     accept, then close with ``SO_LINGER 0``: the client gets a RST at once.

Existing connections are aborted when a path goes to ``none`` (a crashed process resets its sockets) and
are frozen (no more bytes either way) while it is black-holed (a dead route goes silent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from vastkeep.core.limits import raise_nofile_limit
from vastkeep.sim.state import Endpoint, Instance

log = logging.getLogger("vastkeep.sim")


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (10,000 listeners need it); returns it."""
    return raise_nofile_limit()[0]


#: A hung (SIGSTOPped) ComfyUI: the kernel still completes handshakes until the accept queue holds
#: backlog + 1 connections (128 + 1 with ComfyUI's defaults); after that, connects time out at TCP.
HANG_ACCEPT_QUEUE = 129


def desired_state(inst: Instance, ep: Endpoint) -> tuple[str, bool]:
    """(socket state, bytes flowing) an endpoint should be in: the one rule behind every fault."""
    if inst.fault == "offline" or ep.net_mode == "blackhole":
        return "blackhole", False
    if ep.kind == "comfy" and ep.comfy_mode == "hang" and ep.hung_conns >= HANG_ACCEPT_QUEUE:
        return "blackhole", False  # the accept queue is full: further SYNs are dropped
    if inst.actual_status != "running":
        return "none", False
    if ep.kind == "comfy" and (not inst.comfy_ready or ep.comfy_mode == "crash"):
        return "none", False
    if ep.net_mode == "refuse":
        return "none", False
    if ep.net_mode == "reset":
        return "reset", False
    return "serve", True


class _ResetProtocol(asyncio.Protocol):
    """Accept, then reset: SO_LINGER 0 makes close() send RST instead of FIN."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert isinstance(transport, asyncio.Transport)  # a stream server's transport can abort
        transport.abort()



class Abortable(Protocol):
    """An open connection a fault can cut: an asyncio transport or an SSH session."""

    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...

@dataclass
class Path:
    """The live side of one endpoint: its listener(s), open connections and the flow gate."""

    instance_id: int
    endpoint: Endpoint
    state: str = "none"
    server: asyncio.AbstractServer | None = None
    blackhole_socks: list[socket.socket] = field(default_factory=list)
    conns: set[Abortable] = field(default_factory=set)
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    awake: asyncio.Event = field(default_factory=asyncio.Event)  # cleared while ComfyUI hangs

    def frozen(self) -> bool:
        """Nothing answers on this path right now: a hang, a black hole or an offline host."""
        return not self.awake.is_set() or not self.flowing.is_set()

    def track(self, conn: Abortable) -> None:
        """Remember an open connection (a transport, an SSH session) so a crash can abort it."""
        if len(self.conns) > 64:
            self.conns = {c for c in self.conns if not c.is_closing()}
        self.conns.add(conn)

    def abort_all(self) -> None:
        for conn in list(self.conns):
            with contextlib.suppress(Exception):
                conn.abort()
        self.conns.clear()


def _bound_listener(ip: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def open_blackhole(ip: str, port: int) -> list[socket.socket]:
    """A listener whose accept queue is full and never drained: SYNs to it are dropped, connects time out."""
    listener = _bound_listener(ip, port, 0)
    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    filler.settimeout(2.0)
    try:
        filler.connect((ip, port))  # loopback: the handshake completes in the kernel at once
    except OSError:
        filler.close()
        listener.close()
        raise
    return [listener, filler]


class Network:
    """Owns every endpoint's sockets and moves each to the state :func:`desired_state` asks for."""

    def __init__(
        self,
        comfy_factory: Callable[[], asyncio.Protocol],
        ssh_handler: Callable[[Path, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> None:
        self._comfy_factory = comfy_factory
        self._ssh_handler = ssh_handler
        self.paths: dict[tuple[str, int], Path] = {}
        #: Told after every change of an instance's paths and when it is removed (ComfyUI processes follow).
        self.on_apply: Callable[[Instance], None] | None = None
        self.on_remove: Callable[[Instance], None] | None = None

    def lookup(self, sockname: tuple[str, int] | None) -> Path | None:
        if not sockname:
            return None
        return self.paths.get((sockname[0], sockname[1]))

    async def apply(self, inst: Instance, *, strict: bool = False) -> None:
        """Bring every endpoint of ``inst`` to its desired state (idempotent).

        A port held elsewhere raises ``OSError`` only when ``strict`` (creating an instance, which can pick
        another); otherwise that path stays closed and the others still change (a reset never fails half-way).
        """
        for ep in inst.endpoints.values():
            key = (ep.ip, ep.port)
            path = self.paths.get(key)
            if path is None:
                path = self.paths[key] = Path(inst.id, ep)
            state, flowing = desired_state(inst, ep)
            if state != path.state:
                try:
                    await self._switch(path, state)
                except OSError as exc:  # the port is held elsewhere: this path stays closed, the rest go on
                    if strict:
                        raise
                    log.warning("instance %s: cannot open %s:%s (%s); it stays closed until the next change",
                                inst.id, ep.ip, ep.port, exc.strerror)
            if flowing:
                path.flowing.set()
            else:
                path.flowing.clear()
            if ep.kind == "comfy" and ep.comfy_mode == "hang":
                path.awake.clear()
            else:
                ep.hung_conns = 0
                path.awake.set()
        if self.on_apply is not None:
            self.on_apply(inst)

    async def remove(self, inst: Instance) -> None:
        """Close every socket of a destroyed instance."""
        if self.on_remove is not None:
            self.on_remove(inst)
        for ep in inst.endpoints.values():
            path = self.paths.pop((ep.ip, ep.port), None)
            if path is not None:
                path.flowing.set()  # let frozen handlers run into their closed transports
                path.awake.set()
                await self._switch(path, "none")

    async def close(self) -> None:
        for path in list(self.paths.values()):
            await self._switch(path, "none")
        self.paths.clear()

    def count(self, state: str) -> int:
        return sum(1 for p in self.paths.values() if p.state == state)

    async def _switch(self, path: Path, state: str) -> None:
        ep = path.endpoint
        if path.server is not None:
            path.server.close()
            path.server = None
        for sock in path.blackhole_socks:
            sock.close()
        path.blackhole_socks = []
        if state == "none":
            path.abort_all()
        path.state = "none"
        if state == "none":
            return
        if state == "blackhole":
            path.blackhole_socks = open_blackhole(ep.ip, ep.port)
        else:
            sock = _bound_listener(ep.ip, ep.port, 128)
            loop = asyncio.get_running_loop()
            if state == "reset":
                path.server = await loop.create_server(_ResetProtocol, sock=sock)
            elif ep.kind == "comfy":
                path.server = await loop.create_server(self._comfy_factory, sock=sock)
            else:

                async def on_conn(
                    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, p: Path = path
                ) -> None:
                    await self._ssh_handler(p, reader, writer)

                path.server = await asyncio.start_server(on_conn, sock=sock)
        path.state = state
