"""What the benches share, with the package alone (no pytest, nothing from ``tests``): a private redis-server
on a free loopback port, a free port, and a log that keeps growing. The simulated cloud comes from the library
(:func:`vastkeep.sim.process.spawn`).

The redis-server is the embedded one of ``vastkeep up`` (:mod:`vastkeep.stack.embedded_redis`: the same
binary, ``noeviction``) with persistence off and no password: a bench measures vastkeep, not fsync.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from vastkeep.core.processes import end_process
from vastkeep.stack.embedded_redis import redis_argv, wait_ready

#: Overrides of the embedded server's options (a later option wins): no AOF, no RDB, no log file.
BENCH_REDIS_OPTIONS = ("--appendonly", "no", "--save", "")


def start_log_writer(path: Path, stop: threading.Event, line: Callable[[int], str],
                     every_s: float) -> threading.Thread:
    """A daemon thread appending ``line(n)`` (n = 1, 2, ...) to ``path`` every ``every_s`` until ``stop``: a
    provisioning log that keeps growing while the SSH benches and tests kill links and workers."""
    def run() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            with open(path, "ab") as fh:
                fh.write(line(n).encode())
            time.sleep(every_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A bench's own redis-server: ``url``, ``client()``, ``stop()``."""

    port: int
    proc: subprocess.Popen
    dir: str
    owns_dir: bool = False  # a directory it made itself: removed by stop()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5, decode_responses=True)

    def stop(self) -> None:
        end_process(self.proc, 10)
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def start_redis_server(port: int | None = None, data_dir: str | None = None) -> RedisServer:
    """Start a redis-server on ``port`` (default: a free one) and wait until it answers PING."""
    port = port or free_port()
    owns_dir = data_dir is None
    data_dir = data_dir or tempfile.mkdtemp(prefix="vk-bench-redis-")
    argv = [*redis_argv(port, Path(data_dir)), *BENCH_REDIS_OPTIONS]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port=port, proc=proc, dir=data_dir, owns_dir=owns_dir)
    if not wait_ready(port, timeout_s=10.0):
        server.stop()
        raise RuntimeError(f"redis-server did not start on port {port}")
    return server


__all__ = ["RedisServer", "free_port", "start_log_writer", "start_redis_server"]
