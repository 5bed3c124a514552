"""Layer 5 — every instance followed by its own adaptive poll; the provider's word always wins.

- ``decide``: pure ``next_poll_interval``, ``provider_verdict``, ``absence_verdict``, ``is_ours``
  (table-tested).
- ``schedule``: the due-time sorted set in Redis, atomic claims (Lua) with tokens, "poll now".
- ``snapshot``: the shared provider listing, refreshed single-flight under a lease; discovery.
- ``absence``: ``show`` asked about an unlisted instance by its own task (``confirm_absence``), never
  by the dispatcher; the answers kept for the next poll.
- ``flow``: ``Poller`` (apply verdicts with CAS writes, reschedule, events, Layer 3 hand-off, the
  dispatcher loop).
- ``care``: ``adopt`` / ``forget`` (operators).

Logger: ``vastkeep.polling``.
"""

from vastkeep.polling.absence import CONFIRM_TASK, ShowAnswers, confirm_absence
from vastkeep.polling.care import adopt, forget
from vastkeep.polling.decide import (
    NOT_LIVE,
    Absence,
    ShowAnswer,
    Verdict,
    absence_verdict,
    is_ours,
    needs_port_validation,
    next_poll_interval,
    provider_verdict,
)
from vastkeep.polling.flow import DISPATCH_BUSY, DISPATCH_LEASE, Poller, PollPolicy
from vastkeep.polling.schedule import CLAIM_TIMEOUT_S, PollSchedule
from vastkeep.polling.snapshot import ProviderSnapshot

__all__ = [
    "CONFIRM_TASK", "Absence", "ShowAnswer", "ShowAnswers", "absence_verdict", "confirm_absence",
    "CLAIM_TIMEOUT_S", "DISPATCH_BUSY", "DISPATCH_LEASE", "NOT_LIVE", "PollPolicy", "PollSchedule",
    "Poller", "ProviderSnapshot", "Verdict", "adopt", "forget", "is_ours", "needs_port_validation",
    "next_poll_interval", "provider_verdict",
]
