"""Whole-call deadlines for blocking HTTP calls: one watchdog thread shuts a call's socket at its deadline.

requests' ``timeout`` bounds each socket operation, not a call: a server that accepts and then sends
its status line and headers one byte at a time (or a body, see ``http.read_body``) never trips a read
timeout and holds the caller, and its worker thread, for as long as it likes. Here a call runs inside
:func:`call_deadline`; the connections of sessions that carry a :class:`DeadlineAdapter` (every
session from ``http.make_session``) attach their socket to the current call when they connect and
when they wait for a response, and one process-wide watchdog thread ``shutdown()``s those sockets when
the deadline passes. The blocked read returns at once, requests raises, and the caller sees
``call.expired`` and reports "deadline exceeded". No thread per call, nothing left running after it.

``shutdown()`` (not ``close()``) is safe from another thread: the file descriptor stays owned by the
reading thread, which closes it as usual. A finished call detaches its sockets, so a keep-alive
connection back in the pool is never touched by a deadline that is no longer its own.

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
from typing import Any

import urllib3.poolmanager
from requests import Session
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from vastkeep.core.clock import SYSTEM_CLOCK

_RUNNING, _EXPIRED, _DONE = "running", "expired", "done"


def _shut(sock: Any) -> None:
    """Wake any thread blocked on ``sock`` (reads return EOF); the owner still closes it."""
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            # socket.socket's own method, also for an SSLSocket: no TLS close_notify from this thread
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class CallDeadline:
    """One call's deadline (real monotonic seconds) and the sockets it has used so far."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = float(budget_s)
        self.due = SYSTEM_CLOCK.monotonic() + self.budget_s
        self._lock = threading.Lock()
        self._state = _RUNNING
        self._socks: list[Any] = []

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

    def attach(self, sock: Any) -> None:
        """Put ``sock`` under this deadline (shut at once if it has passed already)."""
        if sock is None:
            return
        with self._lock:
            if self._state == _RUNNING:
                if all(s is not sock for s in self._socks):
                    self._socks.append(sock)
                return
            expired = self._state == _EXPIRED
        if expired:
            _shut(sock)

    def expire(self) -> None:
        """The deadline passed: shut every socket of a call still running."""
        with self._lock:
            if self._state != _RUNNING:
                return
            self._state = _EXPIRED
            socks, self._socks = self._socks, []
        for sock in socks:
            _shut(sock)

    def finish(self) -> None:
        """The call is over: its sockets (maybe back in a pool) are no longer this deadline's business."""
        with self._lock:
            if self._state == _RUNNING:
                self._state = _DONE
            self._socks = []


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


def _attach_current(sock: Any) -> None:
    call = getattr(_current, "call", None)
    if call is not None:
        call.attach(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _attach_current(self.sock)

    def getresponse(self) -> Any:  # a reused keep-alive connection did not connect() in this call
        _attach_current(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _attach_current(self.sock)

    def getresponse(self) -> Any:
        _attach_current(self.sock)
        return super().getresponse()


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections put their sockets under the current :func:`call_deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
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
