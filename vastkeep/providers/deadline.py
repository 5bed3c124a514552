"""Whole-call deadlines for blocking HTTP calls: one watchdog thread shuts a call's socket at its deadline.

requests' ``timeout`` bounds each socket operation, not a call: a server that accepts and then sends
its status line and headers one byte at a time (or a body, see ``http.read_body``) never trips a read
timeout and holds the caller, and its worker thread, for as long as it likes. Here a call runs inside
:func:`call_deadline`; the connections of sessions that carry a :class:`DeadlineAdapter` (every
session from ``http.make_session``) attach their socket to the current call as soon as TCP connects
(before any TLS handshake) and when they wait for a response, and one process-wide watchdog thread
``shutdown()``s those sockets when the deadline passes. The blocked read returns at once, requests
raises, and the caller sees ``call.expired`` and reports "deadline exceeded". No thread per call,
nothing left running after it.

The watchdog shuts down (never closes) a duplicate descriptor of the socket that the call owns, so the
reading thread keeps and closes its own descriptor as usual; a duplicate made right after TCP connects
also wakes a TLS handshake that stalls (the TLS layer replaces the socket object it was given). A
finished call closes its duplicates, so a keep-alive connection back in the pool is never touched by a
deadline that is no longer its own.

Deadlines here are real time (``SYSTEM_CLOCK.monotonic()``), because sockets wait in real time. What
this cannot interrupt: DNS resolution (``getaddrinfo``) and the TCP connect itself, which callers bound
with a connect timeout no longer than the budget.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
from collections.abc import Iterator
from typing import Protocol

import urllib3.poolmanager
from requests import Session
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager
from urllib3.response import HTTPResponse

from vastkeep.core.clock import SYSTEM_CLOCK

_RUNNING, _EXPIRED, _DONE = "running", "expired", "done"


def _shut(sock: socket.socket) -> None:
    """Wake any thread blocked on the socket ``sock`` duplicates (its reads return EOF)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _HasFileno(Protocol):
    """A socket, plain or TLS."""

    def fileno(self) -> int: ...


class CallDeadline:
    """One call's deadline (real monotonic seconds) and the sockets it has used so far.

    It holds its own duplicate descriptor of each socket, shut at the deadline and closed when the call
    ends, both under one lock: the watchdog never touches a descriptor the connection owns, so a
    descriptor number closed and reused elsewhere can never be shut by mistake.
    """

    def __init__(self, budget_s: float) -> None:
        self.budget_s = float(budget_s)
        self.due = SYSTEM_CLOCK.monotonic() + self.budget_s
        self._lock = threading.Lock()
        self._state = _RUNNING
        self._dups: list[socket.socket] = []
        self._watched: set[int] = set()  # id() of the connection sockets already duplicated

    @property
    def expired(self) -> bool:
        """True once the watchdog has ended this call (its sockets are shut)."""
        return self._state == _EXPIRED

    @property
    def finished(self) -> bool:
        return self._state != _RUNNING

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.due - SYSTEM_CLOCK.monotonic())

    def attach(self, sock: _HasFileno | None) -> None:
        """Put the socket ``sock`` (plain or TLS) under this deadline; shut at once if it has passed."""
        if sock is None or id(sock) in self._watched:
            return
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except (OSError, ValueError):
            return  # already closed: nothing left to wake
        with self._lock:
            self._watched.add(id(sock))
            if self._state == _RUNNING:
                self._dups.append(dup)
                return
            if self._state == _EXPIRED:
                _shut(dup)
            dup.close()

    def expire(self) -> None:
        """The deadline passed: shut every socket of a call still running."""
        with self._lock:
            if self._state != _RUNNING:
                return
            self._state = _EXPIRED
            for dup in self._dups:
                _shut(dup)

    def finish(self) -> None:
        """The call is over: its sockets (maybe back in a pool) are no longer this deadline's business."""
        with self._lock:
            if self._state == _RUNNING:
                self._state = _DONE
            dups, self._dups = self._dups, []
            for dup in dups:
                dup.close()  # only our duplicate descriptor: the connection itself lives on


class _Watchdog:
    """One daemon thread per process, sleeping until the earliest deadline of the calls it watches."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, CallDeadline]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, call: CallDeadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (call.due, next(self._seq), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vastkeep-http-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].finished:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait_s = self._heap[0][0] - SYSTEM_CLOCK.monotonic()
                if wait_s > 0:
                    self._cond.wait(wait_s)
                    continue
                _, _, call = heapq.heappop(self._heap)
            call.expire()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread


_watchdog_lock = threading.Lock()
_watchdog_instance: _Watchdog | None = None
_current = threading.local()


def _watchdog() -> _Watchdog:
    global _watchdog_instance
    with _watchdog_lock:
        if _watchdog_instance is None:
            _watchdog_instance = _Watchdog()
        return _watchdog_instance


def watchdog_thread() -> threading.Thread | None:
    """The process's watchdog thread, once started (for tests and diagnostics)."""
    return _watchdog_instance.thread if _watchdog_instance is not None else None


def _forget_after_fork() -> None:
    """A forked child (Celery prefork) inherits neither the thread nor a usable lock: start afresh."""
    global _watchdog_instance, _watchdog_lock
    _watchdog_instance, _watchdog_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


@contextlib.contextmanager
def call_deadline(budget_s: float) -> Iterator[CallDeadline]:
    """Run the block as one call that ends ``budget_s`` seconds from now, headers and body included.

    Requests made in the block through a :class:`DeadlineAdapter` session have their sockets shut at
    the deadline; check ``call.expired`` when one fails to tell a missed deadline from a broken peer.
    """
    call = CallDeadline(budget_s)
    previous = getattr(_current, "call", None)
    _current.call = call
    _watchdog().watch(call)
    try:
        yield call
    finally:
        _current.call = previous
        call.finish()


def _attach_current(sock: _HasFileno | None) -> None:
    call = getattr(_current, "call", None)
    if call is not None:
        call.attach(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:  # TCP connected; a TLS handshake (if any) comes next
        sock = super()._new_conn()
        _attach_current(sock)
        return sock

    # a reused keep-alive connection did not connect in this call; urllib3 narrows the return type too
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        _attach_current(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _attach_current(sock)
        return sock

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 itself narrows it
        _attach_current(self.sock)
        return super().getresponse()


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections put their sockets under the current :func:`call_deadline`."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: object) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: object) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        assert isinstance(manager, PoolManager)  # ProxyManager, or SOCKSProxyManager
        # an HTTP(S) proxy uses the default pools; a SOCKS manager keeps its own connection classes
        if getattr(manager, "pool_classes_by_scheme", None) is urllib3.poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def watch_session(session: Session) -> Session:
    """Mount :class:`DeadlineAdapter` for http:// and https:// unless the session already has it."""
    for prefix in ("http://", "https://"):
        if not isinstance(session.adapters.get(prefix), DeadlineAdapter):
            session.mount(prefix, DeadlineAdapter())
    return session
