"""The warm pool's own bookkeeping in Redis: rents in flight, recent failures, why safe mode is on.

- Pending rents (``Keys.pool_pending``): written *before* a rent request is sent, fenced by the reconciler's
  lease (``book_put.lua``), and dropped only once the rent is resolved: answered, or looked up by its label.
  They are what makes "never pay twice" survive a worker killed mid-request.
- Failures (``Keys.pool_failures``): a sorted set scored by time, one member per failure *identity* (a
  redelivered task counting the same failure again changes nothing), trimmed to the safe-mode window.
- Safety (``Keys.pool_safety``): the cause of the current safe mode (operator, token, failures, spend), so
  an automatic one can be left automatically and an operator's never is. The on/off flag and the reason
  shown in status stay in the pool hash (``StateStore.set_safe_mode``).
"""

from __future__ import annotations

import json
from pathlib import Path

from vastkeep.pool.plan import PendingRent
from vastkeep.state import Keys, Lease, as_text
from vastkeep.state.flowmarks import RedisClient
from vastkeep.state.keys import POOL_LAST_ROUND_TTL_MS

#: A rerun asked for long ago is moot: the beat has run rounds since.
POOL_RERUN_TTL_MS = 60_000

_HERE = Path(__file__).parent
CAUSE_OPERATOR = "operator"
CAUSE_TOKEN = "token"
CAUSE_FAILURES = "failures"
CAUSE_SPEND = "spend"
CAUSES = (CAUSE_OPERATOR, CAUSE_TOKEN, CAUSE_FAILURES, CAUSE_SPEND)


def _dumps(pending: PendingRent) -> str:
    return json.dumps(pending.to_dict(), sort_keys=True, separators=(",", ":"))


class PoolBook:
    """Pending rents, failures and the safe-mode cause of one pool."""

    def __init__(self, redis_client: RedisClient, keys: Keys, pool: str) -> None:
        self.redis = redis_client
        self.keys = keys
        self.pool = pool
        self._put = redis_client.register_script((_HERE / "book_put.lua").read_text(encoding="utf-8"))
        self._drop = redis_client.register_script((_HERE / "book_drop.lua").read_text(encoding="utf-8"))

    # ── pending rents ───────────────────────────────────────────────────────
    def pending(self) -> list[PendingRent]:
        """Every rent in flight, by slot (unreadable entries are skipped: they never block a slot forever)."""
        out = []
        for _slot, raw in self.redis.hgetall(self.keys.pool_pending(self.pool)).items():
            try:
                out.append(PendingRent.from_dict(json.loads(as_text(raw))))
            except (ValueError, KeyError, TypeError):
                continue
        return sorted(out, key=lambda p: p.slot)

    def add_pending(self, pending: PendingRent, lease: Lease) -> int:
        """1 recorded, 0 the slot already has a rent in flight, -1 the lease no longer backs us."""
        return int(self._put(keys=[self.keys.pool_pending(self.pool), self.keys.lease(lease.name)],
                             args=[lease.owner, lease.fence, pending.slot, _dumps(pending)]))

    def replace_pending(self, old: PendingRent, new: PendingRent) -> bool:
        """Swap one pending entry for an updated one (e.g. its state became "unknown")."""
        key = self.keys.pool_pending(self.pool)
        if int(self._drop(keys=[key], args=[old.slot, _dumps(old)])) != 1:
            return False
        self.redis.hset(key, str(new.slot), _dumps(new))
        return True

    def drop_pending(self, pending: PendingRent) -> bool:
        """Forget a resolved rent (only if the entry is still the one resolved)."""
        return int(self._drop(keys=[self.keys.pool_pending(self.pool)],
                              args=[pending.slot, _dumps(pending)])) == 1

    # ── failures ────────────────────────────────────────────────────────────
    def add_failure(self, identity: str, now: float) -> None:
        """Count one rent/provision failure (idempotent per ``identity``)."""
        self.redis.zadd(self.keys.pool_failures(self.pool), {identity: now}, nx=True)

    def failures(self, now: float, window_s: float) -> int:
        """Failures within the window (older ones are trimmed on the way)."""
        key = self.keys.pool_failures(self.pool)
        self.redis.zremrangebyscore(key, "-inf", f"({now - window_s}")
        return int(self.redis.zcard(key))

    def clear_failures(self) -> None:
        self.redis.delete(self.keys.pool_failures(self.pool))

    # ── the last round (status) ─────────────────────────────────────────────
    def put_last_round(self, summary: dict[str, object]) -> None:
        self.redis.set(self.keys.pool_last_round(self.pool), json.dumps(summary, separators=(",", ":")),
                       px=POOL_LAST_ROUND_TTL_MS)

    def last_round(self) -> dict[str, object] | None:
        raw = self.redis.get(self.keys.pool_last_round(self.pool))
        try:
            return json.loads(as_text(raw)) if raw is not None else None
        except ValueError:
            return None

    # ── wake-ups while a round runs ─────────────────────────────────────────
    def request_rerun(self) -> None:
        """A wake-up found a round running: ask it to go once more (it may have listed before the event)."""
        self.redis.set(self.keys.pool_rerun(self.pool), "1", px=POOL_RERUN_TTL_MS)

    def take_rerun(self) -> bool:
        """True (once) when a rerun was asked for."""
        return bool(self.redis.delete(self.keys.pool_rerun(self.pool)))

    # ── safe-mode cause ─────────────────────────────────────────────────────
    def cause(self) -> str | None:
        raw = self.redis.hget(self.keys.pool_safety(), "cause")
        return None if raw is None else str(as_text(raw))

    def set_cause(self, cause: str | None, now: float) -> None:
        if cause is None:
            self.redis.delete(self.keys.pool_safety())
        else:
            self.redis.hset(self.keys.pool_safety(), mapping={"cause": cause, "since": repr(now)})

    def since(self) -> float | None:
        raw = as_text(self.redis.hget(self.keys.pool_safety(), "since"))
        return float(raw) if raw else None


__all__ = ["CAUSES", "CAUSE_FAILURES", "CAUSE_OPERATOR", "CAUSE_SPEND", "CAUSE_TOKEN", "PoolBook"]
