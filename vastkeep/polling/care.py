"""Layer 5, operators: take an unlabelled instance into our care (adopt) or release one (forget).

Nothing is done to the instance itself either way; discovery honours both from then on (``adopted`` and
``forgotten`` sets in Redis).
"""

from __future__ import annotations

from vastkeep.core.clock import iso
from vastkeep.core.errors import NotFound
from vastkeep.polling.schedule import PollSchedule
from vastkeep.polling.snapshot import ProviderSnapshot, record_from_row
from vastkeep.state import InstanceRecord, PollMarks, StateStore


def adopt(store: StateStore, snapshot: ProviderSnapshot, schedule: PollSchedule,
          instance_id: str) -> InstanceRecord:
    """Take an unlabelled instance into our care: ``NotFound`` when not in the provider listing,
    ``ValueError`` when it already has a record."""
    iid = str(instance_id)
    if store.get_instance(iid) is not None:
        raise ValueError(f"instance {iid} is already ours")
    row = snapshot.row(iid)
    if row is None:
        raise NotFound(f"instance {iid} is not in the provider listing (refreshed at "
                       f"{iso(snapshot.fetched_at()) or 'never'})", instance_id=iid)
    PollMarks(store.redis, store.keys).adopt(iid)
    if not store.create_instance(record_from_row(row)):
        raise ValueError(f"instance {iid} is already ours")
    schedule.poll_now(iid)
    rec = store.get_instance(iid)
    assert rec is not None
    return rec


def forget(store: StateStore, schedule: PollSchedule, instance_id: str) -> bool:
    """Release an instance from our care: its record goes, discovery leaves it alone; nothing is done to
    the instance itself. False when there was no record."""
    iid = str(instance_id)
    PollMarks(store.redis, store.keys).forget(iid)
    existed = store.delete_instance(iid)
    schedule.remove(iid)
    return existed


__all__ = ["adopt", "forget"]
