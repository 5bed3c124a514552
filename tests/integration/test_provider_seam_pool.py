"""A warm-pool round and a polling pass, unchanged, on two providers that are not Vast.ai (real Redis).

The in-memory ``StubProvider`` and the test-only second cloud (``tests/fixtures/second_cloud.py``, its own
words) stand where the Vast.ai client stands in production: the reconciler rents to the desired size, the
poller's snapshot discovers and judges what the provider reports, and the next round replaces what failed.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.second_cloud import DRIVERS
from vastkeep.core.settings import load_settings
from vastkeep.polling import Poller, PollPolicy, ProviderSnapshot
from vastkeep.pool import PoolBook, Reconciler
from vastkeep.state import LeaseManager


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_a_pool_round_and_polling_run_unchanged_on_another_provider(name: str, store: Any,
                                                                    events: Any) -> None:
    cloud = DRIVERS[name]()
    provider = cloud.p
    settings = load_settings({"WARM_POOL_MIN_RELIABILITY": "0.9", "WARM_POOL_MAX_DPH": "1.0",
                              "WARM_POOL_GPU_NAME": "any"}, env_file=False)
    redis, keys = store.redis, store.keys
    store.set_desired_size(2)

    def round_() -> dict[str, Any]:
        rc = Reconciler(settings, store, events, LeaseManager(redis, keys), PoolBook(redis, keys,
                        settings.warm_pool_name), provider)
        return rc.run()

    first = round_()
    assert len(first["rented"]) == 2 and first["errors"] == []
    labels = sorted(i.label for i in provider.instances())
    assert labels == ["vastkeep:default:0", "vastkeep:default:1"]
    assert {r.status for r in store.list_instances()} == {"starting"}
    assert all(r.price_per_hour for r in store.list_instances())

    a, b = (i.id for i in provider.instances())
    cloud.to(a, "running")
    cloud.to(b, "fatal")
    snapshot = ProviderSnapshot(redis, keys, label_prefix=settings.warm_pool_label_prefix)
    poller = Poller(store, PollPolicy.from_settings(settings), events=events, vast=provider,
                    snapshot=snapshot)
    assert poller.refresh(force=True, inline=True)["refreshed"] is True
    poller.poll_batch(poller.schedule.claim_due(100))
    running, failed = store.get_instance(str(a)), store.get_instance(str(b))
    assert running.status == "loading"
    assert running.status_reason == "running at provider; port validation pending"
    assert running.public_ip == provider.instance(a).public_ip and running.ports
    assert running.ssh_proxy_host == provider.instance(a).ssh_proxy_host
    assert (failed.status, failed.error) == ("failed", provider.instance(b).fatal_reason)

    again = round_()
    assert [iid for iid, _ in again["destroyed"]] == [str(b)] and len(again["rented"]) == 1
    now = provider.instances()
    assert len(now) == 2 and b not in {i.id for i in now} and a in {i.id for i in now}
    assert all((i.label or "").startswith("vastkeep:default:") for i in now)
