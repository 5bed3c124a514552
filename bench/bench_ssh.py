"""Benchmark Layer 1 (SSH log collection) against the simulated cloud's real sshd, side by side in one run.

1. **Throughput**: a remote log of ``--mb`` MB is collected from offset 0 by the vastkeep collector (paramiko,
   lines cut with their offsets, fenced Lua appends into a Redis stream) and read by OpenSSH's own
   ``ssh host tail -c +1 -f`` (bytes to a pipe, nothing stored), same route, same run. Lines/s, MB/s, ratio
   (goal ≥ 0.8×).
2. **Reconnect**: a log grows every 2 ms while the SSH session is killed ``--kills`` times; the time from a
   kill to streaming again is compared with what it should cost: the drawn reconnect delay (full jitter in
   ``[0, RECONNECT_WINDOW_S]``) plus one connect (handshake + exec channel, measured alone).
3. **Collectors per host**: ``--collectors`` collectors run as threads of this one process; resident memory
   per collector; and the memory of one idle Celery prefork process (``import worker, tasks``), the cost per
   collector when each collector holds a prefork slot of ``worker-ssh``.
4. **A herd**: ``--herd`` instances stream, then every session is killed at once; the reconnect handshakes
   per second (peak, 100 ms buckets scaled to /s) with the jitter window against no window (0 s), same run.

    .venv/bin/python -m bench.bench_ssh [--mb 20] [--kills 10] [--collectors 50] [--herd 50] [--only 1234]

The herd runs every instance's sshd session *and* every collector on this one host (2 CPUs here): 200 at
once saturates it (handshakes time out and back off), so the default is 50; pass ``--herd 200`` on a
bigger machine.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import start_log_writer, start_redis_server  # noqa: E402
from vastkeep.sim.process import spawn  # noqa: E402
from vastkeep.ssh import (  # noqa: E402
    PROVISION_LOG,
    Collector,
    CollectorConfig,
    HostKeyPins,
    LogStore,
    Route,
    lease_name,
    load_private_key,
    open_client,
)
from vastkeep.ssh.connect import exec_channel  # noqa: E402
from vastkeep.ssh.decide import RECONNECT_WINDOW_S  # noqa: E402
from vastkeep.state import InstanceRecord, Keys, LeaseManager, StateStore, new_owner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Events:
    """A duck-typed event sink that records when each kind happened (monotonic)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def emit(self, kind: str, **fields: Any) -> str:
        with self.lock:
            self.seen.append((time.monotonic(), kind))
        return "0-0"


class Bench:
    def __init__(self) -> None:
        self.sim = spawn()
        self.redis_server = start_redis_server()
        port = self.redis_server.port  # hundreds of collector threads share these clients
        self.r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, max_connections=4000)
        self.raw = redis.Redis(host="127.0.0.1", port=port, max_connections=4000)
        self.keys = Keys("bench")
        self.store = StateStore(self.r, self.keys)
        self.logs = LogStore(self.raw, self.keys, keep_bytes=2**30)
        self.leases = LeaseManager(self.r, self.keys)
        self.pkey = load_private_key(self.sim.info["ssh_private_key_path"])
        self.events = Events()

    def close(self) -> None:
        self.sim.stop()
        self.sim.remove_state_dir()
        self.redis_server.stop()

    def instance(self, inst: dict[str, Any] | None = None) -> tuple[str, Path, Route]:
        inst = inst or self.sim.control.create_instance(running=True)
        iid = str(inst["id"])
        ip, port = inst["public_ipaddr"].strip(), int(inst["ports"]["22/tcp"][0]["HostPort"])
        self.store.put_instance(InstanceRecord(iid, status="loading", public_ip=ip, ports={"22/tcp": port}))
        return iid, Path(self.sim.control.instance(inst["id"])["log_path"]), Route("direct", ip, port)

    def collector(self, iid: str, **cfg: Any) -> tuple[Collector, threading.Thread]:
        config = CollectorConfig(**{"ready_timeout_s": 10.0, "keepalive_interval_s": 10.0, "hold_s": 3600.0,
                                    "gate_s": 1.0, **cfg})
        lease = self.leases.acquire(lease_name(iid), new_owner("bench"), 3_600_000)
        c = Collector(iid, redis_client=self.r, keys=self.keys, logstore=self.logs, lease=lease,
                      pkey=self.pkey, get_record=lambda: self.store.get_instance(iid), config=config,
                      events=self.events,
                      rng=random.Random(int(iid)))
        t = threading.Thread(target=c.run, daemon=True)
        t.start()
        return c, t

    @staticmethod
    def stop(pairs: list[tuple[Collector, threading.Thread]]) -> None:
        for c, _t in pairs:
            c.stop_event.set()
        for _c, t in pairs:
            t.join(30)

    def wait_offset(self, iid: str, size: int, timeout_s: float = 600.0) -> float:
        t0 = time.perf_counter()
        while self.logs.offset(iid, PROVISION_LOG) < size:
            if time.perf_counter() - t0 > timeout_s:
                at = self.logs.offset(iid, PROVISION_LOG)
                raise RuntimeError(f"instance {iid}: stuck at {at} / {size}")
            time.sleep(0.002)
        return time.perf_counter() - t0


