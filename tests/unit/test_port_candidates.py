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


NOT_GLOBAL = "not a globally routable address"

# Every address a provider could report, and what the guard says about it (None = may be probed).
GUARD_TABLE = [
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
    ("fec0::1", "private address"),  # deprecated IPv6 site-local: passed before
    ("0.1.2.3", "private address"),
    ("169.254.169.254", "link-local address"),
    ("fe80::1", "link-local address"),
    ("224.0.0.1", "multicast address"),
    ("ff02::1", "multicast address"),
    ("0.0.0.0", "unspecified address"),
    ("::", "unspecified address"),
    ("240.0.0.1", "reserved address"),
    ("255.255.255.255", "reserved address"),
    ("::1.2.3.4", "reserved address"),  # deprecated IPv4-compatible IPv6
    # IANA special-purpose blocks that are not globally reachable (several passed before)
    ("198.18.0.1", NOT_GLOBAL),  # benchmarking
    ("198.19.255.254", NOT_GLOBAL),
    ("192.0.0.8", NOT_GLOBAL),  # IETF protocol assignments
    ("192.0.2.1", NOT_GLOBAL),  # documentation
    ("198.51.100.9", NOT_GLOBAL),
    ("203.0.113.7", NOT_GLOBAL),
    ("192.88.99.1", NOT_GLOBAL),  # deprecated 6to4 relay anycast
    ("2001:db8::1", NOT_GLOBAL),
    ("100::1", "reserved address"),  # discard-only
    ("2001:20::1", NOT_GLOBAL),  # ORCHIDv2
    ("64:ff9b:1::1", "reserved address"),  # local-use NAT64
    # tunnels are judged by the address they lead to
    ("2002:a9fe:a9fe::1", "link-local address inside a 6to4 address (169.254.169.254)"),
    ("2002:7f00:1::1", "loopback address inside a 6to4 address (127.0.0.1)"),
    ("2002:a00:1::", "private address inside a 6to4 address (10.0.0.1)"),
    ("2001::1", "unspecified address inside a Teredo address (0.0.0.0)"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", f"{NOT_GLOBAL} inside a Teredo address (192.0.2.45)"),
    ("64:ff9b::a9fe:a9fe", "link-local address inside a NAT64 address (169.254.169.254)"),
    ("::ffff:169.254.169.254", "link-local address"),
    # a hostname is never judged: it must be resolved first
    ("metadata.google.internal", "not an IP address"),
    ("", "not an IP address"),
    # globally routable: allowed
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("172.32.0.1", None),
    ("100.128.0.1", None),
    ("::ffff:8.8.8.8", None),
    ("2606:4700::1111", None),
    ("2001:4860:4860::8888", None),
    ("2002:808:808::1", None),  # 6to4 of a public address
    ("64:ff9b::808:808", None),  # NAT64 of a public address
    ("[2606:4700::1111]", None),
]


@pytest.mark.parametrize(("addr", "reason"), GUARD_TABLE)
def test_unsafe_reason_without_simulation(addr, reason):
    assert unsafe_reason(addr) == reason
    assert unsafe_reason(addr, simulated=False) == reason
    ip = parse_ip(addr)
    if ip is not None:  # the same verdict for an address object
        assert unsafe_reason(ip) == reason


@pytest.mark.parametrize(("addr", "reason"), GUARD_TABLE)
def test_simulation_allows_only_ipv4_loopback(addr, reason):
    """VASTKEEP_SIMULATED admits 127.0.0.0/8 (also written IPv4-mapped) and changes nothing else."""
    ip = parse_ip(addr)
    ipv4_loopback = ip is not None and ip.version == 4 and ip.is_loopback
    assert unsafe_reason(addr, simulated=True) == (None if ipv4_loopback else reason)


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.255.255.254", "::ffff:127.3.4.5"])
def test_simulation_opens_the_whole_ipv4_loopback_block(addr):
    assert unsafe_reason(addr, simulated=True) is None
    assert unsafe_reason(addr) == "loopback address"


@pytest.mark.parametrize("addr", ["198.18.0.1", "192.0.0.8", "2002:a9fe:a9fe::1", "2001::1", "fec0::1"])
def test_addresses_that_used_to_pass_are_refused_by_the_probe_guard(addr):
    """The issue's list: each reached check_address (the probe's guard) without a refusal."""
    for simulated in (False, True):
        with pytest.raises(UnsafeTarget) as info:
            check_address(ipaddress.ip_address(addr), allow_loopback=simulated)
        assert info.value.message.endswith("(never probed, not even with VASTKEEP_SIMULATED)")


def test_public_signature():
    import inspect

    import vastkeep.ports

    sig = inspect.signature(vastkeep.ports.unsafe_reason)
    assert list(sig.parameters) == ["host", "simulated"]
    assert sig.parameters["simulated"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["simulated"].default is False


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
