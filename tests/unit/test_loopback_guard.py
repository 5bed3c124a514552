"""The test-suite's own network net: connects outside loopback fail before a packet leaves."""

from __future__ import annotations

import socket

import pytest

from tests.fixtures.loopback_only import NonLoopbackConnect


@pytest.mark.parametrize("addr", [("10.1.2.3", 8188), ("169.254.169.254", 80), ("192.168.0.1", 22),
                                  ("203.0.113.7", 8188)])
def test_non_loopback_connects_fail_in_tests(addr) -> None:
    with socket.socket() as s, pytest.raises(NonLoopbackConnect):
        s.connect(addr)


def test_mapped_ipv6_is_unwrapped() -> None:
    with socket.socket(socket.AF_INET6) as s, pytest.raises(NonLoopbackConnect):
        s.connect(("::ffff:169.254.169.254", 80, 0, 0))


def test_loopback_still_works() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.socket() as c:
            c.connect(srv.getsockname())
