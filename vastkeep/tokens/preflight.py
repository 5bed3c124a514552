"""Clients built from the settings plus the shared state, so every caller uses the same credentials.

The Vast.ai key in force is the *effective* one (``TokenManager.effective_token``):
the runtime override that ``POST /api/proxy/admin/update-token`` stored in Redis when there is one,
else the configured ``VAST_API_KEY``. Building clients here, and nowhere else, is what makes an
update-token reach the next API call of every worker without a restart, and what puts the Layer 2
pre-flight (:meth:`~vastkeep.tokens.manager.TokenManager.ensure_vast_token_valid`) in front of every rental.
"""

from __future__ import annotations

import random
from typing import TypedDict, Unpack

import requests

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.settings import Settings
from vastkeep.providers.deadline import DeadlineWatchdog
from vastkeep.providers.http import RetryPolicy
from vastkeep.providers.registry import ProviderParts
from vastkeep.providers.vast import CallPacer, VastClient
from vastkeep.state import NULL_EVENTS, EventSink, KeyPacer
from vastkeep.tokens.manager import VASTAI, CheckPools, TokenManager, TokenStore, key_pacer


class ClientOptions(TypedDict, total=False):
    """What a caller may set on the :class:`VastClient` built here (its keyword arguments)."""

    timeout_s: tuple[float, float]
    retry: RetryPolicy
    rng: random.Random | None
    session: requests.Session | None
    max_body_bytes: int
    pacer: CallPacer | None


def vast_client(settings: Settings, store: TokenStore, clock: Clock = SYSTEM_CLOCK, *,
                events: EventSink = NULL_EVENTS, check_pools: CheckPools | None = None,
                watchdog: DeadlineWatchdog | None = None,
                **options: Unpack[ClientOptions]) -> VastClient | None:
    """A :class:`VastClient` with the effective Vast.ai key, or None when no key is configured at all.

    Its ``rent`` first runs the pre-flight: ``TokenInvalid(service="vastai")`` while the shared token
    result says Vast.ai rejects the key (a fresh check when no result is cached; ``events`` then
    receives ``token-invalid``), before any request is sent.

    A Redis error reading the override propagates (the caller retries): silently falling back to a
    start-up key that an operator has since replaced would authenticate with the wrong account key.
    Every client built here shares one pace per endpoint and key with every other worker on every host
    (:class:`~vastkeep.state.SharedRateLimiter` in the store's Redis, ``VAST_API_MIN_GAP_MS`` apart), so
    the workers together stay under Vast.ai's minimum gap instead of each of them alone.
    ``check_pools``, ``watchdog``: the process's shared token-check threads and deadline watchdog (for the
    pre-flight's check).
    ``options`` go to :class:`VastClient` (``timeout_s``, ``retry``, ``rng``, ``session``, ``pacer``).
    """
    manager = TokenManager.from_settings(settings, store, events=events, clock=clock, pools=check_pools,
                                         watchdog=watchdog)
    token = manager.effective_token(VASTAI)
    if token is None:
        return None

    def preflight() -> None:
        manager.ensure_vast_token_valid()

    if "pacer" not in options:
        options["pacer"] = shared_pacer(settings, store, token.reveal(), clock)
    return VastClient(token, settings.vast_api_url, clock=clock, preflight=preflight, **options)


def vast_provider(parts: ProviderParts) -> VastClient | None:
    """The registry's builder for ``PROVIDER=vast`` (:mod:`vastkeep.providers.registry`): exactly
    :func:`vast_client` on the parts, so the pre-flight still wraps every rent."""
    pools = parts.check_pools if isinstance(parts.check_pools, CheckPools) else None
    return vast_client(parts.settings, parts.store, parts.clock, events=parts.events, check_pools=pools,
                       watchdog=parts.watchdog)


def shared_pacer(settings: Settings, store: TokenStore, key: str,
                 clock: Clock = SYSTEM_CLOCK) -> KeyPacer | None:
    """The Redis-backed pace of ``key`` (by fingerprint) on the store's Redis; None when the gap is 0 or the
    store has no Redis (then only the client's own 429 retry floor applies)."""
    return key_pacer(store, settings.vast_api_min_gap_s, key, clock)


__all__ = ["ClientOptions", "shared_pacer", "vast_client", "vast_provider"]
