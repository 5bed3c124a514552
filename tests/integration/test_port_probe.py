"""Port probes against real loopback sockets: every classification, priority, firewall, SSRF guard."""

from __future__ import annotations

import logging
import time

import pytest

from vastkeep.core.errors import UnsafeTarget
from vastkeep.ports.candidates import Candidate, derive_candidates
from vastkeep.ports.probe import ProbeConfig
from vastkeep.ports.validator import FIREWALL_ERROR, PortValidator

TCP_S, HTTP_S = 0.3, 0.5


def validator(allow_loopback: bool = True, concurrency: int = 50) -> PortValidator:
    cfg = ProbeConfig(tcp_timeout_s=TCP_S, http_timeout_s=HTTP_S, allow_loopback=allow_loopback)
    return PortValidator(cfg, concurrency=concurrency)


@pytest.mark.parametrize(
    ("mode", "outcome", "stage", "error"),
    [
        ("ok", "ok", "done", None),
        ("chunked", "ok", "done", None),
        ("refused", "refused", "tcp", "TCP connection refused"),
        ("blackhole", "timeout", "tcp", "TCP connection timeout"),
        ("hang", "timeout", "http", "HTTP timeout (no response)"),
        ("reset", "reset", "http", "connection reset"),
        ("http500", "http_error", "http", "HTTP 500"),
        ("wrong_json", "wrong_body", "http", "response is not ComfyUI /system_stats"),
        ("not_json", "wrong_body", "http", "response is not JSON"),
    ],
)
def test_each_classification_from_a_real_socket(port_servers, mode, outcome, stage, error):
    lst = port_servers.open(mode)
    t0 = time.monotonic()
    pv = validator().validate([Candidate("mapped", lst.ip, lst.port)], "i-1")
    elapsed = time.monotonic() - t0
    (res,) = pv.candidates
    if mode == "reset" and res.stage == "tcp":  # the RST may win the race with asyncio's connect completion
        stage, error = "tcp", "TCP connection reset"
    assert (res.outcome, res.stage, pv.error) == (outcome, stage, error)
    assert pv.success is (outcome == "ok")
    if outcome == "ok":
        assert pv.connection_url == f"http://{lst.ip}:{lst.port}" and pv.kind == "mapped"
    # a TCP success is visible but never enough: connected-then-failed still fails
    assert res.tcp_ok is (stage != "tcp")
    if mode == "http500":
        assert res.http_status == 500
    if mode == "blackhole":
        assert TCP_S * 0.9 <= elapsed < TCP_S + 0.4
    if mode == "hang":
        assert HTTP_S * 0.9 <= elapsed < HTTP_S + TCP_S + 0.4


def test_priority_not_speed(port_servers):
    """direct down, mapped slow, fallback fast: mapped wins although fallback answered first."""
    direct = port_servers.open("refused", port=8188)
    mapped = port_servers.open("delay", ip=direct.ip, delay_s=0.15)
    fallback = port_servers.open("ok", ip=direct.ip)
    cands = derive_candidates(direct.ip, {"8188/tcp": mapped.port, "18188/tcp": fallback.port})
    pv = validator().validate(cands, "i-2")
    assert pv.success and pv.kind == "mapped" and pv.port == mapped.port
    assert pv.connection_url == f"http://{direct.ip}:{mapped.port}"
    by_kind = {r.kind: r for r in pv.candidates}
    assert by_kind["direct"].outcome == "refused"
    assert by_kind["fallback"].outcome == "ok"
    assert by_kind["fallback"].ms < by_kind["mapped"].ms  # it really was faster, and still lost


def test_direct_wins_and_slower_candidates_are_not_waited_for(port_servers):
    direct = port_servers.open("ok", port=8188)
    mapped = port_servers.open("blackhole", ip=direct.ip)
    fallback = port_servers.open("hang", ip=direct.ip)
    cands = derive_candidates(direct.ip, {"8188/tcp": mapped.port, "18188/tcp": fallback.port})
    t0 = time.monotonic()
    pv = validator().validate(cands)
    assert time.monotonic() - t0 < TCP_S  # did not sit out the black hole / the hang
    assert pv.success and pv.kind == "direct" and pv.port == 8188
    assert [r.outcome for r in pv.candidates] == ["ok", "skipped", "skipped"]


