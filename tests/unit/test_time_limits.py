"""Issue 7 (c): every task's time limit is derived from the budgets of its work and covers the worst case."""

from __future__ import annotations

import pytest

import tasks  # noqa: F401 - registers every task
from vastkeep.core.settings import load_settings
from vastkeep.providers.http import RetryPolicy
from vastkeep.providers.vast import DEFAULT_RETRY, VastClient
from worker import wiring
from worker.app import app
from worker.limits import (
    HARD_MARGIN_S,
    SLACK_S,
    VAST_TIMEOUT_S,
    limits_for,
    limits_over_visibility,
    probe_budget_s,
    sweep_probe_deadline_s,
    task_time_limits,
    vast_call_budget_s,
)


def _settings(**env: str):
    return load_settings(environ=env, env_file=False)


def test_vast_call_budget_is_every_attempt_at_its_deadline_plus_the_backoff_ceilings() -> None:
    # 4 attempts × (5 + 30) s + ceilings 0.5 + 1 + 2 s before the 2nd, 3rd and 4th attempt
    assert vast_call_budget_s() == pytest.approx(4 * 35 + 3.5)
    assert vast_call_budget_s((1.0, 2.0), RetryPolicy(max_attempts=1)) == 3.0
    # the budget follows what the client really uses
    client = VastClient("k" * 16)
    assert client.timeout_s == VAST_TIMEOUT_S and client.retry == DEFAULT_RETRY
    client.close()


def test_port_task_limits_cover_a_vast_call_with_retries_and_the_probes() -> None:
    s = _settings()
    limits = task_time_limits(s)
    one = limits["vastkeep.ports.validate_instance"]
    assert one.soft_s >= vast_call_budget_s() + probe_budget_s(s, 3) + SLACK_S > 45  # was 45/60
    sweep = limits["vastkeep.ports.validate_pool"]
    assert sweep.soft_s >= vast_call_budget_s() + sweep_probe_deadline_s(s) + SLACK_S
    for limit in limits.values():
        assert limit.hard_s == limit.soft_s + HARD_MARGIN_S


def test_limits_follow_the_settings() -> None:
    slow = task_time_limits(_settings(PORT_TCP_TIMEOUT_MS="20000", PORT_HTTP_TIMEOUT_MS="40000"))
    fast = task_time_limits(_settings())
    assert slow["vastkeep.ports.validate_pool"].soft_s > fast["vastkeep.ports.validate_pool"].soft_s + 100
    assert slow["vastkeep.ports.validate_instance"].soft_s > fast["vastkeep.ports.validate_instance"].soft_s


def test_every_registered_task_has_its_derived_limits() -> None:
    table = task_time_limits(wiring.settings())  # what this process's tasks were given
    ours = {name: t for name, t in app.tasks.items()  # the product's tasks (not the tests' own)
            if name.startswith("vastkeep.") and type(t).__module__.startswith("tasks.")}
    assert {"vastkeep.system.ping", "vastkeep.system.heartbeat"} <= set(ours)
    assert set(ours) == set(table), "a task without a limit (or a limit without a task)"
    for name, task in ours.items():
        assert task.soft_time_limit and task.time_limit, name
        assert (task.soft_time_limit, task.time_limit) == (table[name].soft_s, table[name].hard_s), name


def test_a_task_without_an_entry_is_refused() -> None:
    with pytest.raises(KeyError, match="no time limit"):
        limits_for("vastkeep.new.thing", _settings())


def test_every_hard_limit_stays_below_the_visibility_timeout_by_default() -> None:
    assert limits_over_visibility(_settings()) == []
    huge = _settings(PORT_TCP_TIMEOUT_MS="600000", PORT_HTTP_TIMEOUT_MS="600000")
    assert "vastkeep.ports.validate_pool" in limits_over_visibility(huge)
