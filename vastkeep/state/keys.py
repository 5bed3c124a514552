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
RATE_SLOT_GRACE_MS = 1_000  # a rate-limit slot key outlives its next-allowed time by this much
RATE_GAP_LEARNED_TTL_MS = 3_600_000  # a threshold learned from a 429 holds for an hour, then is relearned
POOL_LAST_ROUND_TTL_MS = 3_600_000  # the last reconcile round's summary (status: why the pool waits)
POOL_LEASE_REQUEST_TTL_MS = 600_000  # a lease call's first answer, replayed to its re-sends and retries
POOL_LEASE_CHECK_QUEUED_TTL_MS = 10_000  # a post-lease health check was queued; re-queued after this
WATCHDOG_PROCESSES_TTL_MS = 60_000  # `vastkeep up`'s published watchdog status counts as gone after this

_ENDPOINT_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_./-]")
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

    def instance_key_prefix(self) -> str:
        """What every ``instance(id)`` key starts with (for the store's recount script)."""
        return self._k("instance", "")

    def instance_status_counts(self) -> str:
        """Hash: status → number of instance records, kept by the store's compare-and-set script, so
        ``/metrics`` counts instances with one HGETALL instead of reading every record."""
        return self._k("instances", "by-status")

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

    def pool_lease_request(self, pool: str, op: str, request_id: str) -> str:
        """JSON: the first answer of one grant / renew / release call (PX POOL_LEASE_REQUEST_TTL_MS), so a
        re-sent script or a retried task gets that answer instead of acting twice."""
        return self._k("pool", "lease-req", _part("pool name", pool), _part("lease op", op),
                       _part("request id", request_id))

    def pool_lease_check(self, pool: str, instance_id: str | int, fence: int) -> str:
        """Marker (PX POOL_LEASE_CHECK_QUEUED_TTL_MS): the health check after the lease with this fence ended
        is queued (one per ended lease: the next lease's end queues its own)."""
        return self._k("pool", "lease-check", _part("pool name", pool), _part("instance id", instance_id),
                       _part("fence", int(fence)))

    def pool_claims(self, pool: str) -> str:
        """Hash instance id → reason: instances claimed for destruction (never leased again)."""
        return self._k("pool", "claims", _part("pool name", pool))

    def pool_last_round(self, pool: str) -> str:
        """JSON summary of the last reconcile round of one pool (why it waits); TTL POOL_LAST_ROUND_TTL_MS."""
        return self._k("pool", "last-round", _part("pool name", pool))

    def pool_rerun(self, pool: str) -> str:
        """Flag (PX POOL_RERUN_TTL_MS): a wake-up came while a round ran; that round goes once more."""
        return self._k("pool", "rerun", _part("pool name", pool))

    def pool_wake(self, due_s: int) -> str:
        """Marker: a reconcile wake-up due at this second is queued already (de-duplicates wake-ups)."""
        return self._k("pool", "wake", _part("due second", due_s))

    def pool_safety(self) -> str:
        """Hash: why safe mode is on (cause: operator|token|failures|spend, since)."""
        return self._k("pool", "safety")

    # ── lease endpoints (the proxy's /c/{endpointToken}/) ─────────────────────
    def endpoint(self, token_digest: str) -> str:
        """JSON {pool, instance_id, fence} of one endpoint token, keyed by the token's SHA-256 (the token
        itself is never stored); PEXPIREAT the lease's end, moved on renewal, deleted on release."""
        return self._k("endpoint", _part("token digest", token_digest))

    def endpoint_dropped(self) -> str:
        """Pub/sub channel: the digest of each endpoint token dropped (released), so every proxy forgets it
        at once instead of after its resolution cache's second."""
        return self._k("endpoint-dropped")

    def endpoint_secret(self) -> str:
        """32 random bytes (hex), made once (SET NX): the HMAC key that derives a grant's endpoint token, so a
        re-sent or retried grant answers the same token."""
        return self._k("endpoint-secret")

    def endpoint_grant(self, pool: str, instance_id: str | int, fence: int) -> str:
        """The token digest issued for one lease grant (pool + instance + fence); same expiry as above."""
        return self._k("endpoint-grant", _part("pool name", pool), _part("instance id", instance_id),
                       _part("fence", fence))

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
        """JSON: keepalive counters and next ping time of an instance (TTL KEEPALIVE_STATUS_TTL_MS)."""
        return self._k("keepalive", _part("instance id", instance_id))

    def poll_state(self, instance_id: str | int) -> str:
        """Adaptive polling state of one instance."""
        return self._k("poll", _part("instance id", instance_id))

    # ── adaptive polling (Layer 5) ─────────────────────────────────────────
    def poll_due(self) -> str:
        """Sorted set: instance id → unix time its next poll is due (a claimed one: its claim's expiry)."""
        return self._k("poll", "due")

    def poll_claims(self) -> str:
        """Hash: instance id → ``<token>|<claimed until>`` of the poll in flight (one per instance)."""
        return self._k("poll", "claims")

    def poll_claim_seq(self) -> str:
        """Counter that numbers claims (INCR), so a stale finisher is told apart from a newer claim."""
        return self._k("poll", "claimseq")

    def poll_last(self) -> str:
        """Hash: instance id → unix time of its last finished poll."""
        return self._k("poll", "last")

    def poll_counts(self) -> str:
        """Hash: instance id → polls finished (operators' and tests' evidence of the cadence)."""
        return self._k("poll", "counts")

    def poll_active(self) -> str:
        """Set of ids whose last poll found them starting/loading/leased (snapshot refresh cadence)."""
        return self._k("poll", "active")

    def poll_wake(self) -> str:
        """List the dispatcher BLPOPs on: a push wakes it for a "poll now"."""
        return self._k("poll", "wake")

    def poll_refresh_queued(self) -> str:
        """Marker (PX): a provider snapshot refresh task is queued, do not queue another."""
        return self._k("poll", "refreshq")

    def poll_stats(self) -> str:
        """Hash of counters: polls, stale_finishes, claims, snapshot refreshes, show calls."""
        return self._k("poll", "stats")

    def poll_l3(self, instance_id: str | int) -> str:
        """Marker (PX = active interval): Layer 3 was queued for this instance recently."""
        return self._k("poll", "l3", _part("instance id", instance_id))

    def poll_shown(self, instance_id: str | int) -> str:
        """String (with a TTL): what ``show`` said about an instance missing from the listing."""
        return self._k("poll", "shown", _part("instance id", instance_id))

    def provider_snapshot(self) -> str:
        """Hash: instance id → the provider's row (trimmed JSON) from the last listing."""
        return self._k("provider", "snapshot")

    def provider_snapshot_meta(self) -> str:
        """Hash: fetched_at, count, error of the last listing."""
        return self._k("provider", "meta")

    def provider_absent(self) -> str:
        """Hash: id of a record → consecutive listings it was missing from."""
        return self._k("provider", "absent")

    def adopted(self) -> str:
        """Set of instance ids an operator adopted (ours although unlabelled)."""
        return self._k("adopted")

    def forgotten(self) -> str:
        """Set of instance ids an operator released from our care (discovery leaves them alone)."""
        return self._k("forgotten")

    def collector(self, instance_id: str | int) -> str:
        """Hash: SSH log collector status of one instance (``offset:<file>``, failures, route, ...)."""
        return self._k("collector", _part("instance id", instance_id))

    def heartbeats(self) -> str:
        """Hash: process name → its latest heartbeat (JSON). One key whatever the number of processes, so
        reading every heartbeat costs one HMGET, never a SCAN of the keyspace."""
        return self._k("heartbeats")
    def ssh_log(self, instance_id: str | int, file: str) -> str:
        """Stream of one remote log file's lines; entry id = byte offset of its first line (XADD MINID ~)."""
        return self._k("sshlog", _part("instance id", instance_id), _part("log file", file))

    def ssh_host_key(self, instance_id: str | int) -> str:
        """The pinned SSH host key of an instance (``<type> <base64>``): set once, never replaced."""
        return self._k("hostkey", _part("instance id", instance_id))

    def worker_stopping(self, hostname: str) -> str:
        """String (PX TTL): the pid of a worker's main process that began its warm shutdown. Prefork children
        never see Celery's shutdown signal; long-running daemons in them (keepalive shards) read this."""
        return self._k("worker-stopping", _part("worker hostname", hostname))

    def ssh_drops(self) -> str:
        """Sorted set: recent SSH session drops (member the instance id, score the time of its last drop),
        trimmed to the reconnect window; its size tells a lone drop from a herd."""
        return self._k("ssh-drops")

    def collector_queued(self, instance_id: str | int) -> str:
        """Marker (PX TTL) that a collector task was sent and has not taken its lease yet."""
        return self._k("collector-queued", _part("instance id", instance_id))

    def heartbeat_expiry(self) -> str:
        """Sorted set: process name → when its heartbeat expires (epoch seconds). Readers take the live
        names by score; writers prune the expired ones (a hash field has no TTL before Redis 7.4)."""
        return self._k("heartbeats", "expiry")

    def beat_prefix(self) -> str:
        """celery-redbeat's key prefix: the beat schedule (``<prefix>:schedule`` zset, one hash per entry,
        ``<prefix>:statics``) and the lock that lets exactly one beat of the deployment send."""
        return self._k("redbeat") + ":"

    # ── supervision (Layer 6) ──────────────────────────────────────────────
    def supervision_book(self) -> str:
        """Hash: daemon id → JSON supervision record (status, restartCount, consecutiveCrashes, times...)."""
        return self._k("supervision", "daemons")

    def watchdog_processes(self) -> str:
        """JSON: the ``vastkeep up`` watchdog's status of its local processes (PX WATCHDOG_PROCESSES_TTL_MS),
        published by the supervisor so the admin API process can read it."""
        return self._k("supervision", "processes")

    # ── provider rate limits ────────────────────────────────────────────────
    def rate_slot(self, service: str, endpoint: str, key_fingerprint: str) -> str:
        """Next allowed call time (us) of one endpoint with one API key, shared by every worker.

        ``endpoint`` is ``"GET /instances/{id}"`` (made key-safe: ``GET_/instances/_id_``); the API key
        itself never appears, only its one-way fingerprint. PX TTL: until that time + RATE_SLOT_GRACE_MS.
        """
        slug = _ENDPOINT_UNSAFE_RE.sub("_", endpoint)
        return self._k("rate", _part("service", service), _part("endpoint", slug),
                       _part("key fingerprint", key_fingerprint))

    def rate_gap(self, service: str, endpoint: str) -> str:
        """A larger gap (us) an endpoint's 429 named, for every key (PX RATE_GAP_LEARNED_TTL_MS)."""
        slug = _ENDPOINT_UNSAFE_RE.sub("_", endpoint)
        return self._k("rate-gap", _part("service", service), _part("endpoint", slug))

    def rate_slot_pattern(self) -> str:
        """SCAN pattern matching every rate-limit slot key."""
        return self._k("rate", "*")

    def all_patterns(self) -> list[str]:
        """Patterns covering every key this prefix owns (for operators and test clean-up)."""
        return [self._k("*")]


__all__ = ["EVENTS_MAXLEN", "HEARTBEAT_TTL_MS", "KEEPALIVE_STATUS_TTL_MS", "LEASE_DEFAULT_TTL_MS",
           "POOL_LAST_ROUND_TTL_MS", "RATE_GAP_LEARNED_TTL_MS", "RATE_SLOT_GRACE_MS", "TOKEN_RESULT_TTL_MS",
           "WATCHDOG_PROCESSES_TTL_MS", "Keys"]
