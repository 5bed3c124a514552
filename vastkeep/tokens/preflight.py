"""Clients built from the settings plus the shared state, so every caller uses the same credentials.

The Vast.ai key in force is the *effective* one (``TokenManager.effective_token``):
the runtime override that ``POST /api/proxy/admin/update-token`` stored in Redis when there is one,
else the configured ``VAST_API_KEY``. Building clients here, and nowhere else, is what makes an
update-token reach the next API call of every worker without a restart, and what puts the Layer 2
pre-flight (:meth:`~vastkeep.tokens.manager.TokenManager.ensure_vast_token_valid`) in front of every rental.
"""

from __future__ import annotations

from typing import Any

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.settings import Settings
from vastkeep.providers.vast import VastClient
from vastkeep.tokens.manager import VASTAI, EventSink, TokenManager, TokenStore


def vast_client(settings: Settings, store: TokenStore, clock: Clock = SYSTEM_CLOCK, *,
                events: EventSink | None = None, **options: Any) -> VastClient | None:
    """A :class:`VastClient` with the effective Vast.ai key, or None when no key is configured at all.

    Its ``rent`` first runs the pre-flight: ``TokenInvalid(service="vastai")`` while the shared token
    result says Vast.ai rejects the key (a fresh check when no result is cached; ``events`` then
    receives ``token-invalid``), before any request is sent.

    A Redis error reading the override propagates (the caller retries): silently falling back to a
    start-up key that an operator has since replaced would authenticate with the wrong account key.
    ``options`` go to :class:`VastClient` (``timeout_s``, ``retry``, ``rng``, ``session``).
    """
    manager = TokenManager.from_settings(settings, store, events=events, clock=clock)
    token = manager.effective_token(VASTAI)
    if token is None:
        return None

    def preflight() -> None:
        manager.ensure_vast_token_valid()

    return VastClient(token, settings.vast_api_url, clock=clock, preflight=preflight, **options)


__all__ = ["vast_client"]
