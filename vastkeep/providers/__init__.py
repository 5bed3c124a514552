"""Clients for the outside world's APIs (a second cloud would sit beside Vast.ai here).

- ``http``: the requests session factory, bounded jittered retry, whole-call deadlines and body caps.
- ``vast``: ``VastClient``, the Vast.ai REST client (``VastApi`` is the interface flows are typed against).
- ``vast_models``: tolerant parsing of the API's instance and offer rows.
"""

from vastkeep.providers.http import RetryPolicy, make_session, read_body, request_with_retry, safe_url
from vastkeep.providers.vast import VastApi, VastClient
from vastkeep.providers.vast_models import VastInstance, VastOffer

__all__ = [
    "RetryPolicy", "VastApi", "VastClient", "VastInstance", "VastOffer", "make_session", "read_body",
    "request_with_retry", "safe_url",
]
