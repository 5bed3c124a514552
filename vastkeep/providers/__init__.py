"""The provider seam: what a GPU cloud must answer, and the clients that answer it.

Only this package speaks a cloud's own words (``tests/unit/test_layering.py`` enforces it); the layers
read :class:`Instance` and :class:`Offer` and call a :class:`Provider`. See ``docs/ARCHITECTURE.md`` for
what adding a second cloud takes.

- ``base``: the :class:`Provider` interface, the normalised :class:`Instance` / :class:`Offer`, the
  :class:`OfferSpec` and :class:`RentOrder` requests, the one row → record mapping
  (:func:`record_from_instance`), the one address function (:func:`address_of`) and the SSH routes.
- ``stub``: :class:`StubProvider`, an in-memory cloud for unit tests.
- ``registry``: which cloud the product talks to, chosen by the ``PROVIDER`` setting in one place
  (:func:`build_provider`; tests add a cloud with :func:`register_provider`).
- ``vast``: ``VastClient``, the Vast.ai REST client and the first Provider (``VastApi`` is its own,
  Vast-shaped interface); ``vast_models`` parses its rows tolerantly; ``vast_map`` maps them to the seam
  (its ``offer_query`` / ``rent_env`` are re-exported as ``vast_offer_query`` / ``vast_rent_env`` for the
  pool's old public names, so no layer imports a cloud's module).
- ``deadline``: whole-call deadlines (a ``DeadlineWatchdog``, one per process, shuts the socket of a call
  past its deadline).
- ``http``: the requests session factory, ``RetryingSender`` (bounded jittered retry as a policy object),
  whole-call deadlines and body caps.
"""

from vastkeep.providers.base import (
    Instance,
    Offer,
    OfferSpec,
    Phase,
    Provider,
    RentOrder,
    SshRoute,
    address_of,
    record_from_instance,
    ssh_routes,
)
from vastkeep.providers.deadline import DeadlineWatchdog, call_deadline
from vastkeep.providers.http import (
    FailureReason,
    RetryingSender,
    RetryPolicy,
    make_session,
    read_body,
    request_with_retry,
    safe_url,
)
from vastkeep.providers.registry import (
    ProviderParts,
    build_provider,
    close_provider,
    known_providers,
    provider_session,
    register_provider,
    unregister_provider,
)
from vastkeep.providers.stub import StubProvider
from vastkeep.providers.vast import VastApi, VastClient
from vastkeep.providers.vast_map import instance_from_stored
from vastkeep.providers.vast_map import offer_query as vast_offer_query
from vastkeep.providers.vast_map import rent_env as vast_rent_env
from vastkeep.providers.vast_models import VastInstance, VastOffer

__all__ = [
    "DeadlineWatchdog", "FailureReason", "Instance", "Offer", "OfferSpec", "Phase", "Provider",
    "ProviderParts", "RentOrder", "RetryPolicy", "RetryingSender", "SshRoute", "StubProvider", "VastApi",
    "VastClient", "VastInstance", "VastOffer",
    "address_of", "build_provider", "call_deadline", "close_provider", "instance_from_stored",
    "known_providers", "make_session", "provider_session", "read_body", "record_from_instance",
    "register_provider", "request_with_retry", "safe_url", "ssh_routes", "unregister_provider",
    "vast_offer_query", "vast_rent_env",
]
