"""The soak's second worker host: a control and a keepalive worker that reach Redis over a link the soak cuts.

Users run several worker hosts on one Redis, and the failures that hurt most are between machines. In the
soak, host B is two more children of the stack's supervisor (``hostb-control``, ``hostb-keepalive``: the same
``celery -A worker worker`` command lines as ``vastkeep up``'s, node names ``control-b@…``/``keepalive-b@…``),
whose ``REDIS_URL`` points at a :class:`Relay` in the soak's own process instead of at Redis. The relay
forwards bytes both ways; :meth:`Relay.cut` stops moving them in either direction while every connection stays
open, and new connections are accepted but never served: what a host sees behind a dead switch (no RST, no
"unreachable", reads time out). :meth:`Relay.restore` moves the held bytes again, so whatever host B sent in
the dark reaches Redis afterwards, as TCP retransmission delivers it after a partition heals: its stale
writes, which the fences must refuse.

Why a relay and not a network namespace (``tests/fixtures/hosts.py`` uses one in the scenario tests): host B
must still reach the simulated cloud, and every ComfyUI, SSH and API endpoint of it listens on loopback in
the root namespace; only the Redis link is cut, which is the partition the issue names.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

HOSTB_CHILDREN = ("hostb-control", "hostb-keepalive")
_CHUNK = 65536


class Relay:
    """A TCP relay from ``127.0.0.1:<port>`` to ``target``, in one thread, that can be cut and restored."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak-hostb-relay")
        self.held_connections = 0  # connections accepted while cut (served once restored)

    def start(self) -> Relay:
        self._thread.start()
        return self

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        """Stop moving bytes in both directions; connections stay open (a black hole, not a refusal)."""
        self._cut.set()

    def restore(self) -> None:
        self._cut.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for s in list(self._pairs):
                with contextlib.suppress(OSError):
                    s.close()
            self._pairs.clear()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        if self._cut.is_set():
            self.held_connections += 1
        for s in (client, upstream):
            s.setblocking(False)
        with self._lock:
            self._pairs[client], self._pairs[upstream] = upstream, client
        self._sel.register(client, selectors.EVENT_READ, None)
        self._sel.register(upstream, selectors.EVENT_READ, None)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            peer = self._pairs.pop(s, None)
            if peer is not None:
                self._pairs.pop(peer, None)
        for x in (s, peer):
            if x is None:
                continue
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(x)
            with contextlib.suppress(OSError):
                x.close()

    def _pump(self, s: socket.socket) -> None:
        peer = self._pairs.get(s)
        if peer is None:
            return
        try:
            data = s.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(s)
            return
        try:
            peer.setblocking(True)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._close(s)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._cut.is_set():  # move nothing: bytes wait in the kernel's buffers, windows fill
                self._stop.wait(0.05)
                continue
            for key, _ in self._sel.select(timeout=0.1):
                sock = key.fileobj
                if not isinstance(sock, socket.socket):
                    continue
                if sock is self._listener:
                    self._accept()
                else:
                    self._pump(sock)


def relayed_url(redis_url: str, port: int) -> str:
    """``redis_url`` with its host and port replaced by the relay's (the password and db kept)."""
    parts = urlsplit(redis_url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redis_target(redis_url: str) -> tuple[str, int]:
    parts = urlsplit(redis_url)
    return parts.hostname or "127.0.0.1", int(parts.port or 6379)


__all__ = ["HOSTB_CHILDREN", "Relay", "redis_target", "relayed_url"]
