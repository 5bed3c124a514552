"""Warm-pool tasks: ``vastkeep.pool.reconcile`` (beat, every WARM_POOL_RECONCILE_INTERVAL_MS) and the client
leases ``vastkeep.pool.lease`` / ``renew_lease`` / ``release_lease`` (by name, same answers as the admin API).

Thin: build the reconciler from the process's resources and run one round. The round is also the process
that notices an expired client lease (at most one interval after it) and queues the instance's health check
(``vastkeep.ports.validate_instance``, sent by name through :func:`check_after_lease`). Besides the beat, the
polling flow sends ``reconcile(wake_at=...)`` when one of the pool's instances failed or its keepalive loss
passes the grace (``vastkeep/polling/flow.py``: ``Poller._wake_pool``), so a dead instance is replaced at
once. A round that finds another one running returns ``{"skipped": "another reconciler is running"}``. A
Vast.ai hiccup (TransientError) or a lost lease ends the round with ``{"error": ...}`` and is *not* retried:
the next beat, one interval later, is the retry, and a retry queued beside it would only find the lease held.
A Redis blip is retried with jitter. The lease tasks carry one request id per logical call (the task id,
which retries keep), so a retry answers with the first attempt's answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from tasks import cloud
from tasks.base import AnyTask, VastkeepTask, retry_on_redis
from vastkeep.core.errors import LeaseBusy, PermanentError, VastkeepError
from vastkeep.pool import PoolLeases, build_leases, build_reconciler
from vastkeep.proxy import endpoints
from worker import wiring
from worker.app import app
from worker.limits import limits_for, task_time_limits

WHAT = "warm-pool reconcile"
#: The health check after a client lease: Layer 3's port validation of that one instance.
CHECK_TASK = "vastkeep.ports.validate_instance"


def check_after_lease(instance_id: str) -> None:
    """The leasing flow's check port: queue the instance's port validation by name."""
    app.send_task(CHECK_TASK, kwargs={"instance_id": str(instance_id)})


RECONCILE = "vastkeep.pool.reconcile"
#: A wake-up due within this is run now (the queue hop costs about as much).
WAKE_SLACK_S = 0.05


@app.task(name=RECONCILE, bind=True, base=VastkeepTask, **limits_for(RECONCILE, wiring.settings()))
def reconcile(self: VastkeepTask, wake_at: float | None = None) -> dict[str, object]:
    """One reconcile round: rent to the desired size, replace what died, destroy idle excess.

    ``wake_at`` (epoch s): sent by the polling flow when one of our instances failed (now) or its keepalive
    loss passes the grace (then): a round due later is deferred to then (a countdown, never a sleep).
    """
    def go() -> dict[str, object]:
        res = wiring.resources()
        if wake_at is not None:
            wait_s = float(wake_at) - res.clock.now()
            if wait_s > WAKE_SLACK_S:
                self.apply_async(kwargs={"wake_at": wake_at}, countdown=wait_s,
                                 expires=wait_s + res.settings.warm_pool_reconcile_interval_s)
                return {"deferred": round(wait_s, 3)}
        vast = cloud.provider(res, events=res.events)
        try:
            return build_reconciler(res.settings, res.store, res.events, res.redis, res.keys, vast,
                                    res.clock, max_round_s=_round_limit_s(),
                                    check=check_after_lease).run(wake=wake_at is not None)
        finally:
            cloud.close(vast)

    return retry_on_redis(self, go, WHAT)


def _round_limit_s() -> float:
    """The round's hard time limit: its lease is renewed no longer than that."""
    return float(task_time_limits(wiring.settings())[RECONCILE].hard_s)


# ── client leases, callable by name (app.send_task) ─────────────────────────
# A lease id is the holder's capability to renew and release. Celery shows a task's arguments (task-sent and
# task-received events: the message's argsrepr/kwargsrepr, which only the *sender* sets) and a repr of its
# result (task-succeeded event, the worker's success log line) to anyone watching events (Flower). So:
# * results carrying a lease id are PrivateResult: the result backend stores the whole answer (the caller's
#   .get() has it), the repr everything else sees shows "lse_***";
# * callers of renew_lease / release_lease send the id with kwargsrepr redacted (docs/tasks.md). A renewal
#   whose id was sent in the clear is carried out *and* the lease gets a new id in the same Lua step (returned
#   privately; the exposed one is dead); a release ends the lease, so its exposed id is dead anyway.
REDACTED = "lse_***"


