"""Time limits that fit the work: each task's soft/hard limit derived from the budgets of what it does.

A limit below the work's worst case kills work that was going to finish (and, on a prefork pool, the
process with it); a limit far above it lets a stuck task hold a worker slot for nothing. So every limit
here is computed, by the pure :func:`task_time_limits`, from the same numbers the work itself obeys:

* a Vast.ai call: every attempt at its full connect + read deadline, plus the largest backoff before each
  retry (``RetryPolicy``: 4 attempts × 35 s + 0.5 + 1 + 2 s = 143.5 s with the defaults);
* a port probe: the DNS deadline, then rounds of ``PORT_PROBE_CONCURRENCY`` probes, each slot held for
  its full TCP + HTTP deadline (PORT_TCP_TIMEOUT_MS + PORT_HTTP_TIMEOUT_MS);
* a pool sweep probes for at most :data:`SWEEP_PROBE_ROUNDS` such rounds (its own deadline, passed to the
  flow); what is not probed by then is left for the next sweep, and every verdict is written as it arrives;
* a token check: its own whole-call timeout plus the manager's grace (checks run in parallel);
* plus :data:`SLACK_S` for Redis round trips and scheduling. The hard limit comes :data:`HARD_MARGIN_S`
  after the soft one, the time the task has to clean up after ``SoftTimeLimitExceeded``.

Every task has an entry; :func:`limits_for` refuses a task name without one, so a new task cannot ship
without a limit. Time limits are enforced by the prefork (and gevent) pools only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

from celery import Celery

from vastkeep.core.backoff import backoff_ceiling
from vastkeep.core.settings import Settings
from vastkeep.ports.candidates import KINDS
from vastkeep.providers.http import RetryPolicy
from vastkeep.providers.vast import DEFAULT_RETRY
from vastkeep.tokens.manager import CHECK_POOL_SIZE, DEADLINE_GRACE_S, DEFAULT_CHECK_TIMEOUT_S

#: VastClient's default (connect, read) timeouts: what ``vast_client(settings, ...)`` builds with
VAST_TIMEOUT_S = (5.0, 30.0)
#: the probe phase's DNS deadline (``ProbeConfig.dns_timeout_s``)
DNS_TIMEOUT_S = 5.0
#: a pool sweep probes for at most this many rounds of PORT_PROBE_CONCURRENCY probes (the rest: next sweep)
SWEEP_PROBE_ROUNDS = 4
#: Redis round trips (records, leases, results), process scheduling
SLACK_S = 15.0
#: how long one keepalive shard runner holds its shard before handing over (tasks/keepalive.py)
KEEPALIVE_RUN_S = 300.0
#: how long one polling dispatcher runs before handing over (tasks/polling.py)
POLL_DISPATCH_RUN_S = 50.0
#: soft → hard: the time a task has to return a partial result after SoftTimeLimitExceeded
HARD_MARGIN_S = 15


class TaskLimits(TypedDict):
    """``@app.task`` keyword arguments for one task's time limits."""

    soft_time_limit: int
    time_limit: int


@dataclass(frozen=True)
class TimeLimit:
    """One task's limits (whole seconds, as Celery takes them) and the worst case they were derived from."""

    soft_s: int
    hard_s: int
    budget_s: float

    def options(self) -> TaskLimits:
        """``@app.task(**limit.options())``."""
        return {"soft_time_limit": self.soft_s, "time_limit": self.hard_s}


def vast_call_budget_s(timeout_s: tuple[float, float] = VAST_TIMEOUT_S,
                       retry: RetryPolicy = DEFAULT_RETRY) -> float:
    """Worst case of one Vast.ai call: every attempt at its full deadline, the largest backoffs between."""
    attempts = retry.max_attempts
    backoff = sum(backoff_ceiling(n, retry.backoff) for n in range(attempts - 1))
    return attempts * (float(timeout_s[0]) + float(timeout_s[1])) + backoff


def probe_budget_s(settings: Settings, probes: int, *, max_rounds: int | None = None) -> float:
    """Worst case of ``probes`` port probes under the bound (at most ``max_rounds`` rounds when given)."""
    concurrency = max(1, int(settings.port_probe_concurrency))
    rounds = max(1, math.ceil(probes / concurrency))
    if max_rounds is not None:
        rounds = min(rounds, max_rounds)
    per_round = (settings.port_tcp_timeout_ms + settings.port_http_timeout_ms) / 1000
    return DNS_TIMEOUT_S + rounds * per_round


def sweep_probe_deadline_s(settings: Settings) -> float:
    """How long one pool sweep probes before it stops and leaves the rest for the next sweep."""
    return probe_budget_s(settings, SWEEP_PROBE_ROUNDS * max(1, int(settings.port_probe_concurrency)),
                          max_rounds=SWEEP_PROBE_ROUNDS)