# ── 1. throughput ────────────────────────────────────────────────────────────
def fill(path: Path, mb: float) -> tuple[int, int]:
    rng = random.Random(1)
    lines = []
    size = 0
    n = 0
    while size < mb * 1e6:
        n += 1
        line = f"[provision] {n:08d} layer {rng.getrandbits(64):016x} " + "z" * rng.randint(20, 140)
        data = (line + "\n").encode()
        lines.append(data)
        size += len(data)
    path.write_bytes(b"".join(lines))
    return size, n


def openssh_tail(b: Bench, route: Route, size: int) -> float:
    argv = ["ssh", "-p", str(route.port), "-i", b.sim.info["ssh_private_key_path"], "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={b.sim.info['ssh_known_hosts_path']}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", f"root@{route.host}",
            "tail", "-c", "+1", "-f", PROVISION_LOG]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    got = 0
    try:
        while got < size:
            chunk = proc.stdout.read1(1 << 20)  # type: ignore[union-attr]
            if not chunk:
                raise RuntimeError(f"ssh ended after {got} bytes (rc {proc.poll()})")
            got += len(chunk)
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait(5)


def throughput(b: Bench, mb: float, rounds: int) -> dict[str, Any]:
    iid, path, route = b.instance()
    size, lines = fill(path, mb)
    vk, ossh = [], []
    for i in range(rounds):
        ossh.append(openssh_tail(b, route, size))
        b.raw.delete(b.keys.collector(iid), b.keys.ssh_log(iid, PROVISION_LOG))
        held = b.leases.current(lease_name(iid))
        if held is not None:
            b.leases.release(held)
        t0 = time.perf_counter()
        pair = b.collector(iid)
        b.wait_offset(iid, size)
        vk.append(time.perf_counter() - t0)
        b.stop([pair])
        assert b.logs.read_all_bytes(iid, PROVISION_LOG) == path.read_bytes() if i == 0 else True
    v, o = min(vk), min(ossh)
    print(f"1. throughput, {size / 1e6:.1f} MB / {lines:,} lines, best of {rounds}:")
    print(f"   vastkeep collector (paramiko, fenced Lua XADD): {v:.2f} s = {lines / v:,.0f} lines/s, "
          f"{size / v / 1e6:.1f} MB/s")
    print(f"   OpenSSH `ssh host tail -c +1 -f` (to a pipe):   {o:.2f} s = {lines / o:,.0f} lines/s, "
          f"{size / o / 1e6:.1f} MB/s")
    ratio = o / v
    print(f"   ratio vastkeep/OpenSSH: {ratio:.2f}x  (goal >= 0.8: {'PASS' if ratio >= 0.8 else 'FAIL'})")
    return {"ratio": ratio}


# ── 2. reconnect ─────────────────────────────────────────────────────────────
def reconnect(b: Bench, kills: int) -> None:
    iid, path, route = b.instance()
    pins = HostKeyPins(b.r, b.keys)
    connects = []
    for _ in range(5):
        t0 = time.perf_counter()
        client = open_client(route, iid, b.pkey, pins, 10.0)
        ch = exec_channel(client, f"tail -c +1 -F {PROVISION_LOG}", 10.0)
        connects.append(time.perf_counter() - t0)
        ch.close()
        client.close()
    stop = threading.Event()
    start_log_writer(path, stop, lambda n: f"tick {n}\n", every_s=0.002)
    c, t = b.collector(iid)
    b.wait_offset(iid, 1)
    gaps = []
    for _ in range(kills):
        time.sleep(1.2)  # past the gate (1 s): each drop starts from a healthy link
        sessions = c.result.sessions
        size = path.stat().st_size
        t0 = time.perf_counter()
        b.sim.control.kill_ssh_sessions(int(iid))
        while c.result.sessions == sessions or b.logs.offset(iid, PROVISION_LOG) < size:
            time.sleep(0.001)
        gaps.append(time.perf_counter() - t0)
    stop.set()
    b.stop([(c, t)])
    one = statistics.median(connects)
    expected = RECONNECT_WINDOW_S / 2 + one
    print(f"2. reconnect after a killed session ({kills} kills): median {statistics.median(gaps):.3f} s, "
          f"max {max(gaps):.3f} s")
    print(f"   expected: jitter window mean {RECONNECT_WINDOW_S / 2:.2f} s "
          f"(uniform 0..{RECONNECT_WINDOW_S:.0f} s) + one connect {one:.3f} s (handshake + exec, median of 5)"
          f" = {expected:.3f} s; "
          f"ratio {statistics.mean(gaps) / expected:.2f}x (mean/expected)")


