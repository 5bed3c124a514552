"""A worker host cut off from Redis, then back: its daemons move to the other host, its stale writes refused.

Two worker hosts, each ``celery -A worker worker`` on the control and keepalive queues inside its own
network namespace (:mod:`tests.fixtures.hosts`), one AOF redis-server reached over each host's veth link,
the supervision sweep sent every second as beat would. Host A starts first and holds keepalive shard 0 and
the poll dispatcher; its link is black-holed; the sweep (now served by host B) restarts both there; the link
comes back and everything host A sends Redis from then on is recorded with ``MONITOR``.

Figures printed: how long each daemon took to move, and the writes host A made after the link returned:
fenced ones (lease renewals and records, each answered "refused") and unfenced ones made under a lease it
no longer held (must be 0).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.chaos import client_app, report
from tests.fixtures.helpers import wait_for
from tests.fixtures.judge import DISPATCHER, SHARD0, Monitor, Sweeper, holder, stale_writes
from tests.fixtures.state import State
from vastkeep.keepalive import daemon_name
from vastkeep.state import InstanceRecord, Keys

IID = "4242"
DEAD_COMFY = "http://127.0.0.1:9"  # refused at once on either host: failed pings give the runner writes

pytestmark = pytest.mark.timeout(150)

ENV = dict(COMFYUI_KEEPALIVE_INTERVAL_MS="4000", COMFYUI_KEEPALIVE_TIMEOUT_MS="1000",
           COMFYUI_KEEPALIVE_SHARDS="1", COMFYUI_KEEPALIVE_MAX_FAILURES="2",
           SUPERVISION_HEARTBEAT_STALE_MS="3000",
           SUPERVISION_START_TIMEOUT_MS="10000",
           SUPERVISION_RESTART_JITTER_PCT="0", VAST_API_KEY="judge-unreachable-key",
           VAST_API_URL="http://127.0.0.1:9/api/v0")


@pytest.fixture
def client(tmp_path: Path) -> Iterator:
    apps = []

    def make(url: str, env: dict[str, str]):
        app = client_app(url, env)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.mark.parametrize("fault", ["cut", pytest.param("pause", marks=pytest.mark.slow)])
def test_a_host_cut_off_or_paused_loses_its_daemons_and_its_stale_writes_are_refused(host_lab, client, fault,
                                                                                     request):
    """``cut``: host A's link black-holed. ``pause``: host A's workers SIGSTOPped past every lease TTL (a
    stop-the-world pause), then SIGCONT: they resume mid-write with their connections still open."""
    if fault == "pause":
        request.getfixturevalue("slow_selected")
    net_a, net_b = host_lab.network("a"), host_lab.network("b")
    server = host_lab.redis()
    r = server.client()
    env = host_lab.env(server.url, **ENV)
    app = client(server.url, env)
    record = InstanceRecord(instance_id=IID, status="ready", connection_url=DEAD_COMFY)
    State(r).store.put_instance(record)
    a = host_lab.host("a", net_a, server, env, queues=("control", "keepalive"), one_worker=True,
                      concurrency={"control": 2, "keepalive": 1})
    a.wait_ready()
    with Sweeper(app):
        wait_for(lambda: holder(r, SHARD0)[0] in a.pids() and holder(r, DISPATCHER)[0] in a.pids(), 40,
                 "host A holds shard 0 and the dispatcher", interval_s=0.5)
        b = host_lab.host("b", net_b, server, env, queues=("control", "keepalive"), one_worker=True,
                          concurrency={"control": 2, "keepalive": 1})
        b.wait_ready()
        owner_a = str(r.hget(Keys().lease(SHARD0), "owner"))
        monitor = Monitor(server.port, net_a.host_ip, server.password).start()
        try:
            a.cut() if fault == "cut" else a.pause()
            cut_at = time.monotonic()
            moved: dict[str, float] = {}

            def both_moved() -> bool:
                for name in (SHARD0, DISPATCHER):
                    if name not in moved and holder(r, name)[0] in b.pids():
                        moved[name] = time.monotonic() - cut_at
                return len(moved) == 2

            wait_for(both_moved, 60, "shard 0 and the dispatcher moved to host B", interval_s=0.2)
            time.sleep(4)  # host A's runner keeps pinging in the dark: failures, a lost connection, in memory
            restored_at = time.monotonic()  # before: a resumed host writes at once
            a.restore() if fault == "cut" else a.resume()
            holders = set()
            while time.monotonic() - restored_at < 20:  # A reconnects and acts on what it believed
                holders.add(holder(r, SHARD0)[0])
                time.sleep(0.2)
        finally:
            a.restore()
            a.resume()
            monitor.stop()
    after = monitor.since(restored_at)
    stale = stale_writes(after, owner=owner_a, iid=IID, daemon=daemon_name(0))
    report(f"judge: host {'cut off' if fault == 'cut' else 'paused'}",
           shard_moved_after=moved[SHARD0], dispatcher_moved_after=moved[DISPATCHER],
           commands_from_a_after_restore=len(after), stale_fenced_refused=len(stale.fenced),
           stale_accepted=len(stale.accepted))
    for c in stale.accepted:
        print("accepted stale write:", c.name, " ".join(c.args)[:200])
    # lease TTL (2 s shard, 10 s dispatcher) + heartbeat stale (3 s) + the guide's first restart step (10 s)
    assert moved[SHARD0] < 30 and moved[DISPATCHER] < 40, moved
    assert holders <= b.pids(), holders  # no renewal of host A's was accepted: B held shard 0 throughout
    assert holder(r, DISPATCHER)[0] in b.pids()
    assert "lease lost" in a.log()  # host A's runner was told no, and stopped
    assert stale.accepted == []