def token_checks_budget_s(services: int = 3) -> float:
    """Checks run in parallel on a bounded pool, each ended by its own whole-call timeout plus grace."""
    rounds = max(1, math.ceil(services / CHECK_POOL_SIZE))
    return rounds * (DEFAULT_CHECK_TIMEOUT_S + DEADLINE_GRACE_S)


def _limit(budget_s: float) -> TimeLimit:
    soft = math.ceil(budget_s + SLACK_S)
    return TimeLimit(soft_s=soft, hard_s=soft + HARD_MARGIN_S, budget_s=round(budget_s, 3))


def task_time_limits(settings: Settings) -> dict[str, TimeLimit]:
    """Pure: every vastkeep task name → its limits under ``settings`` (a ``Settings``)."""
    return {
        # one show_instance (only for a record without an address), then one instance's candidates
        "vastkeep.ports.validate_instance": _limit(vast_call_budget_s()
                                                   + probe_budget_s(settings, len(KINDS))),
        # one list_instances, then the sweep's own probe deadline (verdicts written as they arrive)
        "vastkeep.ports.validate_pool": _limit(vast_call_budget_s() + sweep_probe_deadline_s(settings)),
        "vastkeep.tokens.validate_all": _limit(token_checks_budget_s(3)),
        "vastkeep.tokens.validate_service": _limit(token_checks_budget_s(1)),
        # a shard runner's bounded run, then its flush and lease release (the stop is at the next tick)
        "vastkeep.keepalive.run_shard": _limit(KEEPALIVE_RUN_S
                                               + settings.comfyui_keepalive_timeout_ms / 1000),
        # one Redis round trip per shard
        "vastkeep.keepalive.ensure_shards": _limit(0.0),
        # the dispatcher's bounded loop, then its hand-over
        "vastkeep.polling.dispatch": _limit(POLL_DISPATCH_RUN_S + 10.0),
        # one Vast.ai listing (with retries) and its write to the snapshot
        "vastkeep.polling.refresh": _limit(vast_call_budget_s() + 5.0),
        # one show_instance (with retries) and a few Redis writes
        "vastkeep.polling.confirm_absence": _limit(vast_call_budget_s()),
        "vastkeep.polling.ensure": _limit(0.0),
        # one listing, then rents and destroys (a lost rent answer ends the round's renting)
        "vastkeep.pool.reconcile": _limit(vast_call_budget_s() + 40.0),
        # one Lua call each
        "vastkeep.pool.lease": _limit(5.0),
        "vastkeep.pool.renew_lease": _limit(5.0),
        "vastkeep.pool.release_lease": _limit(5.0),
        # one record: the snapshot row, a CAS write, at most one show_instance
        "vastkeep.polling.poll_instance": _limit(vast_call_budget_s()),
        # one collector run holds its link SSH_COLLECT_HOLD_S; SSH_COLLECT_TIME_LIMIT_S is its hard ceiling
        "vastkeep.ssh.collect": TimeLimit(soft_s=int(settings.ssh_collect_time_limit_s) - HARD_MARGIN_S,
                                          hard_s=int(settings.ssh_collect_time_limit_s),
                                          budget_s=float(settings.ssh_collect_hold_s)),
        # the records, the leases held, a send per instance that needs a collector
        "vastkeep.ssh.ensure_collectors": _limit(15.0),
        # Layer 6: the records, the heartbeats, the leases (fixed Redis calls) and one send per start
        "vastkeep.supervision.sweep": _limit(5.0),
        # a reply / one Redis write: the slack alone
        "vastkeep.system.ping": _limit(0.0),
        "vastkeep.system.heartbeat": _limit(0.0),
    }


def limits_for(name: str, settings: Settings) -> TaskLimits:
    """The ``soft_time_limit``/``time_limit`` options of task ``name``; KeyError for a task without one."""
    table = task_time_limits(settings)
    if name not in table:
        raise KeyError(f"task {name} has no time limit in worker.limits.task_time_limits: add one")
    return table[name].options()


def limits_over_visibility(settings: Settings) -> list[str]:
    """Tasks whose hard limit reaches CELERY_VISIBILITY_TIMEOUT_S: Redis would redeliver them while they
    still run (a second copy in parallel). Empty with the defaults; the worker warns at start otherwise."""
    vt = float(settings.celery_visibility_timeout_s)
    return sorted(name for name, limit in task_time_limits(settings).items() if limit.hard_s >= vt)


def apply_time_limits(celery_app: Celery, settings: Settings) -> None:
    """Set every registered vastkeep task's limits from ``settings`` (after the settings changed)."""
    table = task_time_limits(settings)
    for name, task in celery_app.tasks.items():
        if name in table:
            task.soft_time_limit, task.time_limit = table[name].soft_s, table[name].hard_s


__all__ = ["HARD_MARGIN_S", "SLACK_S", "SWEEP_PROBE_ROUNDS", "TaskLimits", "TimeLimit", "apply_time_limits",
           "limits_for", "limits_over_visibility", "probe_budget_s", "sweep_probe_deadline_s",
           "task_time_limits", "token_checks_budget_s", "vast_call_budget_s"]
