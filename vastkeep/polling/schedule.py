"""Layer 5 scheduling: one due time per instance in a Redis sorted set, claimed atomically.

Why a sorted set and not countdown chains: a countdown message is held unacked in worker memory, so a
``kill -9`` loses it until the 1-hour visibility timeout; a due time in Redis survives any worker, and a
Redis restart with AOF keeps it. A poll is *claimed* by a Lua script (``schedule_claim.lua``) that moves
the member's score to "claimed until" (now + :data:`CLAIM_TIMEOUT_S`) and stores a claim token: another
claimer cannot take it while the claim is live (one poll in flight per instance, whatever the number of
workers or beats), and a claimer that died loses it by itself when the claim expires. Finishing
(``schedule_finish.lua``) reschedules only under the same token, so a stale finisher never overwrites a
newer claim's schedule, and a "poll now" that arrived during the poll is kept.

"Poll now" is ``ZADD ... LT`` (only ever earlier) plus a push on a wake-up list the dispatcher BLPOPs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.state import Keys, as_text
from vastkeep.state.flowmarks import RedisClient

#: A claimed poll not finished within this comes back by itself (bound of the kill -9 recovery).
CLAIM_TIMEOUT_S = 15.0
#: Wake-up list cap: one pending push is enough to wake the dispatcher.
WAKE_MAX = 16
_HERE = Path(__file__).parent
_CHUNK = 1000


class Claim(NamedTuple):
    """One claimed poll: the token that lets it finish, when it was due and when it was claimed."""

    instance_id: str
    token: str
    due: float
    claimed_at: float

    @property
    def lateness_s(self) -> float:
        return max(0.0, self.claimed_at - self.due)


def _lua(name: str) -> str:
    return (_HERE / f"schedule_{name}.lua").read_text(encoding="utf-8")


class PollSchedule:
    """The due-time set, the claims and the wake-up list of the polls."""

    def __init__(self, redis_client: RedisClient, keys: Keys | None = None, clock: Clock = SYSTEM_CLOCK,
                 *, claim_timeout_s: float = CLAIM_TIMEOUT_S) -> None:
        self.redis = redis_client
        self.keys = keys or Keys()
        self.clock = clock
        self.claim_timeout_s = claim_timeout_s
        self._claim = redis_client.register_script(_lua("claim"))
        self._finish = redis_client.register_script(_lua("finish"))

    # ── scheduling ───────────────────────────────────────────────────────────
    def ensure(self, instance_ids: Iterable[str], due: float | None = None) -> int:
        """Schedule every id that has no due time yet (ZADD NX); returns how many were added."""
        at = self.clock.now() if due is None else due
        ids = [str(i) for i in instance_ids]
        added = 0
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            if chunk:
                added += int(self.redis.zadd(self.keys.poll_due(), dict.fromkeys(chunk, at), nx=True))
        return added

    def poll_now(self, instance_id: str, at: float | None = None) -> None:
        """Make the instance due now (never later than it already was) and wake the dispatcher."""
        when = self.clock.now() if at is None else at
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.poll_due(), {str(instance_id): when}, lt=True)
            pipe.rpush(self.keys.poll_wake(), str(instance_id))
            pipe.ltrim(self.keys.poll_wake(), -WAKE_MAX, -1)
            pipe.execute()

    def remove(self, instance_id: str) -> None:
        """Stop polling the instance (forget, destroyed)."""
        iid = str(instance_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.poll_due(), iid)
            pipe.hdel(self.keys.poll_claims(), iid)
            pipe.hdel(self.keys.poll_last(), iid)
            pipe.hdel(self.keys.poll_counts(), iid)
            pipe.srem(self.keys.poll_active(), iid)
            pipe.execute()

    # ── claims ───────────────────────────────────────────────────────────────
    def claim_due(self, limit: int) -> list[Claim]:
        """Claim up to ``limit`` due polls not already in flight (earliest due first)."""
        now = self.clock.now()
        reply = self._claim(keys=[self.keys.poll_due(), self.keys.poll_claims(), self.keys.poll_claim_seq()],
                            args=[repr(now), int(limit), repr(now + self.claim_timeout_s)])
        items = [as_text(x) for x in reply]
        return [Claim(items[k], items[k + 1], float(items[k + 2]), now) for k in range(0, len(items), 3)]

    def finish(self, done: Iterable[tuple[str, str, float]]) -> int:
        """Reschedule finished polls ``(id, token, next due)``; returns how many claims were stale."""
        args: list[str] = [repr(self.clock.now())]
        for iid, token, due in done:
            args += [str(iid), str(token), repr(float(due))]
        if len(args) == 1:
            return 0
        return int(self._finish(keys=[self.keys.poll_due(), self.keys.poll_claims(), self.keys.poll_last()],
                                args=args))

    # ── reading ──────────────────────────────────────────────────────────────
    def next_due(self) -> float | None:
        """The earliest due time (a claimed member counts at its claim's expiry), None when empty."""
        first = self.redis.zrange(self.keys.poll_due(), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def due_times(self, instance_ids: list[str]) -> dict[str, float]:
        """id → due time (only ids that are scheduled)."""
        if not instance_ids:
            return {}
        scores: list[float | None] = self.redis.zmscore(  # type: ignore[no-untyped-call]  # unannotated in types-redis
            self.keys.poll_due(), [str(i) for i in instance_ids])
        return {str(i): float(s) for i, s in zip(instance_ids, scores, strict=True) if s is not None}

    def last_polls(self, instance_ids: list[str]) -> dict[str, float]:
        """id → time of its last finished poll."""
        if not instance_ids:
            return {}
        values = self.redis.hmget(self.keys.poll_last(), [str(i) for i in instance_ids])
        return {str(i): float(as_text(v)) for i, v in zip(instance_ids, values, strict=True) if v is not None}

    def poll_times(self, instance_ids: list[str]) -> dict[str, tuple[float | None, float | None]]:
        """id → (last finished poll, next due): what the status view shows, in two round trips."""
        last, due = self.last_polls(instance_ids), self.due_times(instance_ids)
        return {str(i): (last.get(str(i)), due.get(str(i))) for i in instance_ids}

    def scheduled_count(self) -> int:
        return int(self.redis.zcard(self.keys.poll_due()))

    def in_flight(self) -> int:
        """Claims stored right now (live or expired and not yet re-claimed)."""
        return int(self.redis.hlen(self.keys.poll_claims()))

    # ── waking ───────────────────────────────────────────────────────────────
    def wait(self, timeout_s: float) -> bool:
        """Block until a "poll now" push or ``timeout_s``; True when woken. Drains the wake-up list."""
        if timeout_s <= 0:
            return False
        got = self.redis.blpop([self.keys.poll_wake()], timeout=max(0.01, timeout_s))
        if got is not None:
            self.redis.delete(self.keys.poll_wake())
            return True
        return False


__all__ = ["CLAIM_TIMEOUT_S", "Claim", "PollSchedule"]
