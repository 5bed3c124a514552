"""Which cloud the product talks to: one registry of provider builders, keyed by the ``PROVIDER`` setting.

Every task and flow that needs a cloud gets its :class:`~vastkeep.providers.base.Provider` from
:func:`build_provider`, so choosing a cloud happens here and nowhere else. A builder is named by
``"module:function"`` text (celery's ``BACKEND_ALIASES`` style) and imported on first use: the Vast.ai
builder lives in :mod:`vastkeep.tokens.preflight`, where the token pre-flight wraps its ``rent``, and this
package never imports the layers above it. A second cloud adds one builder and one line to
:data:`BUILDERS` (or calls :func:`register_provider`, as tests do); ``docs/ARCHITECTURE.md`` has the steps.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import ConfigError
from vastkeep.core.settings import Settings
from vastkeep.providers.base import Provider
from vastkeep.providers.deadline import DeadlineWatchdog
from vastkeep.state.protocols import NULL_EVENTS, EventSink, TokenResultStore

#: the built-in clouds: ``PROVIDER`` value → ``"module:function"`` of its builder
BUILDERS: dict[str, str] = {"vast": "vastkeep.tokens.preflight:vast_provider"}
DEFAULT_PROVIDER = "vast"


@dataclass(frozen=True)
class ProviderParts:
    """What a builder may use: the settings, the shared token results, the clock and events, and the
    process's shared helpers (``check_pools``: the token-check threads; ``watchdog``: the deadline
    watchdog). ``check_pools`` is typed loosely because its class lives in a layer above this package."""

    settings: Settings
    store: TokenResultStore
    clock: Clock = SYSTEM_CLOCK
    events: EventSink = NULL_EVENTS
    check_pools: object | None = None
    watchdog: DeadlineWatchdog | None = None


#: builds the cloud's client from the parts, or None when it has no credentials at all
ProviderBuilder = Callable[[ProviderParts], Provider | None]

_lock = threading.Lock()
_registered: dict[str, ProviderBuilder] = {}


def register_provider(name: str, builder: ProviderBuilder) -> None:
    """Make ``PROVIDER=name`` build with ``builder`` (a test's second cloud; a plug-in's own)."""
    with _lock:
        _registered[name.strip().lower()] = builder


def unregister_provider(name: str) -> None:
    """Forget a builder added by :func:`register_provider` (the built-in ones stay)."""
    with _lock:
        _registered.pop(name.strip().lower(), None)


def known_providers() -> tuple[str, ...]:
    """Every name ``PROVIDER`` may take in this process, sorted."""
    with _lock:
        return tuple(sorted(set(BUILDERS) | set(_registered)))


def builder_for(name: str) -> ProviderBuilder:
    """The builder of ``name``; ``ConfigError`` naming ``PROVIDER`` and the known values otherwise."""
    key = (name or DEFAULT_PROVIDER).strip().lower()
    with _lock:
        found = _registered.get(key)
    if found is not None:
        return found
    target = BUILDERS.get(key)
    if target is None:
        raise ConfigError(f"PROVIDER={name!r} is not a known provider; expected one of "
                          f"{', '.join(known_providers())}", variable="PROVIDER")
    module, _, attr = target.partition(":")
    built: ProviderBuilder = getattr(importlib.import_module(module), attr)
    return built


def build_provider(parts: ProviderParts) -> Provider | None:
    """The client of the cloud the settings name (``PROVIDER``), or None when it has no credentials."""
    return builder_for(parts.settings.provider)(parts)


def close_provider(provider: Provider | None) -> None:
    """Release what a client holds (its HTTP session), if it holds anything: ``close`` is optional."""
    close = getattr(provider, "close", None)
    if callable(close):
        close()


@contextmanager
def provider_session(parts: ProviderParts) -> Iterator[Provider | None]:
    """:func:`build_provider` for one block; the client is closed when the block ends."""
    provider = build_provider(parts)
    try:
        yield provider
    finally:
        close_provider(provider)


__all__ = ["BUILDERS", "DEFAULT_PROVIDER", "ProviderBuilder", "ProviderParts", "build_provider",
           "builder_for", "close_provider", "known_providers", "provider_session", "register_provider",
           "unregister_provider"]
