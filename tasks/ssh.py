"""Layer 1 tasks: ``vastkeep.ssh.collect`` (one bounded collector run + its continuation) and
``vastkeep.ssh.ensure_collectors`` (beat: every instance that wants a collector has one).

Thin: the library (:mod:`vastkeep.ssh.flow`) holds the lease, streams, and says whether a continuation
should follow; this module sends it. A collector holds its SSH link for ``SSH_COLLECT_HOLD_S`` (capped a
minute below ``SSH_COLLECT_TIME_LIMIT_S``), then re-sends itself, so no task outlives the visibility
timeout and redelivery after a worker death re-runs one bounded link that resumes from the stored offset.
A run that finds the lease held returns ``skipped`` (the holder continues itself); a collector lost with a
``kill -9``'d worker comes back through ``ensure_collectors`` once its lease TTL (3 keepalive intervals)
has passed. ``collect`` runs on the ``vastkeep.ssh`` queue; ``ensure_collectors`` is short and runs on
``vastkeep.control`` (worker.config.CONTROL_TASKS), so it never waits behind long collectors.
"""

from __future__ import annotations

from collections.abc import Callable

from tasks import cloud
from tasks.base import VastkeepTask, retry_on_redis, run_supervised
from vastkeep.core.errors import ConfigError
from vastkeep.core.settings import Settings
from vastkeep.providers import Provider
from vastkeep.ssh import CollectorConfig, LogStore
from vastkeep.ssh import flow as ssh_flow
from vastkeep.ssh.provider_log import Fetch
from vastkeep.state import LeaseManager
from vastkeep.supervision import mark_handover
from worker import wiring
from worker.app import app
from worker.limits import TaskLimits, limits_for

WHAT = "ssh log collection"
#: How long one read of the provider's log API may wait for its result URL (within the collector's hold).
PROVIDER_LOG_WAIT_S = 20.0
COLLECT = "vastkeep.ssh.collect"


def _provider_fetch(res: wiring.Resources) -> Fetch:
    """The provider's log API for the fallback; the client is built on first use (a run whose SSH works
    never needs it) and is None-safe when no Vast.ai key is configured."""
    made: list[Provider | None] = []

    def fetch(instance_id: str, tail: int, url_guard: Callable[[str], str]) -> str:
        if not made:
            made.append(cloud.provider(res))
        client = made[0]
        if client is None:
            raise ConfigError("no Vast.ai key: the provider log API is not available")
        return client.container_logs(int(instance_id), tail, wait_s=PROVIDER_LOG_WAIT_S, url_guard=url_guard)

    return fetch


def send_options(settings: Settings) -> TaskLimits:
    """Per-message time limits from the settings (a decorator cannot read them at import time)."""
    limit = int(settings.ssh_collect_time_limit_s)
    return {"time_limit": limit, "soft_time_limit": max(1, limit - 30)}


@app.task(name=COLLECT, bind=True, base=VastkeepTask, **limits_for(COLLECT, wiring.settings()))
def collect(self: VastkeepTask, instance_id: str | int) -> dict[str, object]:
    """Collect one instance's logs for a bounded time, then hand over to a continuation."""
    iid = str(instance_id)
    res = wiring.resources()
    settings = res.settings
    if settings.ssh_key_path is None:
        return {"instance_id": iid, "skipped": "SSH_KEY_PATH is not set", "continue": False}
    pkey = res.private_key(settings.ssh_key_path)
    config = CollectorConfig.from_settings(settings)

    def go() -> dict[str, object]:
        logstore = LogStore(res.raw_redis, res.keys, settings.ssh_log_keep_bytes)
        return ssh_flow.collect_once(iid, redis_client=res.redis, keys=res.keys, store=res.store,
                                     logstore=logstore, config=config, pkey=pkey, events=res.events,
                                     clock=res.clock, while_ready=settings.ssh_collect_while_ready,
                                     provider_fetch=_provider_fetch(res),
                                     allow_loopback=bool(settings.vastkeep_simulated),
                                     provider_tail=settings.ssh_provider_log_tail, stop=res.shutting_down)

    result = run_supervised(self, go, WHAT, res, ssh_flow.heartbeat_name(iid))
    if result.get("continue"):
        # the continuation may wait in a busy vastkeep.ssh queue: supervision must not count that as a crash
        mark_handover(res.redis, res.keys, res.clock, ssh_flow.heartbeat_name(iid))
        collect.apply_async((iid,), **send_options(settings))
    return result


@app.task(name="vastkeep.ssh.ensure_collectors", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.ssh.ensure_collectors", wiring.settings()))
def ensure_collectors(self: VastkeepTask) -> dict[str, object]:
    """Start a collector for every starting/loading (and, if configured, ready) instance without one.

    An operator's tool since Layer 6: beat runs ``vastkeep.supervision.sweep``, which starts and restarts
    collectors with the guide's backoff; this one sends at once, without backoff or supervision records.
    """

    def go() -> dict[str, object]:
        res = wiring.resources()
        settings = res.settings
        if settings.ssh_key_path is None:
            return {"started": [], "skipped": "SSH_KEY_PATH is not set"}
        leases = LeaseManager(res.redis, res.keys, res.clock)
        ids = ssh_flow.instances_needing_collectors(res.store.list_instances(), leases, res.redis, res.keys,
                                                     settings.ssh_collect_while_ready)
        for iid in ids:
            collect.apply_async((iid,), **send_options(settings))
        return {"started": ids}

    return retry_on_redis(self, go, WHAT)