def test_tcp_ok_http_fail_is_not_chosen(port_servers):
    direct = port_servers.open("hang", port=8188)
    mapped = port_servers.open("http500", ip=direct.ip)
    fallback = port_servers.open("ok", ip=direct.ip)
    cands = derive_candidates(direct.ip, {"8188/tcp": mapped.port, "18188/tcp": fallback.port})
    pv = validator().validate(cands)
    assert pv.success and pv.kind == "fallback"
    assert [(r.kind, r.outcome, r.tcp_ok) for r in pv.candidates] == [
        ("direct", "timeout", True), ("mapped", "http_error", True), ("fallback", "ok", True)]


def test_firewall_detected_concurrently(port_servers, caplog):
    caplog.set_level(logging.INFO, logger="vastkeep.ports")
    direct = port_servers.open("blackhole", port=8188)
    mapped = port_servers.open("blackhole", ip=direct.ip)
    fallback = port_servers.open("blackhole", ip=direct.ip)
    cands = derive_candidates(direct.ip, {"8188/tcp": mapped.port, "18188/tcp": fallback.port})
    t0 = time.monotonic()
    pv = validator().validate(cands, "i-fw")
    elapsed = time.monotonic() - t0
    assert not pv.success and pv.firewall and pv.error == FIREWALL_ERROR
    assert elapsed < 2 * TCP_S  # three timeouts in parallel, not in a row
    assert "⚠️  Port validation failed: All ports blocked - firewall detected" in caplog.messages


def test_mixed_failures_are_not_a_firewall(port_servers):
    direct = port_servers.open("blackhole", port=8188)
    mapped = port_servers.open("refused", ip=direct.ip)
    pv = validator().validate(derive_candidates(direct.ip, {"8188/tcp": mapped.port}))
    assert not pv.firewall
    assert pv.error == f"direct 8188: TCP connection timeout; mapped {mapped.port}: TCP connection refused"


def test_guide_success_line_names_connected_port_and_kind(port_servers, caplog):
    caplog.set_level(logging.INFO, logger="vastkeep.ports")
    direct = port_servers.open("refused", port=8188)
    mapped = port_servers.open("ok", ip=direct.ip)
    validator().validate(derive_candidates(direct.ip, {"8188/tcp": mapped.port}), "i-3")
    assert caplog.messages == [f"✅ Port {mapped.port} (mapped) validated and accessible"]


@pytest.mark.parametrize("addr", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "192.168.0.1"])
def test_internal_addresses_refused_without_simulation(port_servers, addr):
    lst = port_servers.open("ok") if addr.startswith("127.") else None
    port = lst.port if lst else 8188
    target = lst.ip if lst else addr
    t0 = time.monotonic()
    with pytest.raises(UnsafeTarget) as info:
        validator(allow_loopback=False).validate([Candidate("mapped", target, port)], "i-ssrf")
    assert time.monotonic() - t0 < 0.1  # refused before any connect attempt
    assert "VASTKEEP_SIMULATED" in info.value.message
    if lst:
        assert lst.accepted == 0


@pytest.mark.parametrize("addr", ["169.254.169.254", "10.1.2.3", "192.168.0.1", "172.16.5.5", "100.64.0.1",
                                  "::ffff:169.254.169.254", "198.18.0.1", "192.0.0.8", "2002:a9fe:a9fe::1",
                                  "2001::1", "fec0::1"])
def test_simulation_opens_loopback_only(port_servers, addr):
    """VASTKEEP_SIMULATED admits 127.0.0.0/8 (where the simulator lives) and no other internal address."""
    lst = port_servers.open("ok")
    assert validator(allow_loopback=True).validate([Candidate("mapped", lst.ip, lst.port)]).success
    t0 = time.monotonic()
    with pytest.raises(UnsafeTarget) as info:
        validator(allow_loopback=True).validate([Candidate("mapped", addr, 8188)], "i-ssrf-sim")
    assert time.monotonic() - t0 < 0.1  # refused before any connect attempt
    assert "not even with VASTKEEP_SIMULATED" in info.value.message


def test_hostname_resolved_once_and_checked(port_servers):
    lst = port_servers.open("ok", ip="127.0.0.1")
    with pytest.raises(UnsafeTarget):
        validator(allow_loopback=False).validate([Candidate("mapped", "localhost", lst.port)])
    assert lst.accepted == 0
    pv = validator(allow_loopback=True).validate([Candidate("mapped", "localhost", lst.port)])
    assert pv.success and pv.connection_url == f"http://127.0.0.1:{lst.port}"  # the resolved IP


