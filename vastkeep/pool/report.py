"""What one reconcile round did: a small JSON result for the task, and two rounds under one lease as one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class RoundReport:
    """What one round did (a task's small JSON result)."""

    rented: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    destroyed: list[list[str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    wait: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    plan: dict[str, object] = field(default_factory=dict)
    safe_mode: bool = False
    fence: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"rented": self.rented, "adopted": self.adopted, "destroyed": self.destroyed,
                "unknown": self.unknown, "wait": self.wait, "errors": self.errors, "plan": self.plan,
                "safeMode": self.safe_mode, "fence": self.fence}

    def then(self, again: RoundReport) -> RoundReport:
        """This round and the next under the same lease as one: what both did; the plan, waits and safe
        mode of the last."""
        return replace(again, rented=self.rented + again.rented, adopted=self.adopted + again.adopted,
                       destroyed=self.destroyed + again.destroyed, unknown=self.unknown + again.unknown,
                       errors=self.errors + again.errors)


__all__ = ["RoundReport"]