class PrivateResult(Mapping[str, object]):
    """A task result whose repr hides the lease id; kombu's JSON encoder stores it whole (``__json__``)."""

    def __init__(self, data: Mapping[str, object]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __json__(self) -> dict[str, object]:
        return dict(self._data)

    def __repr__(self) -> str:
        return repr({k: (_HIDDEN[k] if k in _HIDDEN and v else v) for k, v in self._data.items()})


#: What a result's repr shows instead of each capability (the endpoint URL carries its token).
_HIDDEN = {"leaseId": REDACTED, "endpointToken": endpoints.REDACTED, "endpointUrl": "…/c/ept_***/"}


def _exposed(task: AnyTask, lease_id: object) -> bool:
    """True when the message shows the lease id in its argsrepr/kwargsrepr (what events and Flower show)."""
    if not isinstance(lease_id, str) or len(lease_id) < 8:
        return False
    shown = f"{task.request.get('argsrepr') or ''} {task.request.get('kwargsrepr') or ''}"
    return lease_id in shown


def _leases() -> PoolLeases:
    res = wiring.resources()
    return build_leases(res.settings, res.redis, res.keys, res.clock, res.store, res.events,
                        check=check_after_lease)


def _request_id(task: AnyTask, given: str | None) -> str:
    """One id per logical call: the caller's, else the task id (kept by retries and redeliveries), so a
    retried or re-sent lease script answers with its first answer."""
    return given if given is not None else str(task.request.id)


def _refused(exc: VastkeepError) -> dict[str, object]:
    out: dict[str, object] = {"ok": False, "error": type(exc).__name__, "reason": exc.message}
    if isinstance(exc, LeaseBusy):
        hint = exc.data.get("retry_after_s")
        out["retryAfterS"] = int(hint) if isinstance(hint, int | float) and hint else 1
    return out


@app.task(name="vastkeep.pool.lease", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.pool.lease", wiring.settings()))
def lease(self: VastkeepTask, duration_s: int, client: str,
          request_id: str | None = None) -> Mapping[str, object]:
    """Lease a ready instance → ``{"ok": true, "leaseId", "instanceId", "connectionUrl", "leasedUntil",
    "fence", "client", "endpointToken", "endpointUrl"}`` (``leaseId`` and the endpoint shown redacted in
    events and logs), or ``{"ok": false,
    "error": "LeaseBusy", "reason", "retryAfterS"}``.

    Not retried when busy: the caller decides whether to wait ``retryAfterS``. ``request_id`` (default: the
    task id): a second task with the same id gets the first one's answer, never a second instance.
    """
    rid = _request_id(self, request_id)

    def go() -> Mapping[str, object]:
        try:
            res = wiring.resources()
            grant = _leases().grant(duration_s, client, request_id=rid)
            return PrivateResult({"ok": True, **endpoints.with_endpoint(
                grant.to_dict(), res.redis, res.keys, res.settings.warm_pool_name, res.settings.proxy_url,
                grant.leased_until)})
        except (LeaseBusy, PermanentError) as exc:
            return _refused(exc)

    return retry_on_redis(self, go, "lease")


@app.task(name="vastkeep.pool.renew_lease", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.pool.renew_lease", wiring.settings()))
def renew_lease(self: VastkeepTask, lease_id: str, duration_s: int = 600,
                request_id: str | None = None) -> Mapping[str, object]:
    """Extend a lease → ``{"ok": true, "instanceId", "leasedUntil", "fence"}`` or ``{"ok": false, ...}``
    (``NotFound``: unknown or expired; ``LeaseBroken``: the instance is being destroyed). Send the id with
    ``kwargsrepr`` redacted; if it was sent in the clear, the answer adds ``"rotated": true`` and the new
    ``leaseId`` to use from now on (the exposed id no longer works)."""
    rotate = _exposed(self, lease_id)
    rid = _request_id(self, request_id)

    def go() -> Mapping[str, object]:
        try:
            answer = _leases().renew(lease_id, duration_s, rotate=rotate, request_id=rid)
            res = wiring.resources()
            endpoints.follow_lease(res.redis, res.keys, res.settings.warm_pool_name,
                                   *endpoints.grant_of(answer))
            return PrivateResult({"ok": True, **answer})
        except PermanentError as exc:
            return _refused(exc)

    return retry_on_redis(self, go, "renew lease")


@app.task(name="vastkeep.pool.release_lease", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.pool.release_lease", wiring.settings()))
def release_lease(self: VastkeepTask, lease_id: str, request_id: str | None = None) -> dict[str, object]:
    """Give the instance back: ``{"ok": true, "instanceId", "released": true, "fence"}``, else ok false;
    its health check is queued at once. Send the id with ``kwargsrepr`` redacted (once released, an exposed
    id is worthless anyway)."""
    rid = _request_id(self, request_id)

    def go() -> dict[str, object]:
        try:
            answer = _leases().release(lease_id, request_id=rid)
            res = wiring.resources()
            endpoints.drop(res.redis, res.keys, res.settings.warm_pool_name, *endpoints.grant_of(answer))
            return {"ok": True, **answer}
        except PermanentError as exc:
            return _refused(exc)

    return retry_on_redis(self, go, "release lease")
