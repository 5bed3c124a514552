"""Layer 1 against the simulated cloud's real SSH (OpenSSH sshd, and the built-in paramiko server) and a real
redis-server: the stored log equals the remote file byte for byte after repeated killed connections, a hang
after the banner times out, a changed host key is refused, a black-holed link is detected in time."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.fixtures.collector_rig import LOG, Rig
from vastkeep.core.errors import SSHError, StaleFence
from vastkeep.ssh import HostKeyPins, lease_name
from vastkeep.ssh.connect import open_client
from vastkeep.ssh.routes import DIRECT, PROXY, Route
from vastkeep.state import new_owner

KILLS = 50


@pytest.fixture
def rig(sim, redis_server) -> Iterator[Rig]:
    r = Rig(sim, redis_server)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def builtin_sim():
    from tests.fixtures.sim import start_sim

    proc = start_sim(["--ssh-backend", "builtin"])
    assert proc.info["ssh_backend"] == "builtin"
    yield proc
    proc.stop()
    proc.remove_state_dir()


def _kill_while_streaming(r: Rig, kills: int) -> None:
    """A writer appends lines (some in two writes: a partial line first) while sessions are killed."""
    rng = random.Random(11)
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            line = f"[provision] step {n} " + "x" * rng.randint(0, 300) + "\n"
            data = line.encode()
            if n % 3 == 0:  # a partial line, flushed, then its end
                cut = rng.randint(1, len(data) - 1)
                r.append(data[:cut])
                time.sleep(0.002)
                r.append(data[cut:])
            else:
                r.append(data)
            written[0] += len(data)
            time.sleep(0.001)

    r.append("naïve ünïcode and bytes: ".encode() + b"\xff\xfe\n")
    r.append(b"L" * 150_000 + b"\n")  # a runaway line: stored in 64 KiB pieces, still byte for byte
    r.start()
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        for _ in range(kills):
            before = r.logs.offset(r.iid, LOG)
            r.wait_stored(before + 1)  # the session streams again
            time.sleep(0.25)  # past the gate: the next drop starts a fresh backoff
            assert r.sim.control.kill_ssh_sessions(int(r.iid)) >= 1
    finally:
        stop.set()
        t.join(5)
    r.append(b"the last line\n")
    final = r.log_path.stat().st_size
    r.wait_stored(final)
    r.stop()
    remote = r.log_path.read_bytes()
    assert r.stored() == remote  # byte for byte: nothing lost, nothing twice
    assert r.collector.result.sessions >= kills + 1


def test_kill_ssh_repeatedly_loses_and_duplicates_nothing_sshd(rig):
    if rig.sim.info["ssh_backend"] != "sshd":  # no OpenSSH here: the built-in variant below covers it
        pytest.skip("the session simulator runs the built-in SSH server (no sshd on this machine)")
    _kill_while_streaming(rig, KILLS)


def test_kill_ssh_repeatedly_loses_and_duplicates_nothing_builtin(builtin_sim, redis_server):
    r = Rig(builtin_sim, redis_server)
    try:
        _kill_while_streaming(r, KILLS)
    finally:
        r.stop()
        builtin_sim.control.reset()


def test_resume_from_stored_offset_after_a_new_run(rig):
    rig.append(b"one\ntwo\nthr")
    rig.start()
    rig.wait_stored(8)
    rig.stop()
    assert rig.stored() == b"one\ntwo\n"  # the partial line waits for its newline
    rig.append(b"ee\nfour\n")
    rig.start()  # a continuation: same lease, resumes at offset 8
    rig.wait_stored(rig.log_path.stat().st_size)
    rig.stop()
    assert rig.stored() == b"one\ntwo\nthree\nfour\n"
    lines = rig.logs.read(rig.iid, LOG, after=4, limit=2)
    assert [(ln.offset, ln.data) for ln in lines] == [(4, b"two\n"), (8, b"three\n")]


def test_stale_fence_cannot_write(rig, redis_server):
    rig.append(b"a\n")
    rig.leases.release(rig.lease)  # someone else takes over
    newer = rig.leases.acquire(lease_name(rig.iid), new_owner("other"), 60_000)
    assert newer.fence > rig.lease.fence
    with pytest.raises(StaleFence):
        rig.logs.append(rig.iid, LOG, rig.lease.fence, 0, [(0, b"a\n")])
    assert rig.logs.append(rig.iid, LOG, newer.fence, 0, [(0, b"a\n")]) == 2
    rig.start()  # the old collector runs with the old lease: it stops at its first write
    rig.append(b"b\n")
    rig.thread.join(15)
    assert rig.collector.result.stopped == "lease-lost"
    assert rig.stored() == b"a\n"


def test_hang_after_banner_times_out_and_the_proxy_route_is_used(rig):
    rig.sim.control.ssh_hang_after_banner(int(rig.iid), "22/tcp")
    pins = HostKeyPins(rig.redis, rig.keys)
    rec = rig.store.get_instance(rig.iid)
    started = time.monotonic()
    with pytest.raises(SSHError) as err:
        open_client(Route(DIRECT, rec.public_ip, rec.ports["22/tcp"]), rig.iid, rig.pkey, pins, 1.0)
    assert 0.9 <= time.monotonic() - started < 5  # paramiko says "Negotiation failed." at the deadline
    assert err.value.route == DIRECT
    rig.append(b"via the proxy\n")
    rig.start()
    rig.wait_stored(14)
    assert rig.collector.result.route == PROXY
    assert rig.redis.hget(rig.keys.collector(rig.iid), "route") == PROXY


def test_changed_host_key_is_refused_with_an_alert(rig):
    other = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None
    fake = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    if other is not None:
        fake = f"{other.get_name()} {other.get_base64()}"
    rig.redis.set(rig.keys.ssh_host_key(rig.iid), fake)
    rig.append(b"secret provisioning\n")
    rig.start()
    end = time.monotonic() + 10
    while not any(e.kind == "ssh-host-key-changed" for e in rig.events.read(count=100)):
        assert time.monotonic() < end
        time.sleep(0.05)
    time.sleep(0.3)
    assert rig.stored() == b""  # never accepted: nothing was read through the unknown key
    assert rig.redis.get(rig.keys.ssh_host_key(rig.iid)) == fake  # the pin is not replaced
    ev = next(e for e in rig.events.read(count=100) if e.kind == "ssh-host-key-changed")
    assert ev.fields["instance_id"] == rig.iid and ev.fields["fingerprint"].startswith("SHA256:")


def test_first_host_key_is_pinned_and_accepted_again(rig):
    rig.append(b"x\n")
    rig.start()
    rig.wait_stored(2)
    pinned = rig.redis.get(rig.keys.ssh_host_key(rig.iid))
    assert pinned.startswith("ssh-ed25519 ")
    assert pinned.split()[1] in Path(rig.sim.info["ssh_known_hosts_path"]).read_text()


def test_blackholed_link_is_detected_within_interval_times_max_miss_plus_timeout(sim, redis_server):
    r = Rig(sim, redis_server, keepalive_interval_s=0.5, keepalive_max_miss=3, health_timeout_s=1.0,
            health_interval_s=30.0)
    try:
        r.append(b"before\n")
        r.start()
        r.wait_stored(7)
        sessions = r.collector.result.sessions
        sim.control.blackhole(int(r.iid))  # every route: the open session goes silent
        cut = time.monotonic()
        bound = 0.5 * 3 + 1.0
        while r.redis.hget(r.keys.collector(r.iid), "state") == "streaming":
            assert time.monotonic() - cut < bound + 1.0, "dead link not detected in time"
            time.sleep(0.02)
        detected = time.monotonic() - cut
        assert detected <= bound + 1.0  # generous margin for a loaded machine; bench/ has the figure
        sim.control.open_path(int(r.iid))
        r.append(b"after\n")
        r.wait_stored(13, timeout_s=30)  # and it comes back on its own
        assert r.collector.result.sessions > sessions
        assert r.stored() == b"before\nafter\n"
    finally:
        r.stop()


@pytest.mark.parametrize("backend", ["sshd", "builtin"])
def test_an_idle_healthy_link_is_kept_alive_by_answered_keepalives(backend, sim, builtin_sim, redis_server):
    cloud = sim if backend == "sshd" else builtin_sim
    r = Rig(cloud, redis_server, keepalive_interval_s=0.3, keepalive_max_miss=2, health_interval_s=1.0)
    try:
        r.append(b"only line\n")
        r.start()
        r.wait_stored(10)
        time.sleep(4.0)  # ~13 keepalive intervals and 4 health checks with no log data at all
        assert r.collector.result.sessions == 1, "a silent but healthy link was declared dead"
        r.append(b"still here\n")
        r.wait_stored(21)
    finally:
        r.stop()
        if backend == "builtin":
            builtin_sim.control.reset()
