"""Layer 5 tasks: ``vastkeep.polling.dispatch``, ``.refresh``, ``.confirm_absence``, ``.ensure`` and
``.poll_instance``.

Thin: build the process's :class:`~vastkeep.polling.Poller` and call it. ``dispatch`` is the one long-lived
poller: a bounded loop (:data:`DISPATCH_BUDGET_S`) under the ``poll-dispatcher`` lease that claims due
instances from the Redis schedule, polls them from the shared provider snapshot and hands over to a fresh
``dispatch`` message at the end (so no message is ever held longer than the budget, and a ``kill -9``
costs at most the heartbeat staleness + the supervision backoff: the supervision sweep of Layer 6 restarts
a dispatcher whose heartbeat (``poll-dispatcher``) went stale). A run that *lost* its lease (it stalled
past the TTL, or a newer dispatcher took over) hands over at once too: its continuation either takes the
free lease or finds the newer holder and exits, so polling never waits for supervision's backoff. A
worker's warm shutdown (Ctrl-C, ``systemctl stop``) ends the run at its next turn
(:func:`tasks.shutdown.stopping_check`) instead of holding the worker for the rest of the budget.
``refresh`` and ``confirm_absence`` are the only Layer 5 tasks that call Vast.ai (the listing; one ``show``
about an unlisted instance), each in its own worker slot, so the dispatcher never waits for the provider.
``ensure`` is an operator's tool (no longer on the beat schedule): it queues a ``dispatch`` at once when
nobody holds the lease. ``poll_instance`` makes one instance due now and wakes the dispatcher (one poll in
flight per instance stays true: the dispatcher's claim does the poll).
Each status change also goes out as the Celery event ``task-instance-status`` (Flower).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from tasks import cloud
from tasks.base import AnyTask, VastkeepTask, retry_on_redis, run_supervised
from tasks.shutdown import stopping_check
from vastkeep.polling import CONFIRM_TASK, DISPATCH_LEASE, Poller, PollPolicy, PollSchedule, ShowAnswers
from vastkeep.polling import confirm_absence as polling_confirm
from vastkeep.state.leases import LeaseManager
from vastkeep.supervision import mark_handover
from worker import wiring
from worker.app import app
from worker.limits import POLL_DISPATCH_RUN_S, limits_for

log = logging.getLogger("vastkeep.worker")
WHAT = "polling"
DISPATCH_BUDGET_S = POLL_DISPATCH_RUN_S
ENSURE_INTERVAL_S = 10.0
DISPATCH = "vastkeep.polling.dispatch"


@contextmanager
def poller(task: AnyTask | None = None) -> Iterator[Poller]:
    """The poller of this process (settings, store, events and a Vast.ai client from the wiring); its
    client is closed when the block ends."""
    res = wiring.resources()

    def send(name: str, kwargs: dict[str, object]) -> None:
        app.send_task(name, kwargs=kwargs)

    def notify(kind: str, fields: dict[str, object]) -> None:
        if task is not None:
            task.send_event(f"task-{kind}", retry=True, retry_policy=None, **fields)  # Celery's defaults

    vast = cloud.provider(res)
    try:
        yield Poller(res.store, PollPolicy.from_settings(res.settings), events=res.events, clock=res.clock,
                     announced=res.announced,
                     send=send, notify=notify, vast=vast)
    finally:
        cloud.close(vast)


# acks_late off for this one task: a dispatcher needs no redelivery (beat's ensure starts a new one within
# the lease TTL + 10 s, and the schedule lives in Redis), and a 50 s message held unacked is what kombu
# must restore when the broker connection drops, which crashed the worker in our Redis-restart test.
@app.task(name=DISPATCH, bind=True, base=VastkeepTask, max_retries=None, acks_late=False,
          **limits_for(DISPATCH, wiring.settings()))
def dispatch(self: VastkeepTask, budget_s: float = DISPATCH_BUDGET_S) -> dict[str, object]:
    """Poll every due instance for ``budget_s`` seconds, then hand over to the next ``dispatch``."""
    budget = max(0.1, min(float(budget_s), DISPATCH_BUDGET_S))

    res = wiring.resources()

    def go() -> dict[str, object]:
        with poller(self) as p:
            result = p.run(LeaseManager(res.redis, res.keys, res.clock), budget,
                           should_stop=stopping_check(res, self.request.hostname))
        if "skipped" not in result:  # done or lost: the continuation takes over now (a lost run's too)
            # supervision (Layer 6) counts the dispatcher alive while its continuation waits in the queue
            mark_handover(res.redis, res.keys, res.clock, DISPATCH_LEASE)
            # a run ended by the worker's warm shutdown leaves its continuation without an expiry: the
            # next start of a worker (or of `vastkeep up`, whose Redis keeps its data) resumes polling at once
            if result.get("stopped"):
                dispatch.apply_async(kwargs={"budget_s": budget_s})
            else:
                dispatch.apply_async(kwargs={"budget_s": budget_s}, expires=ENSURE_INTERVAL_S * 3)
        return result

    return run_supervised(self, go, WHAT, res, DISPATCH_LEASE)


@app.task(name="vastkeep.polling.refresh", bind=True, base=VastkeepTask, acks_late=False,
          **limits_for("vastkeep.polling.refresh", wiring.settings()))
def refresh(self: VastkeepTask) -> dict[str, object]:
    """Refresh the shared provider snapshot if it is due (single-flight under its lease); discovery."""

    def go() -> dict[str, object]:
        with poller(self) as p:
            return p.refresh(inline=True)

    return retry_on_redis(self, go, WHAT)


@app.task(name=CONFIRM_TASK, bind=True, base=VastkeepTask, acks_late=False,
          **limits_for(CONFIRM_TASK, wiring.settings()))
def confirm_absence(self: VastkeepTask, instance_id: str | int) -> dict[str, object]:
    """Ask Vast.ai (``show``) about one instance missing from the listing; the next poll applies it."""
    iid = str(instance_id)

    def go() -> dict[str, object]:
        if not iid.isdigit():
            return {"instance_id": iid, "error": "not an instance id"}
        res = wiring.resources()
        vast = cloud.provider(res)
        if vast is None:
            ShowAnswers(res.redis, res.keys).drop([iid])
            return {"instance_id": iid, "error": "no Vast.ai client (VAST_API_KEY unset)"}
        try:
            schedule = PollSchedule(res.redis, res.keys, res.clock)
            return dict(polling_confirm(res.redis, res.keys, vast, schedule, iid))
        finally:
            cloud.close(vast)

    return retry_on_redis(self, go, WHAT)


@app.task(name="vastkeep.polling.ensure", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.polling.ensure", wiring.settings()))
def ensure(self: VastkeepTask) -> dict[str, object]:
    """Queue a dispatcher when the dispatcher lease is free (an operator's tool; beat runs the sweep)."""

    def go() -> dict[str, object]:
        res = wiring.resources()
        if LeaseManager(res.redis, res.keys, res.clock).current(DISPATCH_LEASE) is not None:
            return {"dispatcher": "running"}
        dispatch.apply_async(expires=ENSURE_INTERVAL_S * 3)
        return {"dispatcher": "queued"}

    return retry_on_redis(self, go, WHAT)


@app.task(name="vastkeep.polling.poll_instance", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.polling.poll_instance", wiring.settings()))
def poll_instance(self: VastkeepTask, instance_id: str | int) -> dict[str, object]:
    """Poll one instance now (a lease taken, a keepalive failure, an operator): due now + wake-up."""
    iid = str(instance_id)

    def go() -> dict[str, object]:
        res = wiring.resources()
        p = Poller(res.store, PollPolicy.from_settings(res.settings), clock=res.clock)
        if not iid.isdigit() or not p.request_poll(iid):
            return {"instance_id": iid, "requested": False, "error": "no instance record"}
        running = LeaseManager(res.redis, res.keys, res.clock).current(DISPATCH_LEASE) is not None
        if not running:
            dispatch.apply_async(expires=ENSURE_INTERVAL_S * 3)
        return {"instance_id": iid, "requested": True, "dispatcher": "running" if running else "queued"}

    return retry_on_redis(self, go, WHAT)
