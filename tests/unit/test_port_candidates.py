"""Candidate derivation (the guide's order, provider data only) and the SSRF address guard."""

from __future__ import annotations

import ipaddress

import pytest

from vastkeep.core.errors import UnsafeTarget
from vastkeep.ports.candidates import (
    Candidate,
    check_address,
    derive_candidates,
    is_allowed_target,
    parse_ip,
    unsafe_reason,
)

IP = "203.0.113.7"


@pytest.mark.parametrize(
    ("public_ip", "ports", "expected"),
    [
        # all three, in the guide's order whatever the dict order
        (IP, {"18188/tcp": 41235, "22/tcp": 41231, "8188/tcp": 41234},
         [("direct", 8188), ("mapped", 41234), ("fallback", 41235)]),
        # Vast's raw list shape and string ports are tolerated
        (IP + "\n", {"8188/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41234"}]},
         [("direct", 8188), ("mapped", 41234)]),
        # mapping to 8188 itself is the direct candidate, not tried twice
        (IP, {"8188/tcp": 8188, "18188/tcp": 41235}, [("direct", 8188), ("fallback", 41235)]),
        # no 8188/tcp reported: no direct guess, only what was reported
        (IP, {"18188/tcp": 41235}, [("fallback", 41235)]),
        # fallback equal to the mapped port is not tried twice
        (IP, {"8188/tcp": 41234, "18188/tcp": 41234}, [("direct", 8188), ("mapped", 41234)]),
        # loading: ports empty or missing, no IP → nothing to probe
        (IP, {}, []),
        (IP, None, []),
        (None, {"8188/tcp": 41234}, []),
        ("  ", {"8188/tcp": 41234}, []),
        # garbage ports are dropped, not guessed
        (IP, {"8188/tcp": "nope", "18188/tcp": 70000}, [("direct", 8188)]),
        (IP, {"8188/tcp": [], "18188/tcp": [{"HostIp": "0.0.0.0"}]}, [("direct", 8188)]),
        # only SSH reported: nothing for ComfyUI
        (IP, {"22/tcp": 41231}, []),
    ],
)
def test_derive_candidates(public_ip, ports, expected):
    cands = derive_candidates(public_ip, ports)
    assert [(c.kind, c.port) for c in cands] == expected
    assert all(c.host == IP for c in cands)
    assert [c.priority for c in cands] == sorted(c.priority for c in cands)


def test_is_allowed_target_only_reported_pairs():
    cands = derive_candidates(IP, {"8188/tcp": 41234})
    assert is_allowed_target(IP, 41234, cands)
    assert is_allowed_target(IP, 8188, cands)
    assert not is_allowed_target(IP, 22, cands)
    assert not is_allowed_target("203.0.113.8", 41234, cands)


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("127.0.0.1", "loopback address"),
        ("127.3.4.5", "loopback address"),
        ("::1", "loopback address"),
        ("::ffff:127.0.0.1", "loopback address"),
        ("10.1.2.3", "private address"),
        ("172.16.0.9", "private address"),
        ("172.31.255.255", "private address"),
        ("192.168.1.1", "private address"),
        ("100.64.0.1", "private address"),
        ("fd00::1", "private address"),
        ("169.254.169.254", "link-local address"),
        ("fe80::1", "link-local address"),
        ("224.0.0.1", "multicast address"),
        ("ff02::1", "multicast address"),
        ("0.0.0.0", "unspecified address"),
        ("::", "unspecified address"),
        ("0.1.2.3", "private address"),
        ("240.0.0.1", "reserved address"),
        ("255.255.255.255", "reserved address"),
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("203.0.113.7", None),
        ("2606:4700::1111", None),
    ],
)
def test_unsafe_reason_without_simulation(addr, reason):
    assert unsafe_reason(ipaddress.ip_address(addr), allow_loopback=False) == reason


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        # the simulator's address space: all of 127.0.0.0/8 (also written IPv4-mapped)
        ("127.0.0.1", None),
        ("127.1.2.3", None),
        ("127.255.255.254", None),
        ("::ffff:127.3.4.5", None),
        # public addresses are fine with or without simulation
        ("8.8.8.8", None),
        ("203.0.113.7", None),
        # everything else internal stays refused in simulation: cloud metadata, RFC 1918, CGNAT, ...
        ("169.254.169.254", "link-local address"),
        ("169.254.1.1", "link-local address"),
        ("fe80::1", "link-local address"),
        ("10.0.0.1", "private address"),
        ("172.16.0.9", "private address"),
        ("192.168.1.1", "private address"),
        ("100.64.0.1", "private address"),
        ("fd00::1", "private address"),
        ("0.1.2.3", "private address"),
        ("::ffff:10.0.0.1", "private address"),
        ("::1", "loopback address"),  # IPv6 loopback: the simulator never uses it
        ("240.0.0.1", "reserved address"),
        ("224.0.0.1", "multicast address"),
        ("ff02::1", "multicast address"),
        ("0.0.0.0", "unspecified address"),
        ("::", "unspecified address"),
    ],
)
def test_simulation_allows_only_ipv4_loopback(addr, reason):
    assert unsafe_reason(ipaddress.ip_address(addr), allow_loopback=True) == reason


@pytest.mark.parametrize(
    ("addr", "allow_loopback", "hint"),
    [
        ("127.0.0.1", False, "allowed only with VASTKEEP_SIMULATED"),
        ("10.0.0.1", False, "never probed, not even with VASTKEEP_SIMULATED"),
        ("169.254.169.254", True, "never probed, not even with VASTKEEP_SIMULATED"),
    ],
)
def test_refusal_message_says_whether_simulation_would_help(addr, allow_loopback, hint):
    with pytest.raises(UnsafeTarget) as info:
        check_address(ipaddress.ip_address(addr), allow_loopback=allow_loopback)
    assert info.value.message.endswith(f"({hint})")


def test_check_address_raises_unsafe_target_with_data():
    with pytest.raises(UnsafeTarget) as info:
        check_address(ipaddress.ip_address("169.254.169.254"), allow_loopback=False, instance_id="42")
    assert info.value.reason == "link-local address"
    assert info.value.instance_id == "42"
    assert info.value.to_dict()["address"] == "169.254.169.254"
    check_address(ipaddress.ip_address("8.8.8.8"), allow_loopback=False)  # no raise


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.2.3.4", "1.2.3.4"), (" 1.2.3.4\n", "1.2.3.4"), ("[::1]", "::1"), ("::ffff:10.0.0.1", "10.0.0.1"),
     ("ssh5.vast.ai", None), ("", None)],
)
def test_parse_ip(text, expected):
    ip = parse_ip(text)
    assert (str(ip) if ip else None) == expected


def test_candidate_priority_follows_kind():
    assert Candidate("direct", IP, 1).priority < Candidate("mapped", IP, 1).priority < Candidate(
        "fallback", IP, 1).priority
