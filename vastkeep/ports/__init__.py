"""Layer 3 — port validation: find the address at which an instance's ComfyUI really answers.

- ``candidates``: the guide's candidate order (direct → mapped → fallback) and the SSRF guard.
- ``probe``: asyncio TCP + ``GET /system_stats`` probes, every await under a deadline.
- ``validator``: pure ``classify_probe`` (refused/timeout/reset/http_error/wrong_body, firewall) and
  ``PortValidator`` (bounded concurrency over a pool).
- ``flow``: the store/provider flow: CAS writes of each verdict, the sweep lease.

Logger: ``vastkeep.ports``.
"""

from vastkeep.ports import flow
from vastkeep.ports.candidates import Candidate, derive_candidates, unsafe_reason
from vastkeep.ports.probe import ProbeConfig, ProbeResult, is_comfyui_stats
from vastkeep.ports.validator import (
    FIREWALL_ERROR,
    HANG_ERROR,
    PortValidation,
    PortValidator,
    candidates_for,
    classify_probe,
)

__all__ = [
    "FIREWALL_ERROR", "HANG_ERROR", "Candidate", "PortValidation", "PortValidator", "ProbeConfig",
    "ProbeResult",
    "candidates_for", "classify_probe", "derive_candidates", "flow", "is_comfyui_stats", "unsafe_reason",
]
