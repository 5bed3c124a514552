"""The warm pool: rent to the desired size, replace what dies, stop spending when in doubt.

- ``plan``: pure decisions (``plan_pool``, labels and slots, the offer search, the spend rate).
- ``book``: the pool's Redis bookkeeping (rents in flight, failures, the safe-mode cause).
- ``safety``: entering and leaving safe mode.
- ``reconcile``: ``Reconciler``, one round at a time across all workers, carrying a plan out; ``renting``: the
  life of a rent inside a round; ``report``: what a round did.
- ``roundlease``: the round lease's TTL (from the reconcile interval) and its keeper thread.
- ``leasing``: client leases (grant / renew / release, safe to re-send) and the health check after a lease.
- ``moving``: failover: a lease leaves its lost instance for a ready one, token and lease id kept (fenced).

Logger: ``vastkeep.pool``.
"""

from __future__ import annotations

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.settings import Settings
from vastkeep.pool import safety
from vastkeep.pool.aftercare import CHECK_FAILED, after_lease
from vastkeep.pool.book import CAUSE_FAILURES, CAUSE_OPERATOR, CAUSE_SPEND, CAUSE_TOKEN, CAUSES, PoolBook
from vastkeep.pool.leasing import MAX_LEASE_S, CheckPort, ClientLease, PoolLeases
from vastkeep.pool.moving import Moved, move_lease, move_request_id
from vastkeep.pool.ops import parse_size, pool_figures, safe_mode_view, set_safe_mode, set_size
from vastkeep.pool.plan import (
    OfferParams,
    PendingRent,
    Plan,
    PlanParams,
    make_label,
    offer_query,
    pick_offer,
    plan_pool,
    rank_offers,
    slot_of,
    spend_rate,
)
from vastkeep.pool.reconcile import BUSY, Reconciler, lease_name
from vastkeep.pool.roundlease import DEFAULT_MAX_ROUND_S, RoundLeaseKeeper, round_lease_ttl_ms
from vastkeep.providers import Provider
from vastkeep.state import NULL_EVENTS, EventSink, Keys, LeaseManager, StateStore
from vastkeep.state.flowmarks import RedisClient


def build_leases(settings: Settings, redis_client: RedisClient, keys: Keys, clock: Clock = SYSTEM_CLOCK,
                 store: StateStore | None = None, events: EventSink | None = None,
                 check: CheckPort | None = None) -> PoolLeases:
    """Client leases of ``settings.warm_pool_name`` (retry hints: one active poll interval at most);
    ``check`` queues an instance's health check after a lease (the wiring sends a port validation);
    ``events`` None: an admin app without an event stream."""
    return PoolLeases(redis_client, keys, settings.warm_pool_name, settings.warm_pool_label_prefix, clock,
                      store, events or NULL_EVENTS, retry_s=max(1, int(settings.poll_active_interval_s)),
                      check=check)


def build_reconciler(settings: Settings, store: StateStore, events: EventSink, redis_client: RedisClient,
                     keys: Keys, vast: Provider | None, clock: Clock = SYSTEM_CLOCK,
                     max_round_s: float = DEFAULT_MAX_ROUND_S, check: CheckPort | None = None) -> Reconciler:
    """A reconciler for ``settings.warm_pool_name`` on the shared state (one per task run); its lease is
    renewed for at most ``max_round_s`` (the task's hard time limit); ``check`` as for :func:`build_leases`
    (the round notices expired leases and queues their checks)."""
    return Reconciler(settings, store, events, LeaseManager(redis_client, keys, clock),
                      PoolBook(redis_client, keys, settings.warm_pool_name), vast, clock,
                      client_leases=build_leases(settings, redis_client, keys, clock, store, events, check),
                      max_round_s=max_round_s)


__all__ = [
    "BUSY", "CAUSES", "CHECK_FAILED", "CheckPort", "after_lease",
    "CAUSE_FAILURES", "CAUSE_OPERATOR", "CAUSE_SPEND", "CAUSE_TOKEN", "MAX_LEASE_S",
    "Moved", "move_lease", "move_request_id",
    "ClientLease", "DEFAULT_MAX_ROUND_S", "OfferParams", "PendingRent", "Plan", "PlanParams", "PoolBook",
    "PoolLeases", "Reconciler", "RoundLeaseKeeper", "round_lease_ttl_ms",
    "build_leases", "build_reconciler", "lease_name", "make_label", "offer_query", "parse_size", "pick_offer",
    "plan_pool", "pool_figures", "rank_offers", "safe_mode_view", "safety", "set_safe_mode", "set_size",
    "slot_of", "spend_rate",
]
