"""The product's own wiring on a cloud that is not Vast.ai: ``PROVIDER`` names a test-only cloud registered
in :mod:`vastkeep.providers.registry`, and the tasks (a real embedded Celery worker on real Redis) rent,
poll and replace on it without knowing.

What runs where: ``vastkeep.pool.reconcile`` and ``vastkeep.polling.refresh`` go through the worker
(``app.send_task``); the poll pass calls :func:`tasks.polling.poller` in this process (the exact wiring the
``dispatch`` task uses) instead of sending ``dispatch``, whose self-continuation would outlive the test in the
session's worker. The SSH fallback's provider fetch is the task module's own function, called here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.fixtures.helpers import wait_for
from tests.fixtures.second_cloud import SecondCloud
from vastkeep.core.errors import ConfigError
from vastkeep.providers import StubProvider, register_provider, unregister_provider
from vastkeep.providers.registry import ProviderParts, build_provider

SECOND = "second-test-cloud"


@pytest.fixture
def second_cloud(vk_celery_app: Any, vk_settings: Any) -> Iterator[SecondCloud]:
    """The :class:`SecondCloud` the product builds for ``PROVIDER=second-test-cloud`` (settings restored)."""
    from worker import wiring

    cloud = SecondCloud()
    built: list[ProviderParts] = []

    def builder(parts: ProviderParts) -> SecondCloud:
        built.append(parts)
        return cloud

    register_provider(SECOND, builder)
    wiring.configure(replace(vk_settings, provider=SECOND))
    cloud.built = built  # type: ignore[attr-defined]
    try:
        yield cloud
    finally:
        wiring.configure(vk_settings)
        unregister_provider(SECOND)


def test_a_pool_round_and_a_poll_pass_run_on_the_configured_cloud(vk_celery_worker: Any, vk_celery_app: Any,
                                                                   second_cloud: SecondCloud,
                                                                   store: Any) -> None:
    from tasks.polling import poller

    send = vk_celery_app.send_task
    store.set_desired_size(2)
    first = send("vastkeep.pool.reconcile").get(timeout=30)
    assert len(first["rented"]) == 2 and first["errors"] == [], first
    tags = sorted(r["tag"] for r in second_cloud.rows.values())
    assert tags == ["vastkeep:default:0", "vastkeep:default:1"]
    built = second_cloud.built  # type: ignore[attr-defined]
    assert built and built[-1].settings.provider == SECOND

    up, doomed = sorted(second_cloud.rows)
    second_cloud.activate(up, "127.0.0.1")  # a closed loopback port: the port check it queues fails fast
    second_cloud.set_state(doomed, "PREEMPTED")
    refreshed = send("vastkeep.polling.refresh").get(timeout=30)
    assert refreshed.get("refreshed") is True, refreshed
    with poller() as p:
        p.poll_batch(p.schedule.claim_due(100))
    running, failed = store.get_instance(str(up)), store.get_instance(str(doomed))
    assert running.status == "loading" and running.public_ip == "127.0.0.1"
    assert running.ports == {"8188/tcp": 30188, "22/tcp": 30022}
    assert running.ssh_proxy_host == "bastion.second.example"
    assert (failed.status, failed.error) == ("failed", "preempted")

    # the failure wakes a round at once (polling sends reconcile); one from here does the same work
    send("vastkeep.pool.reconcile").get(timeout=30)
    wait_for(lambda: doomed not in second_cloud.rows and len(second_cloud.rows) == 2, timeout_s=20,
             what="the preempted instance replaced on the second cloud")
    assert all(r["tag"].startswith("vastkeep:default:") for r in second_cloud.rows.values())


def test_the_ssh_fallback_reads_the_configured_clouds_container_log(vk_celery_app: Any, vk_settings: Any,
                                                                    store: Any) -> None:
    from tasks.ssh import _provider_fetch
    from vastkeep.providers import Instance
    from worker import wiring

    stub = StubProvider()
    stub.put(Instance(id=7))
    stub.logs[7] = "one\ntwo\nthree\n"
    register_provider(SECOND, lambda parts: stub)
    wiring.configure(replace(vk_settings, provider=SECOND))
    try:
        text = _provider_fetch(wiring.resources())("7", 2, lambda url: url)
    finally:
        wiring.configure(vk_settings)
        unregister_provider(SECOND)
    assert text == "two\nthree\n" and ("container_logs", 7) in stub.calls


def test_an_unknown_provider_names_the_variable_and_the_known_ones(vk_settings: Any, store: Any) -> None:
    with pytest.raises(ConfigError) as err:
        build_provider(ProviderParts(replace(vk_settings, provider="nimbus"), store))
    assert err.value.variable == "PROVIDER"
    assert "PROVIDER='nimbus'" in err.value.message and "vast" in err.value.message
