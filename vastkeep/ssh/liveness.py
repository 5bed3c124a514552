"""Dead-peer detection for an SSH link (pure).

paramiko's ``set_keepalive`` only *sends*; nothing notices a peer that stopped answering, and a read
on a black-holed socket waits forever. So the collector keeps its own evidence of life: every byte
received and every answered probe count as a reply. Two rules, both from the guide's Layer 1:

* **keepalive**: when nothing arrived for ``interval_s`` (``SSH_KEEPALIVE_INTERVAL_MS``), a probe is
  due; when nothing arrived for ``interval_s * max_miss`` (``SSH_KEEPALIVE_MAX_MISS``), the link is dead
  and is closed and reconnected.
* **health check**: every ``HEALTH_CHECK_INTERVAL_S`` (30 s) a round trip ``echo keepalive`` must answer
  within ``HEALTH_CHECK_TIMEOUT_S`` (5 s) even while data flows; a failed one forces a reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass

HEALTH_CHECK_INTERVAL_S = 30.0
HEALTH_CHECK_TIMEOUT_S = 5.0
HEALTH_CHECK_COMMAND = 'echo "keepalive"'
HEALTH_CHECK_REPLY = b"keepalive\n"


@dataclass
class Liveness:
    """Evidence of life for one SSH session, on the monotonic clock."""

    interval_s: float
    max_miss: int
    last_reply: float
    last_probe: float
    last_health_check: float
    health_interval_s: float = HEALTH_CHECK_INTERVAL_S

    @classmethod
    def start(cls, now: float, interval_s: float, max_miss: int,
              health_interval_s: float = HEALTH_CHECK_INTERVAL_S) -> Liveness:
        """A fresh session: the handshake just answered, so it counts as a reply."""
        return cls(interval_s=float(interval_s), max_miss=max(1, int(max_miss)), last_reply=now,
                   last_probe=now, last_health_check=now, health_interval_s=float(health_interval_s))

    @property
    def dead_after_s(self) -> float:
        """Silence longer than this means the peer is gone: ``interval × max_miss``."""
        return self.interval_s * self.max_miss

    def replied(self, now: float) -> None:
        """Bytes or a probe answer arrived."""
        self.last_reply = max(self.last_reply, now)

    def probe_due(self, now: float) -> bool:
        """A keepalive probe is due: silent for an interval and none sent during it."""
        return now - self.last_reply >= self.interval_s and now - self.last_probe >= self.interval_s

    def health_check_due(self, now: float) -> bool:
        """The guide's periodic ``echo keepalive`` round trip is due (runs even while data flows)."""
        return now - self.last_health_check >= self.health_interval_s

    def probed(self, now: float, health_check: bool = False) -> None:
        """A probe was just sent (answered or not)."""
        self.last_probe = now
        if health_check:
            self.last_health_check = now

    def missed(self, now: float) -> int:
        """How many keepalive intervals passed without a reply."""
        return int(max(0.0, now - self.last_reply) // self.interval_s)

    def is_dead(self, now: float) -> bool:
        """No reply within ``interval × max_miss``: close the link and reconnect."""
        return now - self.last_reply >= self.dead_after_s

    def wait_s(self, now: float, cap_s: float = 1.0) -> float:
        """How long the next read may block: until the next probe or the death deadline, at most ``cap_s``."""
        next_event = min(self.last_reply + self.interval_s, self.last_reply + self.dead_after_s,
                         self.last_health_check + self.health_interval_s)
        return max(0.01, min(cap_s, next_event - now))