# ── 3. collectors per host ───────────────────────────────────────────────────
def per_host(b: Bench, count: int) -> None:
    ids = b.sim.control.bulk_create(count, ssh=True)["ids"]
    insts = [b.sim.control.instance(i)["instance"] for i in ids]
    made = [b.instance(inst) for inst in insts]
    for _iid, path, _route in made:
        path.write_bytes(b"first line\n")
    before = rss_mb()
    pairs = [b.collector(iid) for iid, _p, _r in made]
    for iid, _p, _r in made:
        b.wait_offset(iid, 11, 120)
    time.sleep(2)
    during = rss_mb()
    threads = threading.active_count()
    b.stop(pairs)
    probe = subprocess.run([sys.executable, "-c", "import worker, tasks, os; "
                            "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": b.redis_server.url})
    worker_mb = int(probe.stdout.strip().splitlines()[-1]) / 1024 if probe.returncode == 0 else float("nan")
    per = (during - before) / count
    print(f"3. {count} collectors as threads of one process: +{during - before:.1f} MiB RSS = {per:.2f} MiB "
          f"per collector ({threads} threads)")
    print(f"   one idle Celery prefork process (import worker, tasks): {worker_mb:.1f} MiB: a collector per "
          f"prefork slot costs {worker_mb / max(per, 0.01):.0f}x the thread")


# ── 4. a herd ────────────────────────────────────────────────────────────────
def herd(b: Bench, count: int, window_s: float) -> tuple[float, float]:
    ids = b.sim.control.bulk_create(count, ssh=True)["ids"]
    insts = [b.sim.control.instance(i)["instance"] for i in ids]
    made = [b.instance(inst) for inst in insts]
    for _iid, path, _route in made:
        path.write_bytes(b"up\n")
    pairs = [b.collector(iid, reconnect_window_s=window_s) for iid, _p, _r in made]
    end = time.monotonic() + 120
    while time.monotonic() < end and not all(b.logs.offset(i, PROVISION_LOG) >= 3 for i, _p, _r in made):
        time.sleep(0.2)
    streaming = sum(1 for i, _p, _r in made if b.logs.offset(i, PROVISION_LOG) >= 3)
    time.sleep(1.5)  # past the gate
    b.events.seen.clear()
    t0 = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: b.sim.control.kill_ssh_sessions(int(i)), [m[0] for m in made]))
    killed_in = time.monotonic() - t0
    deadline = time.monotonic() + 120
    def connected() -> int:
        return sum(1 for _t, k in b.events.seen if k == "ssh-connected")

    while connected() < streaming and time.monotonic() < deadline:
        time.sleep(0.05)
    stamps = [t for t, k in b.events.seen if k == "ssh-connected"]
    buckets = collections.Counter(int((t - t0) / 0.1) for t in stamps)
    peak = max(buckets.values()) * 10 if buckets else 0
    spread = (max(stamps) - min(stamps)) if stamps else 0.0
    b.stop(pairs)
    for i in ids:
        b.sim.control.exit_instance(i)
    print(f"   window {window_s:.1f} s: {streaming}/{count} streaming, {len(stamps)} reconnected in "
          f"{spread:.2f} s, peak {peak} handshakes/s (kills took {killed_in:.2f} s)")
    return peak, spread


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--collectors", type=int, default=50)
    p.add_argument("--herd", type=int, default=50)
    p.add_argument("--only", default="1234")
    a = p.parse_args()
    b = Bench()
    print(f"SSH backend: {b.sim.info['ssh_backend']}, CPUs: {os.cpu_count()}")
    try:
        if "1" in a.only:
            throughput(b, a.mb, a.rounds)
        if "2" in a.only:
            reconnect(b, a.kills)
        if "3" in a.only:
            per_host(b, a.collectors)
        if "4" in a.only:
            print(f"4. {a.herd} instances lose SSH at once:")
            herd(b, a.herd, RECONNECT_WINDOW_S)
            herd(b, a.herd, 0.0)
    finally:
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
