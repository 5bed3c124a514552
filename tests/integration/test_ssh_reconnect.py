"""A lone dropped SSH session reconnects at once; the shared drop count tells a herd (real sshd, real Redis).

The reconnect window (``SSH_RECONNECT_WINDOW_S``, 10 s) exists for many collectors dropping together; a
single healthy link that drops reconnects without waiting in it. The herd itself (20 collectors) is
``tests/integration/test_ssh_herd.py``; the 200-instance figure is ``bench/bench_ssh_herd.py``.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.collector_rig import LOG, Rig
from vastkeep.ssh.drops import record_drop
from vastkeep.state import Keys

pytestmark = pytest.mark.timeout(120)


def test_a_lone_drop_reconnects_at_once_not_after_the_herd_window(sim, redis_server) -> None:
    r = Rig(sim, redis_server, reconnect_window_s=10.0, gate_s=0.2)
    r.append(b"first\n")
    r.start()
    try:
        r.wait_stored(len(b"first\n"))
        gaps = []
        for n in range(5):
            time.sleep(0.5)  # past the gate: a healthy link
            connected = sum(1 for e in r.events.read(count=1000) if e.kind == "ssh-connected")
            t0 = time.monotonic()
            assert sim.control.kill_ssh_sessions(int(r.iid)) >= 1
            end = t0 + 15
            while sum(1 for e in r.events.read(count=1000) if e.kind == "ssh-connected") == connected:
                assert time.monotonic() < end, "no reconnect within 15 s"
                time.sleep(0.01)
            gaps.append(round(time.monotonic() - t0, 2))
            line = f"after drop {n}\n".encode()
            size = r.log_path.stat().st_size + len(line)
            r.append(line)
            r.wait_stored(size)
        print(f"[ssh] lone drop → reconnected after {gaps} s (window 10 s)")
        assert max(gaps) < 2.0, gaps  # a handshake, not uniform(0, 10 s)
        assert r.stored() == r.log_path.read_bytes()
        assert not [e for e in r.events.read(count=1000) if e.kind == "ssh-backoff"]
    finally:
        r.stop()
    assert r.logs.offset(r.iid, LOG) == r.log_path.stat().st_size


def test_the_drop_count_is_shared_per_instance_and_bounded_by_the_window(redis_server) -> None:
    client = redis_server.client()
    client.flushdb()
    keys = Keys()
    assert record_drop(client, keys, "1", 1000.0, 10.0) == 1
    assert record_drop(client, keys, "1", 1001.0, 10.0) == 1  # one link dropping again is not a herd
    assert [record_drop(client, keys, str(i), 1002.0, 10.0) for i in range(2, 6)] == [2, 3, 4, 5]
    assert record_drop(client, keys, "9", 1011.5, 10.0) == 5  # "1" (1001) left the window; 2..5 (1002) stay
    assert record_drop(client, keys, "9", 1011.5, 10.0) == 5  # re-sent: the same answer
    assert record_drop(client, keys, "8", 1012.5, 10.0) == 2  # 2..5 left too
    assert 0 < client.pttl(keys.ssh_drops()) <= 20_000
