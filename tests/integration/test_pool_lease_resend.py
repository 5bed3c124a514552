"""Lease scripts safe to re-send: Redis replies delayed past the client's timeout (a delaying TCP proxy).

redis-py re-sends a command after a timeout while the first one has already run (its reply was only
late), and a caller whose attempts all timed out retries the logical call (the lease tasks do, with the
same task id).
Each grant / renew / release carries a request id fixed once per logical call, and the script answers a
repeat with its first answer: over 200+ calls made while Redis stalls 0.6 s against a 0.3 s socket timeout,
no grant leases twice (the fence counter advances once per logical grant), every rotation answers with the
id that now holds the lease, and every release answers ``released``.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from tests.fixtures.state import State
from vastkeep.core.clock import SYSTEM_CLOCK
from vastkeep.core.errors import LeaseBusy, NotFound
from vastkeep.pool import PoolLeases
from vastkeep.pool.leasing import new_request_id
from vastkeep.state import InstanceRecord, Keys, connect

CLIENTS = 20
CYCLES = 4  # grant, renew (rotating), release: 20 × 4 × 3 = 240 logical calls
STALL_S = 0.6
SOCKET_TIMEOUT_S = 0.3


class DelayingProxy:
    """A loopback TCP proxy in front of Redis: commands pass at once; during a stall every reply is held until
    the stall ends, so a client with a shorter socket timeout gives up on a command that did run."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stall_until = 0.0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self, seconds: float) -> None:
        self.stall_until = SYSTEM_CLOCK.monotonic() + seconds

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            upstream.settimeout(None)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies and (wait := self.stall_until - SYSTEM_CLOCK.monotonic()) > 0:
                    SYSTEM_CLOCK.sleep(wait)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def once(call: Any) -> Any:
    """One logical call: its attempts all timing out → try again with the same request id (as a task retry
    does, jittered), until it answers."""
    rid = new_request_id()
    for _ in range(20):
        try:
            return call(rid)
        except (redis.TimeoutError, redis.ConnectionError):
            SYSTEM_CLOCK.sleep(random.uniform(0, 0.2))
    raise AssertionError("no answer after 20 attempts")


def test_grant_renew_release_answer_once_while_redis_stalls(redis_server, redis_client) -> None:
    keys = Keys()
    store = State(redis_client, keys=keys).store
    for i in range(CLIENTS):
        store.put_instance(InstanceRecord(
            str(500 + i), status="ready", label=f"vastkeep:default:{i}", connection_url=f"http://127.0.0.9:{i}",
            # every instance passes its post-lease check at once (here the memo is under test, not the check)
            port_validation={"success": True, "checked_at": "2999-01-01T00:00:00.000Z"}))
    proxy = DelayingProxy(redis_server.port)
    slow = connect(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout_s=SOCKET_TIMEOUT_S)
    leases = PoolLeases(slow, keys, "default", "vastkeep", store=State(slow, keys=keys).store)
    stop = threading.Event()

    def stall() -> None:  # replies held for 0.6 s against a 0.3 s socket timeout, again and again
        while not stop.is_set():
            proxy.stall(STALL_S)
            stop.wait(STALL_S + random.uniform(0.05, 0.3))

    def client(n: int) -> dict[str, int]:
        seen = {"grants": 0, "renewed": 0, "released": 0, "renew NotFound": 0, "release NotFound": 0,
                "grant refused": 0}
        for _ in range(CYCLES):
            try:
                grant = once(lambda rid: leases.grant(600, f"svc-{n}", request_id=rid))
            except LeaseBusy:  # instances leaked to leases nobody holds (double grants, lost rotations)
                seen["grant refused"] += 1
                continue
            seen["grants"] += 1
            lid = grant.lease_id
            try:
                renewed = once(lambda rid, lid=lid: leases.renew(lid, 600, rotate=True, request_id=rid))
                assert renewed["instanceId"] == grant.instance_id and renewed["rotated"] is True
                seen["renewed"] += 1
                lid = renewed["leaseId"]
            except NotFound:  # answered NotFound while the lease lives on under an id nobody holds
                seen["renew NotFound"] += 1
            try:
                released = once(lambda rid, lid=lid: leases.release(lid, request_id=rid))
                assert released == {"instanceId": grant.instance_id, "released": True, "fence": grant.fence}
                seen["released"] += 1
            except NotFound:  # a release that went through, answered NotFound
                seen["release NotFound"] += 1
        return seen

    redis_client.config_resetstat()
    stalls = threading.Thread(target=stall, daemon=True)
    stalls.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, range(CLIENTS)))
    finally:
        stop.set()
        stalls.join(5)
        proxy.close()
    total = {k: sum(r[k] for r in results) for k in results[0]}
    grants = total["grants"]
    fences = int(redis_client.get(keys.pool_lease_fence("default")))
    print(f"\n{total}, fences {fences}, still leased {len(leases.active(SYSTEM_CLOCK.now()))}")
    assert total["renew NotFound"] == total["release NotFound"] == total["grant refused"] == 0, total
    assert grants == total["renewed"] == total["released"] == CLIENTS * CYCLES
    # one fence per logical grant: no call leased a second instance, and nothing is left leased
    assert fences == grants, f"{fences - grants} grant(s) leased a second instance"
    assert leases.active(SYSTEM_CLOCK.now()) == {}
    assert redis_client.hlen(keys.pool_lease_index("default")) == 0
    # the fault really happened: more scripts ran than logical calls were made (re-sends and retries)
    stats = redis_client.info("commandstats")
    ran = stats.get("cmdstat_evalsha", {}).get("calls", 0) + stats.get("cmdstat_eval", {}).get("calls", 0)
    print(f"\n{3 * grants} logical calls, {ran} script runs")
    assert ran >= 3 * grants + 20, ran
