"""A pool sweep's bookkeeping: its running counts, and the worst-case budgets its lease TTLs come from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vastkeep.ports.validator import PortValidation, PortValidator
from vastkeep.providers import Provider

#: Lease slack on top of each phase's worst case, and the budget per verdict write (one CAS round trip).
SWEEP_SLACK_S = 30.0
SWEEP_WRITE_S = 0.01


@dataclass
class SweepProgress:
    """A sweep's running counts, kept up to date as verdicts are written (the caller's view of them)."""

    checked: int = 0
    passed: int = 0
    failed: int = 0
    failed_ids: list[str] = field(default_factory=list)
    firewall: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"checked": self.checked, "passed": self.passed, "failed": self.failed,
                "failed_ids": sorted(self.failed_ids)[:100], "firewall": self.firewall}


@dataclass
class Sweep:
    """One sweep's probe deadline and its running counts."""

    deadline_s: float | None
    progress: SweepProgress

    def __post_init__(self) -> None:  # a retried sweep counts afresh in the caller's progress
        self.progress.checked = self.progress.passed = self.progress.failed = self.progress.firewall = 0
        self.progress.failed_ids.clear()

    def count(self, iid: str, pv: PortValidation) -> None:
        p = self.progress
        p.checked += 1
        p.passed += 1 if pv.success else 0
        p.failed += 0 if pv.success else 1
        p.firewall += 1 if pv.firewall else 0
        if not pv.success:
            p.failed_ids.append(iid)


def interrupted_sweep(progress: SweepProgress, why: str) -> dict[str, object]:
    """The result of a sweep stopped from outside (a soft time limit): what it had written so far."""
    return {"interrupted": True, "reason": why, **progress.to_dict()}


def refresh_budget_s(vast: Provider | None) -> float:
    """Worst case of one ``instances()`` call: every attempt at its full timeouts, the longest backoffs."""
    if vast is None:
        return 0.0
    connect_s, read_s = getattr(vast, "timeout_s", (5.0, 30.0))
    retry = getattr(vast, "retry", None)
    attempts = int(getattr(retry, "max_attempts", 1))
    cap_s = float(getattr(getattr(retry, "backoff", None), "cap_s", 0.0))
    return attempts * (connect_s + read_s) + (attempts - 1) * cap_s


def probe_budget_s(validator: PortValidator, probes: int) -> float:
    """Worst case of probing ``probes`` candidates: one DNS deadline, then rounds of the bound, each slot
    held for its full TCP + HTTP deadline."""
    cfg = validator.config
    rounds = max(1, math.ceil(probes / validator.concurrency))
    return cfg.dns_timeout_s + rounds * (cfg.tcp_timeout_s + cfg.http_timeout_s)


def phase_ttl_ms(phase_s: float, writes: int = 0) -> int:
    """A phase's lease TTL: its worst case, the verdict writes after it, and some slack."""
    return int((phase_s + writes * SWEEP_WRITE_S + SWEEP_SLACK_S) * 1000)


__all__ = ["SWEEP_SLACK_S", "SWEEP_WRITE_S", "Sweep", "SweepProgress", "interrupted_sweep", "phase_ttl_ms",
           "probe_budget_s", "refresh_budget_s"]
