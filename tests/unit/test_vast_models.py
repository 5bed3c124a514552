"""Tolerant parsing of Vast.ai records: table-driven, no network."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.vast_stub import instance_record, offer_record
from vastkeep.core.errors import MalformedResponse, TransientError
from vastkeep.providers import RentOrder
from vastkeep.providers.vast_map import instance_from_stored, rent_env, to_instance, to_offer
from vastkeep.providers.vast_models import VastInstance, VastOffer, as_float, as_int, as_str, parse_ports


def test_documented_instance_parses_fully() -> None:
    inst = VastInstance.from_api(instance_record(7835610))
    assert inst.id == 7835610
    assert inst.label == "pool-comfy-7835610"
    assert inst.public_ip == "203.0.113.7"  # the trailing newline is gone
    assert inst.ssh_host == "ssh5.vast.ai" and inst.ssh_port == 15458
    assert inst.ports == {"22/tcp": 41231, "8188/tcp": 41234}
    assert inst.host_port(8188) == 41234 and inst.host_port("22/tcp") == 41231
    assert inst.host_port(18188) is None
    assert inst.direct_port_count == 10 and inst.num_gpus == 1 and inst.machine_id == 178
    assert inst.gpu_name == "RTX 4090"
    assert inst.dph_total == pytest.approx(0.412) and inst.reliability == pytest.approx(0.995)
    assert inst.start_date == pytest.approx(1761008618.22) and inst.uptime_mins == 42.0
    assert inst.is_ready and not inst.is_fatal and not inst.is_outbid and not inst.is_loading
    assert inst.raw["direct_port_start"] == 41230


@pytest.mark.parametrize(
    ("raw_ip", "expected"),
    [("203.0.113.7\n", "203.0.113.7"), ("  198.51.100.2\t", "198.51.100.2"), ("", None), ("   \n", None),
     (None, None), (12345, "12345"), (["1.2.3.4"], None)],
)
def test_public_ip_is_stripped_or_none(raw_ip: Any, expected: str | None) -> None:
    assert VastInstance.from_api(instance_record(1, public_ipaddr=raw_ip)).public_ip == expected


def test_public_ip_missing_field() -> None:
    rec = instance_record(1)
    del rec["public_ipaddr"]
    assert VastInstance.from_api(rec).public_ip is None


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        (None, {}),
        ({}, {}),
        ("8188:41234", {}),
        ([{"HostPort": "1"}], {}),
        ({"8188/tcp": []}, {}),
        ({"8188/tcp": None}, {}),
        ({"8188/tcp": [{"HostIp": "0.0.0.0"}]}, {}),  # no HostPort
        ({"8188/tcp": [{"HostPort": "abc"}]}, {}),
        ({"8188/tcp": [{"HostPort": "70000"}]}, {}),  # not a port
        ({"8188/tcp": [{"HostPort": 41234}]}, {"8188/tcp": 41234}),  # int instead of str
        ({"8188/tcp": [{"HostPort": " 41234 "}]}, {"8188/tcp": 41234}),
        ({"8188/tcp": [{"HostPort": ""}, {"HostIp": "::", "HostPort": "41235"}]}, {"8188/tcp": 41235}),
        ({"8188/tcp": {"HostPort": "41234"}}, {"8188/tcp": 41234}),  # a dict, not a list of dicts
        ({"8188/tcp": "41234"}, {"8188/tcp": 41234}),  # a bare port
        ({"8188": [{"HostPort": "41234"}]}, {"8188/tcp": 41234}),  # protocol missing
        ({"8188/TCP": [{"HostPort": "41234"}]}, {"8188/tcp": 41234}),
        ({"18188/tcp": [["junk"], {"HostPort": "41299"}]}, {"18188/tcp": 41299}),
        ({"22/tcp": [{"HostPort": "41231"}], "8188/tcp": "x"}, {"22/tcp": 41231}),
    ],
)
def test_ports_odd_shapes(ports: Any, expected: dict[str, int]) -> None:
    assert parse_ports(ports) == expected
    assert VastInstance.from_api(instance_record(1, ports=ports)).ports == expected


def test_ports_missing_field() -> None:
    rec = instance_record(1)
    del rec["ports"]
    assert VastInstance.from_api(rec).ports == {}


@pytest.mark.parametrize(("raw_id", "expected"), [(7, 7), ("7", 7), (" 42 ", 42), (12.0, 12), ("12.0", 12)])
def test_ids_are_coerced(raw_id: Any, expected: int) -> None:
    assert VastInstance.from_api(instance_record(1, id=raw_id)).id == expected
    assert VastOffer.from_api(offer_record(1, id=raw_id)).id == expected


@pytest.mark.parametrize("raw_id", [None, "", "abc", 0, -5, 1.5, True, [7], {"id": 7}, float("nan")])
def test_records_without_usable_id_are_malformed(raw_id: Any) -> None:
    with pytest.raises(MalformedResponse) as info:
        VastInstance.from_api(instance_record(1, id=raw_id))
    assert isinstance(info.value, TransientError)
    with pytest.raises(MalformedResponse):
        VastOffer.from_api(offer_record(1, id=raw_id))


@pytest.mark.parametrize("record", [None, [], "x", 5])
def test_non_object_records_are_malformed(record: Any) -> None:
    with pytest.raises(MalformedResponse):
        VastInstance.from_api(record)
    with pytest.raises(MalformedResponse):
        VastOffer.from_api(record)


def test_missing_everything_but_id() -> None:
    inst = VastInstance.from_api({"id": 3})
    assert inst == VastInstance(id=3)
    assert inst.ports == {} and inst.public_ip is None and inst.actual_status is None
    assert inst.is_loading and not inst.is_ready and not inst.is_fatal and not inst.is_outbid


@pytest.mark.parametrize(
    ("field", "value", "attr", "expected"),
    [
        ("ssh_port", "15458", "ssh_port", 15458),
        ("ssh_port", "port", "ssh_port", None),
        ("ssh_port", 0, "ssh_port", None),
        ("num_gpus", "2", "num_gpus", 2),
        ("num_gpus", {"n": 2}, "num_gpus", None),
        ("dph_total", "0.5", "dph_total", 0.5),
        ("dph_total", "cheap", "dph_total", None),
        ("dph_total", float("inf"), "dph_total", None),
        ("reliability2", None, "reliability", None),
        ("direct_port_count", "10", "direct_port_count", 10),
        ("direct_port_count", None, "direct_port_count", None),
        ("machine_id", "178", "machine_id", 178),
        ("start_date", "1761008618.5", "start_date", 1761008618.5),
        ("uptime_mins", [], "uptime_mins", None),
        ("label", 42, "label", "42"),
        ("label", "  pool-1 ", "label", "pool-1"),
        ("label", {"x": 1}, "label", None),
        ("actual_status", " Running ", "actual_status", "running"),
        ("actual_status", 3, "actual_status", "3"),
        ("gpu_name", None, "gpu_name", None),
    ],
)
def test_wrong_types_are_coerced_or_none(field: str, value: Any, attr: str, expected: Any) -> None:
    assert getattr(VastInstance.from_api(instance_record(1, **{field: value})), attr) == expected


def test_reliability_falls_back_to_old_field_name() -> None:
    rec = instance_record(1, reliability=0.9)
    del rec["reliability2"]
    assert VastInstance.from_api(rec).reliability == 0.9
    assert VastOffer.from_api({"id": 1, "reliability2": None, "reliability": "0.8"}).reliability == 0.8


ST = ("actual_status", "intended_status", "cur_state", "next_state", "status_msg")


@pytest.mark.parametrize(
    ("states", "ready", "fatal", "outbid", "loading"),
    [
        (("running", "running", "running", "running", "success"), True, False, False, False),
        ((None, "running", "running", "running", None), False, False, False, True),
        (("created", "running", "running", "running", ""), False, False, False, True),
        (("loading", "running", "running", "running", "pulling"), False, False, False, True),
        (("loading", "running", "running", "running", "Error response from daemon: OCI runtime create"),
         False, True, False, False),
        (("running", "running", "running", "running", "Error: boom"), True, True, False, False),
        (("offline", "running", "running", "running", None), False, True, False, False),
        (("exited", "running", "running", "running", None), False, True, False, False),
        (("stopped", "stopped", "stopped", "stopped", None), False, False, True, False),
        (("running", "stopped", "stopped", "stopped", None), False, False, True, False),
        (("stopped", "stopped", "running", "stopped", None), False, False, False, False),
        (("running", "stopped", "running", "running", None), False, False, False, False),  # stop requested
        (("unknown", "running", "running", "running", None), False, False, False, False),
        ((None, None, None, None, None), False, False, False, True),
        (("loading", "stopped", "stopped", "stopped", None), False, False, True, False),
        # What the API shows for a stopped instance (owner's stop, or outbid): the container has exited.
        (("exited", "stopped", "stopped", "stopped", "Exited (0)"), False, False, True, False),
        (("exited", "stopped", "running", "stopped", None), False, False, False, False),  # stopping
    ],
)
def test_status_predicates(states: tuple, ready: bool, fatal: bool, outbid: bool, loading: bool) -> None:
    inst = VastInstance.from_api({"id": 1, **dict(zip(ST, states, strict=True))})
    assert (inst.is_ready, inst.is_fatal, inst.is_outbid, inst.is_loading) == (ready, fatal, outbid, loading)


@pytest.mark.parametrize(
    ("actual", "intended", "stopped"),
    [("exited", "stopped", True), ("stopped", "stopped", True), ("stopped", "running", True),
     ("exited", "running", False), ("running", "running", False), (None, "stopped", True)],
)
def test_is_stopped_reads_intended_status(actual: str | None, intended: str, stopped: bool) -> None:
    inst = VastInstance.from_api({"id": 1, "actual_status": actual, "intended_status": intended})
    assert inst.is_stopped is stopped
    assert inst.is_fatal is (actual == "exited" and not stopped)


def test_raw_is_kept_but_not_in_repr_or_equality() -> None:
    a = VastInstance.from_api(instance_record(5, secret_note="do-not-print"))
    b = VastInstance.from_api(instance_record(5))
    assert "do-not-print" not in repr(a) and "raw" not in repr(a)
    assert a.raw["secret_note"] == "do-not-print"
    assert a == b
    with pytest.raises(AttributeError):
        a.id = 6  # type: ignore[misc]


def test_raw_is_a_copy() -> None:
    rec = instance_record(5)
    inst = VastInstance.from_api(rec)
    rec["label"] = "changed"
    assert inst.raw["label"] == "pool-comfy-5"


def test_offer_parses() -> None:
    offer = VastOffer.from_api(offer_record(617, dph_total="0.41", num_gpus="2", direct_port_count=None))
    assert (offer.id, offer.dph_total, offer.num_gpus, offer.direct_port_count) == (617, 0.41, 2, None)
    assert offer.gpu_name == "RTX 4090" and offer.reliability == 0.99 and offer.machine_id == 717


@pytest.mark.parametrize(
    ("fn", "value", "expected"),
    [(as_int, "  +5", 5), (as_int, "1e3", 1000), (as_int, "1.5", None), (as_int, False, None),
     (as_float, "nan", None), (as_float, "  2.5 ", 2.5), (as_float, True, None), (as_float, 3, 3.0),
     (as_str, "", None), (as_str, False, None), (as_str, 1.5, "1.5")],
)
def test_coercion_helpers(fn: Any, value: Any, expected: Any) -> None:
    assert fn(value) == expected


# ── the Vast.ai side of the provider seam (vast_map) ────────────────────────
STOPPED = {"cur_state": "stopped", "intended_status": "stopped", "next_state": "stopped"}


@pytest.mark.parametrize(("fields", "phase", "fatal"), [
    ({"actual_status": None}, "starting", None),
    ({"actual_status": "created"}, "starting", None),
    ({"actual_status": "loading"}, "loading", None),
    ({"actual_status": "running"}, "running", None),
    ({"actual_status": "frozen"}, "other", None),
    ({"actual_status": "offline"}, "other", "host offline"),
    ({"actual_status": "exited"}, "other", "container exited"),
    ({"actual_status": "running", "status_msg": "Error: OCI runtime create failed"}, "running",
     "provider error: Error: OCI runtime create failed"),
    ({"actual_status": "exited", **STOPPED}, "other", "container exited"),
    ({"actual_status": "running", **STOPPED}, "running", "outbid"),
    ({"actual_status": "running", "intended_status": "running", "next_state": "stopped"}, "running",
     "outbid: the provider is stopping it"),
])
def test_vast_rows_map_to_phase_and_fatal_reason(fields, phase, fatal) -> None:
    inst = to_instance(VastInstance.from_api({"id": 5, **fields}))
    assert (inst.phase, inst.fatal_reason, inst.status_word) == (phase, fatal, fields["actual_status"])


def test_the_normalised_instance_keeps_every_field_and_the_raw_row() -> None:
    raw = {"id": 7, "label": "vastkeep:default:0", "actual_status": "running", "intended_status": "running",
           "public_ipaddr": " 203.0.113.7\n", "ssh_host": "ssh5.vast.ai", "ssh_port": "15458",
           "ports": {"8188/tcp": [{"HostPort": "41234"}]}, "dph_total": 0.412, "reliability2": 0.99,
           "machine_id": 178, "gpu_name": "RTX 4090", "start_date": 1761008618.5}
    inst = to_instance(VastInstance.from_api(raw))
    assert (inst.public_ip, inst.ports, inst.ssh_proxy_host, inst.ssh_proxy_port) == (
        "203.0.113.7", {"8188/tcp": 41234}, "ssh5.vast.ai", 15458)
    assert (inst.price_per_hour, inst.reliability, inst.host_id, inst.gpu_name, inst.started_at) == (
        0.412, 0.99, 178, "RTX 4090", 1761008618.5)
    assert inst.raw == raw and inst.label == "vastkeep:default:0" and inst.is_running
    assert inst.signature == "running|running|None|None||203.0.113.7|8188/tcp=41234|vastkeep:default:0"


def test_a_snapshot_row_stored_before_the_seam_still_reads() -> None:
    """The old snapshot kept Vast.ai's trimmed row; it reads back as the same instance a fresh parse gives."""
    old_row = {"id": 7, "actual_status": "running", "intended_status": "running",
               "public_ipaddr": "203.0.113.7",
               "ports": {"8188/tcp": [{"HostPort": "41234"}]}, "ssh_host": "ssh5.vast.ai", "ssh_port": 15458,
               "dph_total": 0.4, "label": "vastkeep:default:0"}
    fresh = to_instance(VastInstance.from_api(old_row))
    assert instance_from_stored(json.loads(json.dumps(old_row))) == fresh
    assert instance_from_stored(json.loads(fresh.to_json())) == fresh


def test_offers_and_the_rent_env_keep_their_vast_shape() -> None:
    offer = to_offer(VastOffer.from_api({"id": 617, "dph_total": "0.41", "reliability2": 0.99,
                                         "direct_port_count": 0, "machine_id": 3, "gpu_name": "RTX 4090"}))
    assert (offer.price_per_hour, offer.direct_ports, offer.host_id) == (0.41, False, 3)
    env = rent_env(RentOrder(image="img", label="l", env={"COMFYUI_ARGS": "--listen"}))
    assert list(env.items()) == [("-p 8188:8188", "1"), ("-p 22:22", "1"), ("COMFYUI_ARGS", "--listen")]
