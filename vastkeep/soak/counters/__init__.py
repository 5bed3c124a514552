"""The soak's judges (pure): what the clients saw, what the faults did, what must never happen.

- ``base``: the vocabulary (:class:`ClientFailure`, :class:`Excused`, :class:`MustNever`), records, summaries,
  and the fault windows inside which an outcome is expected (the rules: ``base``'s docstring).
- ``clients``: :func:`judge_clients`, each client line a failure or an expected outcome.
- ``mustnever``: the must-never counts from independent sources (holds, ledger, remote logs, canaries).
- ``faults``: what the system observed of each fault (:func:`observe_instance_fault`, :func:`family_table`).


Nothing here reads a clock or a socket.
"""

from vastkeep.soak.counters.base import (
    CLIENT_FAILURE_KINDS,
    DETECTION_BOUND_S,
    LEASE_CLOCK_SLACK_S,
    MUST_NEVER_KINDS,
    PROCESS_GRACE_S,
    RECOVERY_GRACE_S,
    ClientFailure,
    ClientVerdict,
    Excused,
    FamilyRow,
    Hold,
    MustNever,
    Record,
    Summary,
    inside,
    instance_windows,
    iso_s,
    num,
    percentile,
    process_windows,
    summary,
    whole,
)
from vastkeep.soak.counters.clients import judge_clients
from vastkeep.soak.counters.faults import family_table, observe_api_fault, observe_instance_fault
from vastkeep.soak.counters.mustnever import (
    canary_hits,
    double_leases,
    double_rents,
    fence_regressions,
    lease_holds,
    log_diff,
    unknown_billing,
)

__all__ = [
    "CLIENT_FAILURE_KINDS",
    "DETECTION_BOUND_S",
    "LEASE_CLOCK_SLACK_S",
    "MUST_NEVER_KINDS",
    "PROCESS_GRACE_S",
    "RECOVERY_GRACE_S",
    "ClientFailure",
    "ClientVerdict",
    "Excused",
    "FamilyRow",
    "Hold",
    "MustNever",
    "Record",
    "Summary",
    "canary_hits",
    "double_leases",
    "double_rents",
    "family_table",
    "fence_regressions",
    "inside",
    "instance_windows",
    "iso_s",
    "judge_clients",
    "lease_holds",
    "log_diff",
    "num",
    "observe_api_fault",
    "observe_instance_fault",
    "percentile",
    "process_windows",
    "summary",
    "unknown_billing",
    "whole",
]
