"""Layer 2 — token management: validate Vast.ai, HuggingFace and Civitai tokens before they are needed.

- ``checks``: the HTTP check per service and the pure classification of its answer.
- ``manager``: ``TokenManager`` (validation, runtime tokens, pre-flight), on ``cache`` (results in Redis
  shared by all workers), ``pools`` (``CheckPools``, the bounded check threads a process shares between its
  managers; the Vast.ai key's pace) and ``update`` (what a runtime update answers).
- ``preflight``: ``vast_client(...)``, the only way to build a Vast.ai client; its ``rent`` runs the
  pre-flight. ``vast_provider`` is the same client as the provider registry's builder for ``PROVIDER=vast``.

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
from vastkeep.tokens.manager import CheckPools, TokenManager, TokenUpdate, UpdateRefusal
from vastkeep.tokens.preflight import vast_client, vast_provider

__all__ = [
    "CIVITAI", "HUGGINGFACE", "INVALID", "SERVICES", "UNCONFIGURED", "UNKNOWN", "VALID", "VASTAI",
    "CheckPools", "TokenManager", "TokenResult", "TokenStatus", "TokenUpdate", "UpdateRefusal", "classify",
    "vast_client", "vast_provider",
]
