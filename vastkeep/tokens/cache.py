"""Token results cached in Redis, shared by every worker.

A verdict is reused for ``TOKEN_VALIDATION_CACHE_MS``, an "unknown" (provider down) for a shorter time, and
only for the very token it judged (a one-way fingerprint stored beside it, never shown).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from vastkeep.core.clock import Clock, from_iso
from vastkeep.core.settings import Secret
from vastkeep.state.protocols import TokenResultStore
from vastkeep.tokens.checks import UNKNOWN, TokenResult

_FP = "_fp"  # cached results carry a fingerprint of the token they judged (never shown)


def _fingerprint(token: Secret) -> str:
    """A short one-way digest that tells whether a cached verdict is about the current token."""
    return hashlib.sha256(b"vastkeep-token-fp\0" + token.reveal().encode()).hexdigest()[:16]


def public_result(result: Mapping[str, object]) -> TokenResult:
    """A result as callers see it: internal fields removed."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


class ResultCache:
    """The shared cache of token results on ``store``; times in ms (``unknown_ms`` for "unknown")."""

    def __init__(self, store: TokenResultStore, clock: Clock, cache_ms: int, unknown_ms: int) -> None:
        self.store, self.clock, self.cache_ms, self.unknown_cache_ms = store, clock, cache_ms, unknown_ms

    def get(self, service: str, token: Secret) -> TokenResult | None:
        """The stored result if it judged this very token and is younger than its cache time."""
        hit = self.store.get_token_result(service)
        if not isinstance(hit, dict) or hit.get(_FP) != _fingerprint(token):
            return None
        tested = from_iso(hit.get("testedAt"))
        ttl_ms = self.unknown_cache_ms if hit.get("status") == UNKNOWN else self.cache_ms
        if tested is None or not 0 <= (self.clock.now() - tested) * 1000 < ttl_ms:
            return None
        return public_result(hit)

    def put(self, service: str, token: Secret, result: Mapping[str, object]) -> None:
        """Store a result for its cache time (shorter for "unknown"), with the token's fingerprint."""
        ttl_ms = self.unknown_cache_ms if result["status"] == UNKNOWN else self.cache_ms
        stored = {k: v for k, v in result.items() if k != "cached"} | {_FP: _fingerprint(token)}
        self.store.put_token_result(service, stored, ttl_ms)


__all__ = ["ResultCache", "public_result"]
