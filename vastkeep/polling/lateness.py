"""How late polls start against their due time: the histogram buckets and the summary a dispatcher run
reports (``poll:stats`` keeps the buckets, ``late_le_<bound>``)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

#: Upper bounds (seconds) of the lateness histogram kept in the ``poll:stats`` hash (``late_le_<bound>``).
LATENESS_BOUNDS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def lateness_buckets(samples: Iterable[float]) -> dict[str, int]:
    """Histogram counts (``late_le_<bound>`` or ``late_gt_30.0``) of some lateness samples."""
    out: dict[str, int] = {}
    for value in samples:
        over = f"late_gt_{LATENESS_BOUNDS_S[-1]}"
        name = next((f"late_le_{b}" for b in LATENESS_BOUNDS_S if value <= b), over)
        out[name] = out.get(name, 0) + 1
    return out


def lateness_summary(samples: list[float]) -> dict[str, float]:
    """p50 / p99 / max lateness (seconds) of claimed polls against their due time."""
    if not samples:
        return {}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"lateness_p50_s": round(statistics.median(ordered), 4), "lateness_p99_s": round(p99, 4),
            "lateness_max_s": round(ordered[-1], 4)}


__all__ = ["LATENESS_BOUNDS_S", "lateness_buckets", "lateness_summary"]
