"""One real SSH worker process with the threads pool (``-P threads``, as ``ops/start-worker-ssh.sh`` and
``vastkeep up`` run it) holds 20 collectors at once against the simulated cloud's SSH server and a real
redis-server: every one of them streams from the same process at the same time, the stored logs equal the
remote files byte for byte, and each collector hands over to its continuation after ``SSH_COLLECT_HOLD_S``
by itself (Celery enforces no time limit on threads: the bound is the collector's own)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.fixtures.chaos import SSH_QUEUE
from tests.fixtures.helpers import wait_for
from tests.fixtures.ssh_rig import record_instance
from tests.fixtures.state import State
from vastkeep.core.clock import SystemClock
from vastkeep.ssh import PROVISION_LOG, lease_name
from vastkeep.state.heartbeats import read_heartbeats

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
COLLECTORS = 20


def test_one_threads_worker_streams_20_collectors_at_once(chaos, sim) -> None:
    rs = chaos.redis()
    state = State(rs.client())
    r, keys, store, logs, leases = state.redis, state.keys, state.store, state.logs, state.leases
    instances = [record_instance(sim, store) for _ in range(COLLECTORS)]
    env = chaos.env(rs.url, SSH_KEY_PATH=sim.info["ssh_private_key_path"], SSH_KEEPALIVE_INTERVAL_MS="2000",
                    SSH_COLLECT_HOLD_S="8", SSH_BACKOFF_GATE_S="1", SSH_READY_TIMEOUT_MS="10000")
    worker = chaos.worker("worker", "ssh-threads", env, pool="threads", concurrency=COLLECTORS + 4,
                          queues=(SSH_QUEUE,))
    worker.wait_ready()
    client = chaos.client(rs.url, env)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            for iid, path in instances:
                with open(path, "ab") as fh:
                    fh.write(f"[provision {iid}] line {n} {'z' * (n % 61)}\n".encode())
            time.sleep(0.02)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        for iid, _path in instances:
            client.send_task("vastkeep.ssh.collect", args=[iid])
        names = [f"ssh-collector:{iid}" for iid, _ in instances]

        def all_streaming() -> bool:
            beats = read_heartbeats(r, keys, SystemClock(), names)
            return len(beats) == COLLECTORS and all(b.get("state") == "streaming" for b in beats.values())

        wait_for(all_streaming, 60, "all 20 collectors streaming at once", interval_s=0.2)
        beats = read_heartbeats(r, keys, SystemClock(), names)
        assert {b["pid"] for b in beats.values()} == {worker.pid}  # one process, 20 threads
        first = {iid: leases.last_fence(lease_name(iid)) for iid, _ in instances}
        wait_for(lambda: all(leases.last_fence(lease_name(iid)) > first[iid] for iid, _ in instances), 60,
                 "every collector handed over to its continuation by itself", interval_s=0.5)
    finally:
        stop.set()
        writer.join(5)
    for iid, path in instances:
        size = path.stat().st_size
        wait_for(lambda i=iid, s=size: logs.offset(i, PROVISION_LOG) >= s, 60, f"{iid} catches up")
        assert logs.read_all_bytes(iid, PROVISION_LOG) == path.read_bytes()
    worker.assert_alive()


def test_the_collect_task_falls_back_to_the_provider_log_api_when_ssh_is_refused(chaos, sim) -> None:
    """The task wiring end to end: the worker builds the Vast.ai client from its settings (the simulated
    cloud's key and URL; VASTKEEP_SIMULATED admits its loopback result_url) and, with SSH refused on both
    routes past SSH_FALLBACK_AFTER_S, stores the provider's lines marked ``provider-api``."""
    from vastkeep.ssh import PROVIDER_FILE

    rs = chaos.redis()
    state = State(rs.client())
    store, logs = state.store, state.logs
    iid, _path = record_instance(sim, store)
    sim.control.append_log(int(iid), "provisioning step 1", "provisioning step 2")
    sim.control.refuse(int(iid), "22/tcp")
    sim.control.refuse(int(iid), "ssh_proxy")
    env = chaos.env(rs.url, SSH_KEY_PATH=sim.info["ssh_private_key_path"], SSH_READY_TIMEOUT_MS="2000",
                    SSH_FALLBACK_AFTER_S="1", SSH_PROVIDER_LOG_INTERVAL_S="5", SSH_COLLECT_HOLD_S="20",
                    VAST_API_KEY=sim.api_key, VAST_API_URL=sim.vast_api_url, VASTKEEP_SIMULATED="1")
    worker = chaos.worker("worker", "ssh-fallback", env, pool="threads", concurrency=4, queues=(SSH_QUEUE,))
    worker.wait_ready()
    chaos.client(rs.url, env).send_task("vastkeep.ssh.collect", args=[iid])
    wait_for(lambda: len(logs.read(iid, PROVIDER_FILE)) >= 2, 60, "provider lines stored by the worker",
             interval_s=0.5)
    lines = [ln.to_dict() for ln in logs.read(iid, PROVIDER_FILE)]
    assert [ln["text"] for ln in lines] == ["provisioning step 1", "provisioning step 2"]
    assert {ln["source"] for ln in lines} == {"provider-api"}
    assert logs.offset(iid, PROVISION_LOG) == 0  # SSH never answered: its stream is untouched


def test_a_warm_shutdown_ends_the_holds_at_once_and_hands_the_collectors_over(chaos, sim) -> None:
    """SIGTERM (systemd stop, `vastkeep up` Ctrl-C) starts Celery's warm shutdown, which waits for running
    tasks: collectors holding for minutes made the threads worker wait them out and be SIGKILLed (seen in
    `vastkeep up`). Each collector now ends on the shutdown and queues its continuation, which a second
    worker takes with nothing lost. Fails without the shutdown hook (the worker is still alive at 15 s)."""
    rs = chaos.redis()
    state = State(rs.client())
    r, keys, store, logs, leases = state.redis, state.keys, state.store, state.logs, state.leases
    instances = [record_instance(sim, store) for _ in range(3)]
    env = chaos.env(rs.url, SSH_KEY_PATH=sim.info["ssh_private_key_path"], SSH_KEEPALIVE_INTERVAL_MS="2000",
                    SSH_COLLECT_HOLD_S="300", SSH_READY_TIMEOUT_MS="10000")
    first = chaos.worker("worker", "ssh-stop-a", env, pool="threads", concurrency=8, queues=(SSH_QUEUE,))
    first.wait_ready()
    client = chaos.client(rs.url, env)
    for iid, path in instances:
        with open(path, "ab") as fh:
            fh.write(f"before the stop {iid}\n".encode())
        client.send_task("vastkeep.ssh.collect", args=[iid])
    names = [f"ssh-collector:{iid}" for iid, _ in instances]
    wait_for(lambda: all(b.get("state") == "streaming"
                         for b in read_heartbeats(r, keys, SystemClock(), names).values())
             and len(read_heartbeats(r, keys, SystemClock(), names)) == 3, 60, "3 collectors streaming",
             interval_s=0.2)
    fences = {iid: leases.last_fence(lease_name(iid)) for iid, _ in instances}
    t0 = time.monotonic()
    first.proc.send_signal(15)
    first.proc.wait(15)  # raises TimeoutExpired when the holds are waited out
    stopped_in = time.monotonic() - t0
    assert stopped_in < 15, stopped_in
    for iid, path in instances:
        with open(path, "ab") as fh:
            fh.write(f"after the stop {iid}\n".encode())
    second = chaos.worker("worker", "ssh-stop-b", env, pool="threads", concurrency=8, queues=(SSH_QUEUE,))
    second.wait_ready()
    for iid, path in instances:  # the continuations the first worker queued, taken by the second
        wait_for(lambda i=iid: leases.last_fence(lease_name(i)) > fences[i], 60, f"{iid} continued")
        size = path.stat().st_size
        wait_for(lambda i=iid, s=size: logs.offset(i, PROVISION_LOG) >= s, 60, f"{iid} catches up")
        assert logs.read_all_bytes(iid, PROVISION_LOG) == path.read_bytes()
