"""Benchmark: the ComfyUI endpoint (``vastkeep proxy``) against the same simulated ComfyUI reached directly.

Starts a private ``redis-server``, the simulated cloud (its own process) with one running instance, and
two real ``vastkeep proxy`` processes (``--loop asyncio``; ``--loop uvloop`` when uvloop is installed);
grants a lease through the library (``PoolLeases.grant`` + the endpoint token, as the admin route does)
and measures, in this one process and one run, with the **same** aiohttp client, the same concurrency and
keep-alive connections on every side, direct and through ``/c/{endpointToken}/`` in rotating rounds (so
load from the rest of the machine falls on all of them):

* latency p50 / p99 of ``GET /system_stats`` and of ``POST /prompt`` (EmptyImage → SaveImage, ``prompt_s`` 0;
  the queue is cleared between rounds);
* throughput of a 10 MB ``GET /view`` (random bytes uploaded once as an input file, so nothing compresses);
* messages/s on ``/ws``: a window of ``feature_flags`` messages in flight, each answered by ComfyUI's reply.

Printed: each figure both ways and the ratio (goals: latency ≤ 1.2× direct, throughput ≥ 0.8× direct).

    .venv/bin/python -m bench.bench_proxy [--concurrency 4] [--rounds 4] [--requests 400] [--view-mb 10]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vastkeep.core.clock import SYSTEM_CLOCK  # noqa: E402
from vastkeep.pool import build_leases  # noqa: E402
from vastkeep.proxy import endpoints  # noqa: E402
from vastkeep.sim.process import spawn  # noqa: E402
from vastkeep.stack import embedded_redis as er  # noqa: E402
from vastkeep.state import InstanceRecord, Keys, StateStore, connect  # noqa: E402

GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}}}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def latencies(http: aiohttp.ClientSession, base: str, n: int, conc: int, kind: str) -> list[float]:
    out: list[float] = []
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            if kind == "stats":
                async with http.get(f"{base}/system_stats") as r:
                    await r.read()
                    assert r.status == 200, r.status
            else:
                async with http.post(f"{base}/prompt", json={"prompt": GRAPH, "client_id": "bench"}) as r:
                    await r.read()
                    assert r.status == 200, r.status
            out.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(conc)))
    return out


async def view_rate(http: aiohttp.ClientSession, base: str, n: int, conc: int,
                    name: str) -> tuple[float, int]:
    """(bytes/s, bytes) of ``n`` downloads of the big file, ``conc`` at a time."""
    total, left = 0, n

    async def worker() -> None:
        nonlocal total, left
        while left > 0:
            left -= 1
            async with http.get(f"{base}/view", params={"filename": name, "type": "input"}) as r:
                assert r.status == 200, r.status
                async for chunk in r.content.iter_any():
                    total += len(chunk)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return total / (time.perf_counter() - t0), total


async def ws_rate(http: aiohttp.ClientSession, base: str, n: int, window: int) -> float:
    """Replies/s to ``n`` feature_flags messages with up to ``window`` in flight on one /ws."""
    ws_base = base.replace("http://", "ws://", 1)
    async with http.ws_connect(f"{ws_base}/ws?clientId=bench-ws") as ws:
        first = await ws.receive()  # the status frame
        assert first.type == aiohttp.WSMsgType.TEXT
        msg = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        sent = got = 0
        t0 = time.perf_counter()
        while sent < min(window, n):
            await ws.send_str(msg)
            sent += 1
        while got < n:
            reply = await ws.receive()
            assert reply.type == aiohttp.WSMsgType.TEXT, reply.type
            got += 1
            if sent < n:
                await ws.send_str(msg)
                sent += 1
        return n / (time.perf_counter() - t0)


def start_proxy(env: dict[str, str], log: Path, port: int, loop: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "vastkeep.cli", "proxy", "--loop", loop], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the proxy did not start: {log.read_text()[-2000:]}")


async def measure(sides: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    direct = sides["direct"]
    res: dict[str, dict[str, list[float]]] = {s: {"stats": [], "prompt": [], "view": [], "ws": []}
                                              for s in sides}
    view_bytes = 0
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300),
                                     auto_decompress=False) as http:
        data = os.urandom(args.view_mb * 1024 * 1024)
        form = aiohttp.FormData()
        form.add_field("image", data, filename="bench-big.png", content_type="image/png")
        form.add_field("overwrite", "true")
        async with http.post(f"{direct}/upload/image", data=form) as r:
            assert r.status == 200, await r.text()
        for base in sides.values():  # warm every side: connections, the proxy's token cache
            await latencies(http, base, 50, args.concurrency, "stats")
        names = list(sides)
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for side in order:
                base = sides[side]
                res[side]["stats"] += await latencies(http, base, args.requests, args.concurrency, "stats")
                res[side]["prompt"] += await latencies(http, base, args.requests // 4, args.concurrency,
                                                       "prompt")
                async with http.post(f"{direct}/queue", json={"clear": True}) as r:
                    await r.read()
                rate, view_bytes = await view_rate(http, base, args.views, min(2, args.concurrency),
                                                   "bench-big.png")
                res[side]["view"].append(rate)
                res[side]["ws"].append(await ws_rate(http, base, args.ws_messages, 64))
    return {"res": res, "view_bytes": view_bytes}


def report(out: dict[str, Any], args: argparse.Namespace) -> int:
    res = out["res"]
    proxies = [s for s in res if s != "direct"]
    print(f"\nconcurrency {args.concurrency}, {args.rounds} rotating rounds, keep-alive on every side")
    head = "".join(f"{s:>16}{'ratio':>8}" for s in proxies)
    print(f"{'figure':<30}{'direct':>10}{head}  goal")

    def row(label: str, d: float, xs: list[float], fmt: str, goal: str) -> None:
        cells = "".join(f"{x:>16{fmt}}{x / d:>7.2f}×" for x in xs)
        print(f"{label:<30}{d:>10{fmt}}{cells}  {goal}")

    for kind, label in (("stats", "GET /system_stats"), ("prompt", "POST /prompt")):
        for p in (50, 99):
            row(f"{label} p{p} ms", pct(res["direct"][kind], p) * 1000,
                [pct(res[s][kind], p) * 1000 for s in proxies], ".2f", "≤ 1.2×")
    row(f"GET /view {args.view_mb} MB, MB/s", statistics.median(res["direct"]["view"]) / 1e6,
        [statistics.median(res[s]["view"]) / 1e6 for s in proxies], ".1f", "≥ 0.8×")
    row("/ws messages/s", statistics.median(res["direct"]["ws"]),
        [statistics.median(res[s]["ws"]) for s in proxies], ".0f", "≥ 0.8×")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--requests", type=int, default=400, help="GET /system_stats per side per round")
    ap.add_argument("--view-mb", type=int, default=10)
    ap.add_argument("--views", type=int, default=6, help="10 MB downloads per side per round")
    ap.add_argument("--ws-messages", type=int, default=5000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    rport = er.pick_port(range(0))
    redis_proc = subprocess.Popen(er.redis_argv(rport, tmp), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    sim = None
    proxies: list[subprocess.Popen] = []
    try:
        assert er.wait_ready(rport, 15)
        url = er.redis_url(rport)
        sim = spawn(["--ssh-backend", "off"])
        inst = sim.control.create_instance(running=True)
        sim.control.set_prompt_s(inst["id"], 0.0)
        direct = f"http://{inst['public_ipaddr'].strip()}:{inst['ports']['8188/tcp'][0]['HostPort']}"
        r = connect(url)
        store = StateStore(r, Keys())
        store.put_instance(InstanceRecord(str(inst["id"]), status="ready", label="vastkeep:default:0",
                                          connection_url=direct,
                                          port_validation={"success": True,
                                                           "checked_at": "2026-01-01T00:00:00Z"}))
        loops = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
        ports = {}
        for loop in loops:
            ports[loop] = er.pick_port(range(0))
            env = {**os.environ, "REDIS_URL": url, "VASTKEEP_SIMULATED": "1", "PROXY_PORT": str(ports[loop]),
                   "VASTKEEP_HOME": str(tmp / "home"), "LOG_LEVEL": "WARNING",
                   "PROXY_CLIENT_CONCURRENCY": str(max(32, args.concurrency * 2))}
            proxies.append(start_proxy(env, tmp / f"proxy-{loop}.log", ports[loop], loop))
        settings = type("S", (), {"warm_pool_name": "default", "warm_pool_label_prefix": "vastkeep",
                                  "poll_active_interval_s": 30})()
        grant = build_leases(settings, r, Keys(), SYSTEM_CLOCK, store).grant(3600, "bench")
        lease = endpoints.with_endpoint(grant.to_dict(), r, Keys(), "default", "http://127.0.0.1:1",
                                        grant.leased_until)
        path = lease["endpointUrl"].removeprefix("http://127.0.0.1:1").rstrip("/")
        sides = {"direct": direct, **{f"proxy/{loop}": f"http://127.0.0.1:{port}{path}"
                                      for loop, port in ports.items()}}
        print(f"direct {direct}; " + ", ".join(f"{k} {endpoints.redact(v)}" for k, v in sides.items()
                                               if k != "direct"))
        out = asyncio.run(measure(sides, args))
        return report(out, args)
    finally:
        for proxy in proxies:
            proxy.terminate()
            proxy.wait(10)
        if sim is not None:
            sim.stop()
            sim.remove_state_dir()
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
