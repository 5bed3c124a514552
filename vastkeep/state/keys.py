"""Every Redis key vastkeep uses, and their TTLs: the one place key strings are built.

Keeping them together (arq's ``constants.py``) means a prefix change, a key listing for operators
and a collision check are one file away, and no module invents ``f"...:{id}"`` on its own.
"""

from __future__ import annotations

import re

# ── TTLs and sizes (units in the names) ──────────────────────────────────────
TOKEN_RESULT_TTL_MS = 300_000  # default; callers pass Settings.token_validation_cache_ms
LEASE_DEFAULT_TTL_MS = 30_000  # a lease nobody renews for this long is free again
EVENTS_MAXLEN = 10_000  # approximate cap of the event stream (XADD MAXLEN ~)
KEEPALIVE_STATUS_TTL_MS = 86_400_000  # keepalive status of an instance that stopped being watched
HEARTBEAT_TTL_MS = 120_000  # a process heartbeat older than this counts as gone
POOL_LAST_ROUND_TTL_MS = 3_600_000  # the last reconcile round's summary (status: why the pool waits)

_PART_RE = re.compile(r"^[A-Za-z0-9_.:@/+=-]{1,200}$")


def _part(kind: str, value: object) -> str:
    """One key component, refused when empty or containing spaces/glob characters (no key injection)."""
    text = str(value)
    if not _PART_RE.match(text):
        raise ValueError(f"invalid {kind} for a Redis key: {text[:40]!r}")
    return text


class Keys:
    """Builds the keys under one prefix (``vastkeep:`` by default; tests and tenants may pick another)."""

    def __init__(self, prefix: str = "vastkeep") -> None:
        self.prefix = _part("prefix", prefix).rstrip(":")

    def __repr__(self) -> str:
        return f"Keys(prefix={self.prefix!r})"

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ── instances ───────────────────────────────────────────────────────────
    def instance(self, instance_id: str | int) -> str:
        """JSON record of one instance."""
        return self._k("instance", _part("instance id", instance_id))

    def instances(self) -> str:
        """Set of the instance ids that have a record."""
        return self._k("instances")

    # ── pool ────────────────────────────────────────────────────────────────
    def pool(self) -> str:
        """Hash: desired_size, safe_mode, safe_mode_reason."""
        return self._k("pool")

    def pool_pending(self, pool: str) -> str:
        """Hash slot → JSON pending rent of one warm pool (written before the rent request is sent)."""
        return self._k("pool", "pending", _part("pool name", pool))

    def pool_failures(self, pool: str) -> str:
        """Sorted set: rent/provision failures of one warm pool scored by time (the safe-mode window)."""
        return self._k("pool", "failures", _part("pool name", pool))

    def pool_leases(self, pool: str) -> str:
        """Hash instance id → JSON client lease (lease id, client, until, fence, state) of one warm pool."""
        return self._k("pool", "leases", _part("pool name", pool))

    def pool_lease_index(self, pool: str) -> str:
        """Hash lease id → instance id of the live client leases of one warm pool."""
        return self._k("pool", "lease-index", _part("pool name", pool))

    def pool_lease_fence(self, pool: str) -> str:
        """Counter: the fence of every client lease grant of one warm pool (INCR, never expires)."""
        return self._k("pool", "lease-fence", _part("pool name", pool))

    def pool_claims(self, pool: str) -> str:
        """Hash instance id → reason: instances claimed for destruction (never leased again)."""
        return self._k("pool", "claims", _part("pool name", pool))

    def pool_last_round(self, pool: str) -> str:
        """JSON summary of the last reconcile round of one pool (why it waits); TTL POOL_LAST_ROUND_TTL_MS."""
        return self._k("pool", "last-round", _part("pool name", pool))

    def pool_safety(self) -> str:
        """Hash: why safe mode is on (cause: operator|token|failures|spend, since)."""
        return self._k("pool", "safety")

    # ── tokens ──────────────────────────────────────────────────────────────
    def token_result(self, service: str) -> str:
        """JSON validation result of one service (PX TTL = TOKEN_VALIDATION_CACHE_MS)."""
        return self._k("tokens", _part("service", service))

    def runtime_secret(self, service: str) -> str:
        """The runtime token override set by update-token (no TTL; protect Redis)."""
        return self._k("secret", _part("service", service))

    # ── leases ──────────────────────────────────────────────────────────────
    def lease(self, name: str) -> str:
        """Hash {owner, fence, ttl_ms, acquired_at} with a PX TTL."""
        return self._k("lease", _part("lease name", name))

    def fence(self, name: str) -> str:
        """Monotonic fencing counter of a lease name (INCR, never expires)."""
        return self._k("fence", _part("lease name", name))

    def lease_pattern(self) -> str:
        """SCAN pattern matching every lease key."""
        return self._k("lease", "*")

    # ── events ──────────────────────────────────────────────────────────────
    def events(self) -> str:
        """The event stream (XADD MAXLEN ~ EVENTS_MAXLEN)."""
        return self._k("events")

    # ── per-concern status (reserved for the layers that own them) ─────────
    def keepalive(self, instance_id: str | int) -> str:
        """Hash: ComfyUI keepalive counters of one instance (TTL KEEPALIVE_STATUS_TTL_MS)."""
        return self._k("keepalive", _part("instance id", instance_id))

    def poll_state(self, instance_id: str | int) -> str:
        """Adaptive polling state of one instance."""
        return self._k("poll", _part("instance id", instance_id))

    def collector(self, instance_id: str | int) -> str:
        """SSH log collector status of one instance."""
        return self._k("collector", _part("instance id", instance_id))

    def heartbeat(self, process: str) -> str:
        """Liveness timestamp of one process (worker, beat, admin), TTL HEARTBEAT_TTL_MS."""
        return self._k("heartbeat", _part("process name", process))

    def heartbeat_pattern(self) -> str:
        """SCAN pattern matching every process heartbeat key."""
        return self._k("heartbeat", "*")

    def all_patterns(self) -> list[str]:
        """Patterns covering every key this prefix owns (for operators and test clean-up)."""
        return [self._k("*")]


__all__ = ["EVENTS_MAXLEN", "HEARTBEAT_TTL_MS", "KEEPALIVE_STATUS_TTL_MS", "LEASE_DEFAULT_TTL_MS",
           "POOL_LAST_ROUND_TTL_MS", "TOKEN_RESULT_TTL_MS", "Keys"]