def test_each_host_is_resolved_exactly_once_and_only_that_address_is_contacted(port_servers, monkeypatch):
    """DNS rebinding: the resolver answers A first and B afterwards; every probe must still go to A.

    Two instances on two hostnames, three candidates each, every candidate connecting (two fail at HTTP,
    the fallback passes), so a lookup per candidate or per connect would show as a second resolver call
    and as connections on B's listeners, which sit on the same ports.
    """
    import socket as socket_mod
    from asyncio import base_events

    first, rebound, listeners, targets = {}, {}, {}, {}
    for host in ("a.comfy.test", "b.comfy.test"):
        direct = port_servers.open("http500", port=8188)
        mapped, fallback = port_servers.open("http500", ip=direct.ip), port_servers.open("ok", ip=direct.ip)
        on_a = [direct, mapped, fallback]
        b_direct = port_servers.open("ok", port=8188)  # another loopback address, same three ports, healthy
        on_b = [b_direct] + [port_servers.open("ok", ip=b_direct.ip, port=lst.port) for lst in on_a[1:]]
        first[host], rebound[host] = direct.ip, b_direct.ip
        listeners[host] = (on_a, on_b)
        targets[host] = derive_candidates(host, {"8188/tcp": mapped.port, "18188/tcp": fallback.port})
    calls: list[str] = []
    real = base_events.BaseEventLoop.getaddrinfo

    async def counting_getaddrinfo(self, host, port, *args, **kwargs):
        if host not in first:
            return await real(self, host, port, *args, **kwargs)
        calls.append(host)
        ip = first[host] if calls.count(host) == 1 else rebound[host]
        return [(socket_mod.AF_INET, socket_mod.SOCK_STREAM, 6, "", (ip, port or 0))]

    monkeypatch.setattr(base_events.BaseEventLoop, "getaddrinfo", counting_getaddrinfo)
    verdicts = validator().validate_many(targets)
    assert sorted(calls) == sorted(first)  # exactly one resolution per host, not per candidate
    for host, (on_a, on_b) in listeners.items():
        pv = verdicts[host]
        assert [r.outcome for r in pv.candidates] == ["http_error", "http_error", "ok"], host
        assert {r.address for r in pv.candidates} == {first[host]}
        assert pv.connection_url == f"http://{first[host]}:{on_a[2].port}"
        assert [lst.accepted for lst in on_a] == [1, 1, 1], host  # each request went to the first address
        assert [lst.accepted for lst in on_b] == [0, 0, 0], host  # the rebound address saw nothing


def test_unresolvable_hostname_is_a_failed_validation():
    pv = validator().validate([Candidate("mapped", "no-such-host.invalid", 41234)])
    assert not pv.success and pv.candidates[0].outcome == "unreachable"


def test_port_not_reported_is_never_probed(port_servers):
    ip_listener = port_servers.open("refused", port=8188)
    mapped = port_servers.open("ok", ip=ip_listener.ip)
    unreported = port_servers.open("ok", ip=ip_listener.ip)  # ComfyUI answers here, but Vast never said so
    cands = derive_candidates(ip_listener.ip, {"8188/tcp": mapped.port, "22/tcp": unreported.port})
    pv = validator().validate(cands)
    assert pv.success and pv.port == mapped.port
    assert unreported.accepted == 0
    assert unreported.port not in {r.port for r in pv.candidates}


def test_pool_bounded_concurrency_keeps_each_verdict(port_servers):
    targets = {}
    expected = {}
    for i, mode in enumerate(["ok", "http500", "blackhole", "ok", "refused", "wrong_json"] * 2):
        lst = port_servers.open(mode)
        targets[f"p{i}"] = [Candidate("mapped", lst.ip, lst.port)]
        expected[f"p{i}"] = mode == "ok"
    unsafe = {"bad": [Candidate("mapped", "10.0.0.1", 8188)]}
    v = PortValidator(ProbeConfig(tcp_timeout_s=TCP_S, http_timeout_s=HTTP_S, allow_loopback=True),
                      concurrency=3)
    got = v.validate_many(targets)
    assert {k: pv.success for k, pv in got.items()} == expected
    strict = PortValidator(ProbeConfig(tcp_timeout_s=TCP_S, http_timeout_s=HTTP_S), concurrency=3)
    bad = strict.validate_many(unsafe)["bad"]
    assert not bad.success and bad.error == "Unsafe target refused: private address"


