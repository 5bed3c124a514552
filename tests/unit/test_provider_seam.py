"""The layers run unchanged on any Provider: the in-memory stub, and a test-only second cloud with its words.

Polling verdicts, the first record, the address, port candidates, SSH routes and the offer ranking are the
layers' own functions, called as they are; only the provider under them changes. The reconcile round on both
runs in ``tests/integration/test_provider_seam_pool.py`` (it needs Redis).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.second_cloud import DRIVERS
from vastkeep.core.errors import NotFound, RateLimited
from vastkeep.polling.decide import needs_port_validation, provider_verdict
from vastkeep.polling.snapshot import record_from_row, trim
from vastkeep.pool import OfferParams, pick_offer
from vastkeep.pool.roundparts import record_from_provider, rent_order
from vastkeep.ports.validator import candidates_for
from vastkeep.providers import (
    Instance,
    Offer,
    Phase,
    Provider,
    RentOrder,
    StubProvider,
    address_of,
    instance_from_stored,
)
from vastkeep.ssh import routes_for
from vastkeep.state import InstanceRecord

NOW = 1_767_225_600.0




@pytest.fixture(params=sorted(DRIVERS))
def cloud(request: pytest.FixtureRequest) -> Any:
    return DRIVERS[request.param]()


def rec(status: str, validated: bool = False) -> InstanceRecord:
    r = InstanceRecord("1", status=status, label="vastkeep:default:0")  # type: ignore[arg-type]
    if validated:
        r.connection_url = "http://198.51.100.7:8188"
        r.port_validation = {"success": True}
    return r


def test_both_are_providers(cloud: Any) -> None:
    assert isinstance(cloud.p, Provider)


@pytest.mark.parametrize(("stage", "status", "validated", "want", "layer3"), [
    ("new", "starting", False, "starting", False),
    ("loading", "starting", False, "loading", False),
    ("running", "loading", False, "loading", True),   # running, port not proven: Layer 3 must run
    ("running", "loading", True, "ready", True),  # proven, not yet stored as ready: this poll promotes it
    ("running", "ready", True, "ready", False),
    ("fatal", "ready", True, "failed", False),
    ("other", "ready", True, "unhealthy", False),
    ("running", "destroying", True, "destroying", False),  # another flow owns its end
])
def test_polling_verdicts_are_the_same_on_every_provider(cloud: Any, stage: str, status: str, validated: bool,
                                                         want: str, layer3: bool) -> None:
    iid = cloud.new()
    if stage != "new":
        cloud.to(iid, stage)
    row = cloud.p.instance(iid)
    verdict = provider_verdict(row, rec(status, validated), absence_confirmed=False, now=NOW)
    assert verdict.status == want
    assert needs_port_validation(row, rec(status, validated)) is layer3
    if stage == "fatal":
        assert verdict.reason == row.fatal_reason and verdict.reason
    if stage == "other":
        assert verdict.reason == f"provider status {row.status_word}"


def test_unlisted_is_gone_only_when_confirmed(cloud: Any) -> None:
    assert provider_verdict(None, rec("ready", True), absence_confirmed=True, now=NOW).status == "gone"
    assert provider_verdict(None, rec("ready", True), absence_confirmed=False, now=NOW).status == "ready"


def test_record_address_candidates_and_ssh_routes(cloud: Any) -> None:
    iid = cloud.new()
    cloud.to(iid, "running")
    inst: Instance = cloud.p.instance(iid)
    record = record_from_row(inst)
    assert (record.instance_id, record.label) == (str(iid), "vastkeep:default:0")
    assert record.public_ip == inst.public_ip
    assert record.price_per_hour == inst.price_per_hour and record.vast_status == inst.status_word
    assert address_of(inst) == {"public_ip": inst.public_ip, "ports": inst.ports,
                                "ssh_proxy_host": inst.ssh_proxy_host, "ssh_proxy_port": inst.ssh_proxy_port}
    ip = inst.public_ip
    mapped = inst.host_port(8188)
    assert [(c.kind, c.host, c.port) for c in candidates_for(record)] == [("direct", ip, 8188),
                                                                         ("mapped", ip, mapped)]
    assert candidates_for(record) == candidates_for(inst)
    routes = [(r.name, r.host, r.port) for r in routes_for(record)]
    assert routes == [("direct", ip, inst.host_port(22)), ("proxy", inst.ssh_proxy_host, inst.ssh_proxy_port)]
    assert [r.to_dict() for r in routes_for(record, last_good="proxy")][0]["name"] == "proxy"
    assert [r.name for r in inst.ssh_routes()] == ["direct", "proxy"]


def test_the_pool_adopts_and_ranks_the_same_way(cloud: Any) -> None:
    iid = cloud.new()
    assert record_from_provider(cloud.p.instance(iid), 0, "default", NOW).status == "starting"
    cloud.to(iid, "running")
    adopted = record_from_provider(cloud.p.instance(iid), 0, "default", NOW)
    assert adopted.status == "loading" and adopted.extra["port_8188"] == cloud.p.instance(iid).host_port(8188)
    assert adopted.extra["adopted"] is True and adopted.created_at is not None
    params = OfferParams(gpu_name=None, max_dph=1.0, min_reliability=0.9)
    offers = cloud.p.find_offers(params.spec())
    best = pick_offer(offers, params)
    assert best is not None and best.price_per_hour == min(o.price_per_hour for o in offers if o.direct_ports)


def test_a_snapshot_row_round_trips(cloud: Any) -> None:
    import json

    iid = cloud.new()
    cloud.to(iid, "running")
    inst = cloud.p.instance(iid)
    back = instance_from_stored(json.loads(trim(inst)))
    assert back == inst and trim(back) == trim(inst)


def test_the_pool_rents_what_the_settings_say() -> None:
    class S:
        warm_pool_image, warm_pool_disk_gb, warm_pool_onstart = "vastai/comfy:latest", 60, None
        warm_pool_comfyui_args = "--listen"

    order = rent_order(S(), "vastkeep:default:3")  # type: ignore[arg-type]
    assert order == RentOrder(image="vastai/comfy:latest", label="vastkeep:default:3", disk_gb=60,
                              publish=(8188, 22), env={"COMFYUI_ARGS": "--listen"}, onstart=None)


def test_the_stub_keeps_the_contract() -> None:
    stub = StubProvider([Offer(id=1, price_per_hour=0.1, direct_ports=True)])
    iid = stub.rent_offer(1, RentOrder(image="i", label="l"))
    assert stub.instance(iid).phase is Phase.STARTING and stub.instances()[0].label == "l"
    with pytest.raises(NotFound):
        stub.rent_offer(1, RentOrder(image="i", label="l"))  # the offer is taken
    stub.fail_next("instances", RateLimited("slow down"))
    with pytest.raises(RateLimited):
        stub.instances()
    assert stub.instances() != []
    before = stub.instance(iid).signature
    stub.boot(iid)
    assert stub.instance(iid).signature != before and stub.instance(iid).is_running
    stub.logs[iid] = "a\nb\nc\n"
    assert stub.container_logs(iid, tail=2) == "b\nc\n"
    assert stub.destroy(iid) is True and stub.destroy(iid) is False
    with pytest.raises(NotFound):
        stub.instance(iid)
    assert [c[0] for c in stub.calls][:2] == ["rent_offer", "instance"]
