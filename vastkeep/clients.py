"""Clients built from the settings plus the shared state, so every caller uses the same credentials.

The Vast.ai key in force is the *effective* one (:meth:`vastkeep.tokens.TokenManager.effective_token`):
the runtime override that ``POST /api/proxy/admin/update-token`` stored in Redis when there is one,
else the configured ``VAST_API_KEY``. Building clients here, and nowhere else, is what makes an
update-token reach the next API call of every worker without a restart.
"""

from __future__ import annotations

from typing import Any

from vastkeep.clock import SYSTEM_CLOCK, Clock
from vastkeep.settings import Settings
from vastkeep.tokens import VASTAI, TokenManager, TokenStore
from vastkeep.vast import VastClient


def vast_client(settings: Settings, store: TokenStore, clock: Clock = SYSTEM_CLOCK,
                **options: Any) -> VastClient | None:
    """A :class:`VastClient` with the effective Vast.ai key, or None when no key is configured at all.

    A Redis error reading the override propagates (the caller retries): silently falling back to a
    start-up key that an operator has since replaced would authenticate with the wrong account key.
    ``options`` go to :class:`VastClient` (``timeout_s``, ``retry``, ``rng``, ``session``).
    """
    token = TokenManager.from_settings(settings, store, clock=clock).effective_token(VASTAI)
    if token is None:
        return None
    return VastClient(token, settings.vast_api_url, clock=clock, **options)


__all__ = ["vast_client"]