# ── against the simulated cloud's real sockets ─────────────────────────────────────────────────────────────
def sim_candidates(sim, **opts):
    """Create a running sim instance; its candidates come from the Vast API object, as in production."""
    from vastkeep.providers.vast_models import VastInstance

    vi = VastInstance.from_api(sim.control.create_instance(running=True, **opts))
    return vi, derive_candidates(vi.public_ip, vi.ports)


@pytest.mark.parametrize(
    ("fault", "outcome", "stage", "error"),
    [(None, "ok", "done", None), ("crash", "refused", "tcp", "TCP connection refused"),
     ("blackhole", "timeout", "tcp", "TCP connection timeout"),
     ("hang", "timeout", "http", "HTTP timeout (no response)"),
     ("reset", "reset", "*", None), ("error500", "http_error", "http", "HTTP 500"),
     ("error503", "http_error", "http", "HTTP 503"),
     ("wrong_body", "wrong_body", "http", "response is not ComfyUI /system_stats")],
)
def test_sim_classifications(sim, fault, outcome, stage, error):
    """Every classification on the simulated cloud's own sockets, faults set through SimControl."""
    vi, cands = sim_candidates(sim)
    mapped = [c for c in cands if c.kind == "mapped"]
    if fault in ("crash", "hang"):
        sim.control.comfy(vi.id, fault, "8188/tcp")
    elif fault in ("blackhole", "reset"):
        sim.control.net(vi.id, fault, "8188/tcp")
    elif fault in ("error500", "error503"):
        sim.control.comfy_error(vi.id, status=int(fault[-3:]), endpoint="8188/tcp")
    elif fault == "wrong_body":
        sim.control.comfy_wrong_body(vi.id, endpoint="8188/tcp")
    pv = validator().validate(mapped, str(vi.id))
    (res,) = pv.candidates
    assert res.outcome == outcome and stage in ("*", res.stage)
    if error is not None:
        assert pv.error == error
    if outcome == "http_error":
        assert res.http_status == int(fault[-3:]) and res.tcp_ok


def test_sim_priority_and_skip(sim):
    vi, cands = sim_candidates(sim, direct_8188=False, port_18188=True)
    assert [c.kind for c in cands] == ["direct", "mapped", "fallback"]  # direct reported via 8188/tcp
    sim.control.slow_comfy(vi.id, 0.15, "8188/tcp")
    pv = validator().validate(cands, str(vi.id))
    assert pv.success and pv.kind == "mapped"  # direct refused; fallback faster but lower priority
    assert [r.outcome for r in pv.candidates] == ["refused", "ok", "ok"]
    vi2, cands2 = sim_candidates(sim, direct_8188=True, port_18188=True)
    pv2 = validator().validate(cands2, str(vi2.id))
    assert pv2.success and pv2.kind == "direct" and pv2.connection_url == f"http://{vi2.public_ip}:8188"


def test_sim_firewall_then_open(sim):
    vi, cands = sim_candidates(sim, direct_8188=True, port_18188=True)
    for ep in ("direct", "8188/tcp", "18188/tcp"):
        sim.control.firewall(vi.id, ep)
    pv = validator().validate(cands, str(vi.id))
    assert pv.firewall and pv.error == FIREWALL_ERROR
    sim.control.open_path(vi.id, "18188/tcp")
    pv = validator().validate(cands, str(vi.id))
    assert pv.success and pv.kind == "fallback"


def test_sim_tcp_ok_http_hang_not_chosen(sim):
    vi, cands = sim_candidates(sim, direct_8188=True)
    sim.control.hang_comfy(vi.id, "direct")
    pv = validator().validate(cands, str(vi.id))
    assert pv.success and pv.kind == "mapped"
    assert pv.candidates[0].outcome == "timeout" and pv.candidates[0].tcp_ok


def test_sim_addresses_refused_without_simulated_flag(sim):
    vi, cands = sim_candidates(sim)
    with pytest.raises(UnsafeTarget):
        validator(allow_loopback=False).validate(cands, str(vi.id))
