"""vastkeep's own clients (VastClient, the token checks) against the simulator: they cannot tell it from
the real services. Plain imports: a broken client module fails these tests, it never skips them."""

from __future__ import annotations

import random

import pytest
import requests

from tests.fixtures.helpers import wait_for
from vastkeep.core.clock import FakeClock
from vastkeep.providers import http, vast
from vastkeep.tokens import checks


def test_vast_client_full_cycle(sim):
    from vastkeep.core.backoff import BackoffPolicy
    from vastkeep.core.errors import AuthError, NotFound

    sim.control.set_lifecycle(created_s=0, loading_s=0.1, boot_s=0)
    retry = http.RetryPolicy(max_attempts=4, backoff=BackoffPolicy(base_s=0.01, cap_s=0.05))
    client = vast.VastClient(
        sim.api_key,
        sim.vast_api_url,
        retry=retry,
        clock=FakeClock(),
        rng=random.Random(1),
        timeout_s=(2.0, 5.0),
    )
    with client:
        client.check_key()
        offers = client.search_offers(
            {"rentable": {"eq": True}, "gpu_name": {"eq": "RTX 4090"}, "direct_port_count": {"gte": 1}},
            limit=2,
        )
        assert 0 < len(offers) <= 2 and all(o.gpu_name == "RTX 4090" for o in offers)
        iid = client.rent(
            offers[0].id,
            image="vastai/comfy:test",
            label="pool-a",
            env={"-p 8188:8188": "1", "-p 22:22": "1", "-p 18188:18188": "1"},
        )
        def ready() -> vast.VastInstance | None:
            inst = client.show_instance(iid)
            assert not inst.is_fatal
            return inst if inst.is_ready else None

        inst = wait_for(ready, 5, f"instance {iid} ready", interval_s=0.02)
        assert inst.label == "pool-a" and inst.public_ip and inst.public_ip.startswith("127.")
        assert inst.host_port(8188) and inst.host_port("18188/tcp") and inst.host_port(22)
        assert inst.ssh_host and inst.ssh_port
        def answer() -> tuple[requests.Response] | None:  # ComfyUI boots right after "running"
            try:
                url = f"http://{inst.public_ip}:{inst.host_port(8188)}/system_stats"
                return (requests.get(url, timeout=5),)
            except requests.ConnectionError:
                return None

        (r,) = wait_for(answer, 5, "ComfyUI answering", interval_s=0.02)
        assert r.json()["devices"][0]["type"] == "cuda"
        assert [i.id for i in client.list_instances()] == [iid]
        client.set_label(iid, "pool-b")
        assert client.show_instance(iid).label == "pool-b"
        sim.control.rate_limit_burst(2)  # the client's own retry absorbs a short 429 burst
        assert client.show_instance(iid).id == iid
        client.stop(iid)
        stopped = client.show_instance(iid)
        assert stopped.is_stopped and not stopped.is_fatal and stopped.actual_status == "exited"
        client.start(iid)
        sim.control.outbid(iid)
        assert client.show_instance(iid).is_outbid
        sim.control.exit_instance(iid)
        assert client.show_instance(iid).is_fatal
        assert client.destroy(iid) is True
        assert client.destroy(iid) is False
        with pytest.raises(NotFound):
            client.show_instance(iid)
        seen = sim.control.requests_seen(service="vast")
        assert seen and all(r["auth"] == "bearer" and r["key_valid"] for r in seen)
    sim.control.invalidate_token("vast")
    with pytest.raises(AuthError), vast.VastClient(sim.api_key, sim.vast_api_url, retry=retry) as bad:
        bad.check_key()


def test_token_checks_against_the_simulator(sim):
    from vastkeep.core.settings import Secret

    specs = checks.check_specs(sim.vast_api_url, sim.base_url, sim.base_url)
    keys = {
        checks.VASTAI: sim.api_key,
        checks.HUGGINGFACE: sim.info["hf_token"],
        checks.CIVITAI: sim.info["civitai_token"],
    }

    def check(service: str) -> dict:
        return checks.run_check(specs[service], Secret(keys[service]), timeout_s=5, tested_at=lambda: "now")

    assert {s: check(s)["status"] for s in keys} == {s: checks.VALID for s in keys}
    sim.control.invalidate_token("hf")
    assert check(checks.HUGGINGFACE)["status"] == checks.INVALID
    sim.control.api_fault("civitai", 429, count=1)
    assert check(checks.CIVITAI)["status"] == checks.UNKNOWN
