"""Clients for the outside world's APIs (a second cloud would sit beside Vast.ai here).

- ``deadline``: whole-call deadlines (a watchdog shuts the socket of a call past its deadline).
- ``http``: the requests session factory, bounded jittered retry, whole-call deadlines and body caps.
- ``vast``: ``VastClient``, the Vast.ai REST client (``VastApi`` is the interface flows are typed against).
- ``vast_models``: tolerant parsing of the API's instance and offer rows.
"""

from vastkeep.providers.deadline import call_deadline
from vastkeep.providers.http import (
    FailureReason,
    RetryPolicy,
    make_session,
    read_body,
    request_with_retry,
    safe_url,
)
from vastkeep.providers.vast import VastApi, VastClient
from vastkeep.providers.vast_models import VastInstance, VastOffer

__all__ = [
    "FailureReason", "RetryPolicy", "VastApi", "VastClient", "VastInstance", "VastOffer", "call_deadline",
    "make_session", "read_body", "request_with_retry", "safe_url",
]
