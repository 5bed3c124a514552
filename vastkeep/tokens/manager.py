"""Layer 2: token management — validate the Vast.ai, HuggingFace and Civitai tokens, cache, update.

Tokens loaded once at start-up and never re-checked fail silently hours later, in the middle of a
rental. :class:`TokenManager` validates them with real API calls (the three run concurrently, each
bounded by its own timeout, so one slow provider never delays the others), caches the results in
Redis so every worker shares them, emits a durable ``token-invalid`` event and the guide's log lines,
refuses renting while the Vast.ai token is invalid (:meth:`TokenManager.ensure_vast_token_valid`), and
accepts a new token at runtime only after it has been validated (:meth:`TokenManager.update_token`).

The effective token of a service is the runtime override in Redis (set by update-token, seen by every
worker without a restart) if there is one, else the configured secret. No token ever reaches a result,
a log line, an event or an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait

import requests

from vastkeep.core.clock import SYSTEM_CLOCK, Clock, iso
from vastkeep.core.errors import InvalidInput, TokenInvalid
from vastkeep.core.settings import Secret, Settings
from vastkeep.providers.deadline import DeadlineWatchdog
from vastkeep.state.protocols import NULL_EVENTS, EventSink, TokenResultStore
from vastkeep.tokens.cache import ResultCache, public_result
from vastkeep.tokens.checks import (
    CIVITAI,
    HUGGINGFACE,
    INVALID,
    SERVICES,
    UNCONFIGURED,
    UNKNOWN,
    VALID,
    VASTAI,
    CheckSpec,
    TokenResult,
    TokenStatus,
    check_specs,
    classify,
    run_check,
    token_problem,
    unconfigured_result,
)
from vastkeep.tokens.pools import (
    CHECK_POOL_SIZE,
    MAX_CHECK_THREADS,
    VAST_CHECK_ENDPOINT,
    CheckPools,
    key_pacer,
)
from vastkeep.tokens.update import MAX_TOKEN_BYTES, TokenUpdate, UpdateRefusal

log = logging.getLogger("vastkeep.tokens")

DEFAULT_CHECK_TIMEOUT_S = 10.0
DEFAULT_UNKNOWN_CACHE_MS = 30_000  # an "unknown" (provider down) is re-checked sooner than a verdict
DEADLINE_GRACE_S = 0.5  # on top of the request timeout, for DNS/TLS/body reading

__all__ = [
    "CIVITAI", "HUGGINGFACE", "INVALID", "SERVICES", "UNCONFIGURED", "UNKNOWN", "VALID", "VASTAI",
    "CHECK_POOL_SIZE", "MAX_CHECK_THREADS", "CheckPools", "EventSink", "TokenManager", "TokenResult",
    "TokenStatus", "TokenStore", "TokenUpdate", "UpdateRefusal", "public_result",
    "DEADLINE_GRACE_S", "DEFAULT_CHECK_TIMEOUT_S", "DEFAULT_UNKNOWN_CACHE_MS", "MAX_TOKEN_BYTES",
    "VAST_CHECK_ENDPOINT", "key_pacer",
]


TokenStore = TokenResultStore


def _int(value: object) -> int:
    """A result's ``httpStatus`` as an int (0 when absent or not a number)."""
    return value if isinstance(value, int) else 0


