"""The baseline for ``bench/bench_sim_scale.py``: one bare aiohttp app served on N listening sockets.

What the simulator's ComfyUI side would cost with nothing of the simulator in it: no instance state, no
Vast.ai API, no faults, no per-path bookkeeping; the same aiohttp server machinery on the same
addresses (one ``loop.create_server(runner.server, sock=...)`` per endpoint, as ``vastkeep.sim.net`` does),
answering ``GET /system_stats`` with a fixed ComfyUI-shaped body.

Run by the bench as a child process: ``python -m bench.sim_scale_baseline ENDPOINTS.json``, where the file
holds ``[[ip, port], ...]``. It prints ``empty`` once aiohttp is set up, waits for a line on stdin, binds
every endpoint, prints ``loaded <seconds> <count>``, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys

from aiohttp import web

BODY = {"system": {"os": "posix", "python_version": "3.11", "comfyui_version": "0.3.43"},
        "devices": [{"name": "cuda:0", "type": "cuda", "vram_total": 25_757_220_864}]}


async def system_stats(_: web.Request) -> web.Response:
    return web.json_response(BODY)


def listener(ip: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(128)
    s.setblocking(False)
    return s


async def main(path: str) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(path) as fh:
        endpoints = json.load(fh)
    app = web.Application()
    app.router.add_get("/system_stats", system_stats)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    loop = asyncio.get_running_loop()
    print("empty", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    t0 = loop.time()
    servers = [await loop.create_server(runner.server, sock=listener(ip, port)) for ip, port in endpoints]
    print(f"loaded {loop.time() - t0:.4f} {len(servers)}", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
    for server in servers:
        server.close()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
