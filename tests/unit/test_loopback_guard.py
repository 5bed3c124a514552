"""The test-suite's own network net: connects outside loopback fail before a packet leaves."""

from __future__ import annotations

import socket

import pytest

from tests.fixtures.loopback_only import NonLoopbackConnect, _guarded_connect, _guarded_connect_ex


@pytest.mark.parametrize("addr", [("10.1.2.3", 8188), ("169.254.169.254", 80), ("192.168.0.1", 22),
                                  ("203.0.113.7", 8188)])
def test_non_loopback_connects_fail_in_tests(addr) -> None:
    with socket.socket() as s, pytest.raises(NonLoopbackConnect):
        s.connect(addr)


def test_mapped_ipv6_is_unwrapped() -> None:
    with socket.socket(socket.AF_INET6) as s, pytest.raises(NonLoopbackConnect):
        s.connect(("::ffff:169.254.169.254", 80, 0, 0))


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "127.0.0.2"),
                                            (socket.AF_INET6, "::1")])
def test_loopback_still_works(family: int, host: str) -> None:
    """The net is installed and still lets loopback through: bytes make the round trip both ways."""
    assert socket.socket.connect is _guarded_connect and socket.socket.connect_ex is _guarded_connect_ex
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with socket.socket(family) as srv:
        try:
            srv.bind((host, 0))
        except OSError as exc:
            pytest.skip(f"cannot bind {host}: {exc}")
        srv.listen(2)
        srv.settimeout(5)
        with socket.socket(family) as c:
            c.settimeout(5)
            c.connect(srv.getsockname()[:2])
            peer, _ = srv.accept()
            with peer:
                c.sendall(b"ping")
                assert peer.recv(4) == b"ping"
                peer.sendall(b"pong")
                assert c.recv(4) == b"pong"
        with socket.socket(family) as c2:
            c2.settimeout(5)
            assert c2.connect_ex(srv.getsockname()[:2]) == 0
            srv.accept()[0].close()
