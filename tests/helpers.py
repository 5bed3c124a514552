"""Small helpers shared by tests: a free loopback port, and polling with a deadline instead of sleeping."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout_s: float = 5.0, what: str = "condition",
               interval_s: float = 0.005) -> None:
    """Poll ``predicate`` until it is truthy; fail the test at the deadline (real time, on purpose)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(interval_s)
