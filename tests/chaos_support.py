"""Real moving parts for the chaos tests: worker / API subprocesses, a restartable AOF redis-server,
deadline-based waits, and a Celery client with vastkeep's exact configuration.

Every process here is started by the test, in its own session (process group), and stopped by its
pid / group id only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from celery import Celery

from tests.fixtures.redis_server import RedisServer, start_redis_server
from vastkeep.core.settings import load_settings
from worker.config import CONTROL_QUEUE, SSH_QUEUE, celery_config

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
SLOW_TASK = "vkchaos.slow"  # defined in tests/chaos_app.py; routes to vastkeep.control (not ssh/logs)


def marker_keys(run_id: str) -> dict[str, str]:
    """Redis keys the slow task writes for one run: start/finish counters, one JSON line per start."""
    base = f"vkchaos:{run_id}"
    return {"started": f"{base}:started", "done": f"{base}:done", "runs": f"{base}:runs"}


def wait_for(fn: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll ``fn`` until it returns something truthy and return it; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(interval_s)


# --------------------------------------------------------------------------------------------- redis
def start_aof_redis(port: int | None = None, data_dir: str | None = None) -> RedisServer:
    """redis-server with AOF on (``appendfsync everysec``), noeviction, on loopback; waits for PING.

    Call again with the same ``port`` and ``data_dir`` to restart it with its state (the AOF is replayed).
    """
    data_dir = data_dir or tempfile.mkdtemp(prefix="vk-chaos-redis-")
    return start_redis_server(port, data_dir, aof=True)


# ------------------------------------------------------------------------------------ environment
def clean_env(redis_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The parent's environment minus every vastkeep setting (nothing inherited by accident), plus ours."""
    names = {row["name"] for row in load_settings(environ={}, env_file=False).describe()}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(PYTHONPATH=str(ROOT), REDIS_URL=redis_url, VASTKEEP_HOME=str(home), LOG_LEVEL="INFO",
               PYTHONUNBUFFERED="1", **extra)
    return env


def client_app(redis_url: str, env: dict[str, str] | None = None) -> Celery:
    """A producer/result client configured exactly like the workers (same Settings → same celery_config)."""
    settings = load_settings(environ={**(env or {}), "REDIS_URL": redis_url}, env_file=False)
    app = Celery("vk-chaos-client", set_as_current=False)
    app.conf.update(celery_config(settings, redis_url=redis_url))
    return app


# ---------------------------------------------------------------------------------------- processes
def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc, no extra dependency)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may contain spaces/parens: fields after the last ')' are fixed
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Proc:
    """A subprocess in its own session, its output in a file."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.argv, self.log_path = argv, log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def assert_alive(self) -> None:
        assert self.alive(), f"{self.argv[:6]} exited with {self.proc.returncode}:\n{self.log()[-3000:]}"

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM (warm shutdown for a Celery worker) and wait; SIGKILL the group at the deadline."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill_group()
            rc = self.proc.wait(5)
        self.reap_group()
        return rc

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def reap_group(self) -> None:
        """Leftover pool children of a dead parent would keep consuming: remove the group."""
        self.kill_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log.close()

    stop = reap_group


class Worker(Proc):
    """``celery -A <app> worker`` on both vastkeep queues, as a subprocess."""

    def __init__(self, app: str, name: str, env: dict[str, str], cwd: Path, *, pool: str = "prefork",
                 concurrency: int = 1, queues: tuple[str, ...] = (CONTROL_QUEUE, SSH_QUEUE)) -> None:
        self.name = name
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-P", pool, "-c", str(concurrency),
                "-n", name, "-Q", ",".join(queues), "--without-mingle", "--without-gossip",
                "-l", "INFO"]
        super().__init__(argv, env, cwd, cwd / f"{name.split('@')[0]}.log")

    def wait_ready(self, timeout_s: float = 30.0) -> float:
        """Until Celery logs ``<name> ready.`` (the consumer is up); returns seconds since start."""
        def ready() -> bool:
            self.assert_alive()
            return f"{self.name} ready." in self.log()

        wait_for(ready, timeout_s, f"worker {self.name} ready")
        return time.monotonic() - self.started_at

    def pool_children(self) -> list[int]:
        return children_of(self.pid)


def start_api(env: dict[str, str], cwd: Path, port: int) -> Proc:
    """``uvicorn --factory worker.api:create``, as ``vastkeep up`` runs it."""
    argv = [sys.executable, "-m", "uvicorn", "--factory", "worker.api:create", "--host", "127.0.0.1",
            "--port", str(port)]
    return Proc(argv, env, cwd, cwd / "api.log")


class Chaos:
    """What one chaos test started (redis-servers, workers, the API, Celery clients), stopped at teardown.

    Processes are stopped first (by pid / their own process group), then the redis-servers.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)
        self.procs: list[Proc] = []
        self.servers: list[RedisServer] = []
        self.clients: list[Celery] = []

    def redis(self, *, aof: bool = False, port: int | None = None,
              data_dir: str | None = None) -> RedisServer:
        if data_dir is None:  # under the test's tmp dir, not /tmp
            data_dir = str(self.dir / f"redis-{len(self.servers)}")
            os.makedirs(data_dir, exist_ok=True)
        server = start_aof_redis(port, data_dir) if aof else start_redis_server(port, data_dir)
        self.servers.append(server)
        return server

    def env(self, redis_url: str, **extra: str) -> dict[str, str]:
        return clean_env(redis_url, self.home, **extra)

    def worker(self, app: str, label: str, env: dict[str, str], *, pool: str = "prefork",
               concurrency: int = 1, queues: tuple[str, ...] = (CONTROL_QUEUE, SSH_QUEUE)) -> Worker:
        worker = Worker(app, f"{label}-{os.getpid()}@localhost", env, self.dir, pool=pool,
                        concurrency=concurrency, queues=queues)
        self.procs.append(worker)
        return worker

    def api(self, env: dict[str, str], port: int) -> Proc:
        proc = start_api(env, self.dir, port)
        self.procs.append(proc)
        return proc

    def client(self, redis_url: str, env: dict[str, str] | None = None) -> Celery:
        app = client_app(redis_url, env)
        self.clients.append(app)
        return app

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.stop()
        for app in self.clients:
            with contextlib.suppress(Exception):
                app.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()


def report(what: str, **timings: object) -> None:
    """One line per scenario on stdout (``pytest -s`` shows it): what happened and how long it took."""
    parts = " ".join(f"{k}={v:.2f}s" if isinstance(v, float) else f"{k}={v}" for k, v in timings.items())
    print(f"[chaos] {what}: {parts}")