class TokenManager:
    """Validates, caches and updates the three provider tokens; one per process is enough."""

    def __init__(
        self,
        *,
        store: TokenStore,
        configured: Mapping[str, Secret | None],
        specs: Mapping[str, CheckSpec],
        cache_ms: int,
        events: EventSink = NULL_EVENTS,
        clock: Clock = SYSTEM_CLOCK,
        timeout_s: float = DEFAULT_CHECK_TIMEOUT_S,
        unknown_cache_ms: int = DEFAULT_UNKNOWN_CACHE_MS,
        session_factory: Callable[[], requests.Session] | None = None,
        vast_min_gap_s: float = 0.0,
        pools: CheckPools | None = None,
        watchdog: DeadlineWatchdog | None = None,
    ) -> None:
        self.store = store
        self.pools = pools if pools is not None else CheckPools()
        self.watchdog = watchdog if watchdog is not None else DeadlineWatchdog(idle_s=0)
        self.vast_min_gap_s = float(vast_min_gap_s)
        self.events = events
        self.clock = clock
        self.cache_ms = int(cache_ms)
        self.unknown_cache_ms = min(int(unknown_cache_ms), self.cache_ms)
        self.timeout_s = float(timeout_s)
        self._configured = {s: configured.get(s) for s in SERVICES}
        self._specs = dict(specs)
        self._session_factory = session_factory
        self._cache = ResultCache(store, clock, self.cache_ms, self.unknown_cache_ms)

    @classmethod
    def from_settings(cls, settings: Settings, store: TokenStore, *, events: EventSink = NULL_EVENTS,
                      clock: Clock = SYSTEM_CLOCK,
                      timeout_s: float = DEFAULT_CHECK_TIMEOUT_S,
                      pools: CheckPools | None = None,
                      watchdog: DeadlineWatchdog | None = None) -> TokenManager:
        """A manager from the frozen settings; ``pools`` and ``watchdog``: the process's shared check
        threads and deadline watchdog (else the manager's own)."""
        return cls(
            store=store, events=events, clock=clock, timeout_s=timeout_s, pools=pools, watchdog=watchdog,
            cache_ms=settings.token_validation_cache_ms,
            configured={VASTAI: settings.vast_api_key, HUGGINGFACE: settings.huggingface_hub_token,
                        CIVITAI: settings.civitai_token},
            specs=check_specs(settings.vast_api_url, settings.huggingface_api_url, settings.civitai_api_url),
            vast_min_gap_s=settings.vast_api_min_gap_s,
        )

    def __repr__(self) -> str:
        return f"TokenManager(services={list(SERVICES)!r}, cache_ms={self.cache_ms})"

    # ── tokens ──────────────────────────────────────────────────────────────
    @staticmethod
    def check_service(service: object) -> str:
        """The service name, or InvalidInput for anything but vastai / huggingface / civitai."""
        if not isinstance(service, str) or service not in SERVICES:
            raise InvalidInput(f"unknown service; expected one of {', '.join(SERVICES)}", field="service")
        return service

    def effective_token(self, service: str) -> Secret | None:
        """The runtime override from Redis if set (every worker sees it), else the configured secret."""
        self.check_service(service)
        override = self.store.get_runtime_secret(service)
        return override if override is not None else self._configured[service]

    def status(self) -> dict[str, dict[str, object]]:
        """Per service, without calling anyone: where the token comes from and the cached result, if fresh."""
        out: dict[str, dict[str, object]] = {}
        for service in SERVICES:
            override = self.store.get_runtime_secret(service)
            token = override if override is not None else self._configured[service]
            source = "runtime" if override is not None else "settings" if token is not None else None
            out[service] = {"configured": token is not None, "source": source,
                            "result": self._cache.get(service, token) if token is not None else None}
        return out

    # ── validation ──────────────────────────────────────────────────────────
    def validate_service(self, service: str, *, use_cache: bool = True) -> TokenResult:
        """One service's result (see :meth:`validate_all`)."""
        return self.validate_all(use_cache=use_cache, services=(self.check_service(service),))[service]

    def validate_all(self, *, use_cache: bool = True,
                     services: tuple[str, ...] = SERVICES) -> dict[str, TokenResult]:
        """Every service's result: from the shared cache when fresh (``use_cache``), else a real call.

        Fresh calls run concurrently in the process's bounded per-service check pools; each is awaited
        only up to its own timeout, so a provider that hangs costs ``timeout_s`` and is reported "unknown"
        while the others finish (a check still queued then is cancelled; a running one ends by its
        deadline).
        Each result carries ``cached`` (True when read from Redis).
        """
        tokens = {s: self.effective_token(s) for s in services}
        out: dict[str, TokenResult] = {}
        pending: dict[str, tuple[Secret, Future[TokenResult]]] = {}
        for service in services:
            token = tokens[service]
            if token is None:
                out[service] = unconfigured_result() | {"cached": False}
                continue
            if use_cache:
                hit = self._cache.get(service, token)
                if hit is not None:
                    out[service] = hit | {"cached": True}
                    continue
            pending[service] = (token, self._start_check(service, token))
        if pending:
            wait([f for _, f in pending.values()], timeout=self.timeout_s + DEADLINE_GRACE_S)
        for service, (token, future) in pending.items():
            if future.done():
                result = future.result()
            else:
                future.cancel()  # still queued behind hung checks: never run it late
                result = classify(service, tested_at=iso(self.clock.now()),
                                  error=f"timed out after {self.timeout_s:g}s")
            self._record(service, token, result)
            out[service] = result | {"cached": False}
        for service in services:
            if out[service]["status"] == UNCONFIGURED:
                log.info("ℹ️  %s token not configured; skipping validation", service)
        return {s: out[s] for s in services}

    def ensure_vast_token_valid(self) -> TokenResult:
        """Pre-flight before renting: raise TokenInvalid(service="vastai") while Vast.ai says 401/403.

        Uses the shared cache (a fresh result at most TOKEN_VALIDATION_CACHE_MS old). "unknown" and
        "unconfigured" (the simulated cloud) do not block: only a verdict from Vast.ai itself does.
        """
        result = self.validate_service(VASTAI, use_cache=True)
        if result["status"] == INVALID:
            raise TokenInvalid(f"VastAI API token invalid: {result.get('error')}", service=VASTAI,
                               reason=str(result.get("error")))
        return result

    # ── runtime update ──────────────────────────────────────────────────────
    def update_token(self, service: str, token: object, *, force: bool = False) -> TokenUpdate:
        """Validate ``token`` first; store it in Redis (all workers use it at once) only if it passes.

        Invalid (401/403): refused, old token kept. Unknown (provider down): refused unless ``force``.
        Malformed input raises InvalidInput (field named, value never shown).
        """
        self.check_service(service)
        problem = token_problem(token, max_bytes=MAX_TOKEN_BYTES)
        if problem is not None or not isinstance(token, str):
            raise InvalidInput(problem or "token must be a string", field="token")
        secret = Secret(token)
        result = self._start_check(service, secret)
        try:
            result_now = result.result(timeout=self.timeout_s + DEADLINE_GRACE_S)
        except TimeoutError:
            result.cancel()
            result_now = classify(service, tested_at=iso(self.clock.now()),
                                  error=f"timed out after {self.timeout_s:g}s")
        status = result_now["status"]
        if status == INVALID:
            log.warning("⚠️  %s token update refused: %s", service, result_now.get("error"))
            self._emit("token-update-rejected", service=service, reason=UpdateRefusal.REJECTED,
                       error=str(result_now.get("error")))
            return TokenUpdate(service, False, result_now, reason=UpdateRefusal.REJECTED)
        if status == UNKNOWN and not force:
            log.warning("⚠️  %s token update refused: could not validate (%s)", service,
                        result_now.get("error"))
            self._emit("token-update-rejected", service=service, reason=UpdateRefusal.UNVERIFIED,
                       error=str(result_now.get("error")))
            return TokenUpdate(service, False, result_now, reason=UpdateRefusal.UNVERIFIED)
        self.store.set_runtime_secret(service, secret)
        self._cache.put(service, secret, result_now)
        forced = status == UNKNOWN
        log.info("🔑 %s token updated at runtime (validation: %s%s)", service, status,
                 ", forced" if forced else "")
        self._emit("token-updated", service=service, status=status, forced=forced)
        return TokenUpdate(service, True, result_now, forced=forced)

    # ── internals ───────────────────────────────────────────────────────────
    def _start_check(self, service: str, token: Secret) -> Future[TokenResult]:
        """Queue one check on its service's bounded pool; it ends by its own deadline (``timeout_s``)."""
        return self.pools.for_service(service).submit(self._run_check, service, token)

    def _run_check(self, service: str, token: Secret) -> TokenResult:
        try:
            if service == VASTAI:
                self._wait_vast_turn(token)
            return run_check(self._specs[service], token, timeout_s=self.timeout_s,
                             tested_at=lambda: iso(self.clock.now()),
                             session_factory=self._session_factory, clock=self.clock, watchdog=self.watchdog)
        except Exception as exc:  # noqa: BLE001 - surfaced as "unknown" by the caller
            return classify(service, tested_at=iso(self.clock.now()),
                            error=f"check crashed ({type(exc).__name__})")

    def _wait_vast_turn(self, token: Secret) -> None:
        """Take the key's slot on ``GET /instances`` in the shared pacer before the Vast.ai check.

        The check calls the endpoint the poller lists instances with; unpaced, a check sent beside a
        poll (every start-up: the pre-flight and the first refresh) drew a 429 and an "unknown" verdict.
        Pacing is best effort: a Redis error here leaves the check to run (its 429 reads as unknown).
        """
        try:
            pacer = key_pacer(self.store, self.vast_min_gap_s, token.reveal(), self.clock)
            if pacer is not None:
                pacer.wait_turn(VAST_CHECK_ENDPOINT)
        except Exception as exc:  # noqa: BLE001 - pacing must never fail a check
            log.debug("token check pacing skipped (%s)", type(exc).__name__)

    def _record(self, service: str, token: Secret, result: TokenResult) -> None:
        """Cache a fresh result, log the guide's line, and emit token-invalid when rejected."""
        self._cache.put(service, token, result)
        status, error = result["status"], result.get("error")
        if status == VALID:
            log.info("✅ %s token validated successfully", service)
            self._emit("token-valid", service=service)
        elif status == INVALID:
            log.error("❌ %s token validation FAILED: %s", service, error)
            self._emit("token-invalid", service=service, error=str(error),
                       http_status=_int(result.get("httpStatus")))
        else:
            log.warning("⚠️  %s token could not be validated: %s", service, error)

    def _emit(self, kind: str, **fields: object) -> None:
        try:
            self.events.emit(kind, **fields)
        except Exception as exc:  # noqa: BLE001 - losing an event must not lose the verdict
            log.warning("could not record %s event: %s", kind, type(exc).__name__)
