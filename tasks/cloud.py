"""The cloud a task talks to, from the process's resources through the provider registry.

Tasks never build a cloud client themselves: :func:`provider` hands the process's settings, store, clock,
token-check threads and deadline watchdog to :func:`vastkeep.providers.registry.build_provider`, which
picks the builder named by the ``PROVIDER`` setting (Vast.ai's runs the token pre-flight before a rent).
"""

from __future__ import annotations

from vastkeep.providers import Provider
from vastkeep.providers.registry import ProviderParts, build_provider, close_provider
from vastkeep.state.protocols import NULL_EVENTS, EventSink
from worker.wiring import Resources


def provider(res: Resources, *, events: EventSink = NULL_EVENTS) -> Provider | None:
    """The configured cloud's client (None without credentials); close it with :func:`close`."""
    return build_provider(ProviderParts(res.settings, res.store, res.clock, events=events,
                                        check_pools=res.check_pools, watchdog=res.deadline_watchdog))


def close(client: Provider | None) -> None:
    """Release the client's session, if it has one."""
    close_provider(client)


__all__ = ["close", "provider"]
