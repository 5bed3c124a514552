"""Layer 3 tasks: ``vastkeep.ports.validate_instance`` and ``vastkeep.ports.validate_pool``.

Thin: build the process's :class:`~vastkeep.ports.validator.PortValidator` from the settings, call the flow in
:mod:`vastkeep.ports.flow`, return small JSON. A failed validation is a *result*, not an error (the
instance stays "loading" and the next poll tries again), so it is never retried here. A Redis or Vast.ai
hiccup (TransientError / redis errors) is retried with full jitter; an unknown instance is not. An instance
Vast.ai no longer knows is marked "failed" by the flow and reported with ``gone_at_provider: true``. The
pool sweep lists the instances at Vast.ai once (when a key is configured) to keep every record's address
current, never fails on that refresh (it reports ``refresh_error`` and validates the rest), and runs under
the ``ports-sweep`` lease so sweeps queued at once never overlap. Neither task has a beat entry:
polling queues ``validate_instance`` for a running instance without a validated port, the end of a client
lease queues its instance's health check (``tasks/pool.py``), operators queue the sweep.
"""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from tasks import cloud
from tasks.base import VastkeepTask, retry_on_redis
from vastkeep.core.errors import NotFound
from vastkeep.ports import flow as port_flow
from vastkeep.ports.validator import PortValidator
from vastkeep.providers import Provider
from vastkeep.state.leases import LeaseManager
from worker import wiring
from worker.app import app
from worker.limits import limits_for, sweep_probe_deadline_s

WHAT = "port validation"


def _validator() -> PortValidator:
    res = wiring.resources()
    return PortValidator.from_settings(res.settings, clock=res.clock)


def _vast_client() -> Provider | None:
    """The configured cloud's client (for Vast.ai: with the effective key, update-token's runtime override
    first), else None: no refresh."""
    return cloud.provider(wiring.resources())


@app.task(name="vastkeep.ports.validate_instance", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.ports.validate_instance", wiring.settings()))
def validate_instance(self: VastkeepTask, instance_id: str | int) -> dict[str, object]:
    """Probe one instance's ComfyUI candidates; on success it gets ``connection_url`` and turns ready."""
    iid = str(instance_id)

    def go() -> dict[str, object]:
        res = wiring.resources()
        rec = res.store.get_instance(iid)
        vast = _vast_client() if rec is not None and not (rec.public_ip and rec.ports) else None
        try:
            return port_flow.validate_instance(res.store, res.events, _validator(), iid, vast=vast,
                                               clock=res.clock)
        except NotFound as exc:  # no record in the store (gone at Vast.ai is a result of the flow, not this)
            return {"instance_id": iid, "success": False, "port": None, "kind": None, "connection_url": None,
                    "error": exc.message, "firewall": False, "candidates": []}
        finally:
            cloud.close(vast)

    return retry_on_redis(self, go, WHAT)


@app.task(name="vastkeep.ports.validate_pool", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.ports.validate_pool", wiring.settings()))
def validate_pool(self: VastkeepTask) -> dict[str, object]:
    """Every non-destroyed instance at once, at most PORT_PROBE_CONCURRENCY sockets open.

    One sweep at a time (the ``ports-sweep`` lease): a sweep that finds it held returns
    ``{"skipped": "another sweep is running"}``. The probe phase has its own deadline
    (``worker.limits.sweep_probe_deadline_s``), inside the task's time limit; each verdict is written as it
    arrives, so a sweep stopped by its deadline or by the soft time limit keeps what it learned (the
    result then says ``interrupted: true`` with the counts so far; the lease is released either way).
    """
    progress = port_flow.SweepProgress()

    def go() -> dict[str, object]:
        res = wiring.resources()
        vast = _vast_client()  # one list_instances per sweep keeps every record's address current
        leases = LeaseManager(res.redis, res.keys, res.clock)
        try:
            return port_flow.validate_pool(res.store, res.events, _validator(), vast=vast, clock=res.clock,
                                           leases=leases, progress=progress,
                                           probe_deadline_s=sweep_probe_deadline_s(res.settings))
        finally:
            cloud.close(vast)

    try:
        return retry_on_redis(self, go, WHAT)
    except SoftTimeLimitExceeded:
        return port_flow.interrupted_sweep(progress, f"soft time limit ({self.soft_time_limit}s)")
