"""One vocabulary for an instance's status (arq's ``JobStatus`` is the model).

Values are the strings stored in Redis, sent in events and answered by the API: a ``StrEnum`` member
compares equal to, hashes like and serialises as its value, so records written before the enum existed
load and read the same. The sets the layers decide on are derived here, once.
"""

from __future__ import annotations

from enum import StrEnum


class InstanceStatus(StrEnum):
    """Where an instance is in its life, as vastkeep sees it."""

    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    GONE = "gone"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


S = InstanceStatus
#: Every status, in life order.
INSTANCE_STATUSES: tuple[InstanceStatus, ...] = tuple(InstanceStatus)
#: Rented, not yet serving: polled fast, collected over SSH, one phase for ``status_since``.
PROVISIONING_STATUSES: frozenset[InstanceStatus] = frozenset({S.STARTING, S.LOADING})
#: Billed and meant to serve (counted towards the pool's size unless sick).
LIVE_STATUSES: frozenset[InstanceStatus] = PROVISIONING_STATUSES | {S.READY, S.UNHEALTHY}
#: Dead by the provider's word or ours: destroyed and replaced.
DEAD_STATUSES: frozenset[InstanceStatus] = frozenset({S.FAILED, S.GONE})
#: On the way out or out: no probe, no collector, no lease.
ENDING_STATUSES: frozenset[InstanceStatus] = DEAD_STATUSES | {S.DESTROYING, S.DESTROYED}
#: A ComfyUI found lost leaves a ready instance in one of these (``unhealthy`` while lost).
SICK_STATUSES: frozenset[InstanceStatus] = frozenset({S.READY, S.UNHEALTHY})

__all__ = ["DEAD_STATUSES", "ENDING_STATUSES", "INSTANCE_STATUSES", "LIVE_STATUSES", "PROVISIONING_STATUSES",
           "SICK_STATUSES", "InstanceStatus"]
