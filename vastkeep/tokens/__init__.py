"""Layer 2 — token management: validate Vast.ai, HuggingFace and Civitai tokens before they are needed.

- ``checks``: the HTTP check per service and the pure classification of its answer.
- ``manager``: ``TokenManager`` (Redis cache shared by all workers, runtime tokens, pre-flight).
- ``preflight``: ``vast_client(...)``, the only way to build a Vast.ai client; its ``rent`` runs the
  pre-flight.

Logger: ``vastkeep.tokens``.
"""

from vastkeep.tokens.checks import (
    CIVITAI,
    HUGGINGFACE,
    INVALID,
    SERVICES,
    UNCONFIGURED,
    UNKNOWN,
    VALID,
    VASTAI,
    TokenResult,
    TokenStatus,
    classify,
)
from vastkeep.tokens.manager import TokenManager, TokenUpdate, UpdateRefusal
from vastkeep.tokens.preflight import vast_client

__all__ = [
    "CIVITAI", "HUGGINGFACE", "INVALID", "SERVICES", "UNCONFIGURED", "UNKNOWN", "VALID", "VASTAI",
    "TokenManager", "TokenResult", "TokenStatus", "TokenUpdate", "UpdateRefusal", "classify", "vast_client",
]
