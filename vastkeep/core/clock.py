"""The one clock.

Every module takes a :class:`Clock` instead of calling ``time`` directly, so tests can
run hours of backoff, TTLs and polling in microseconds with :class:`FakeClock`
(the idea of huey's injectable ``now`` and rq's single ``now()``).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall time for records, monotonic time for deadlines, and a sleep that tests can skip."""

    def now(self) -> float:
        """Seconds since the epoch (wall clock): what is stored and shown."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: what deadlines are measured on."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` (a fake clock advances instead)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock for tests: ``sleep`` advances time instead of waiting."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)
        self._mono = 1000.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock never goes back")
        with self._lock:
            self._now += seconds
            self._mono += seconds


SYSTEM_CLOCK: Clock = SystemClock()


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO-8601 UTC with milliseconds, as the guide's status fields show them."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_iso(text: object) -> float | None:
    """ISO-8601 (``Z`` or an offset) → epoch seconds, the inverse of :func:`iso`; None when absent or
    unreadable (a stored time is never trusted to parse)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
