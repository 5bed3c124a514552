"""The stack ``vastkeep up`` runs: its children, their shared environment, and the runtime file.

Layer 6 in one object: an embedded Redis when ``REDIS_URL`` is unset, the simulated cloud when
``VAST_API_KEY`` is unset, one worker per queue, beat, the admin API and Flower, all under a
:class:`~vastkeep.stack.supervisor.Supervisor`. Children get their configuration through environment
variables (secrets never go on a command line); the runtime file ``VASTKEEP_HOME/stack.json``
(mode 0600) records URLs, pids and the generated credentials, which are printed once at start.
``vastkeep status``/``check`` (and ``worker.config``) find that file without flags. The embedded
Redis gets a fresh password per stack (in ``redis.conf`` 0600, ``REDIS_URL`` and ``stack.json`` only);
every printed URL goes through :func:`~vastkeep.core.settings.redact_url`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from vastkeep.core.clock import SYSTEM_CLOCK, iso
from vastkeep.core.errors import StackError
from vastkeep.stack.stackfile import (
    SECRET_FIELDS,
    STACK_FILE,
    StackFile,
    json_object,
    pid_alive,
    public_view,
    read_stack,
    text_field,
    write_private_json,
)

if TYPE_CHECKING:
    from redis import Redis

    from vastkeep.core.settings import Settings
    from vastkeep.stack.supervisor import ChildStatus, Supervisor

log = logging.getLogger("vastkeep.stack")

REDIS_CONFIG_FILE = "redis.conf"
DEMO_SIM_MIN_GAP_MS = 300  # `vastkeep up`'s simulated cloud answers 429 to calls sooner than this


# ── the stack ────────────────────────────────────────────────────────────────
class Stack:
    """The children of ``vastkeep up``, their shared environment and the runtime file."""

    def __init__(self, settings: Settings, environ: dict[str, str], *, control_concurrency: int = 4,
                 ssh_concurrency: int | None = None, out: TextIO = sys.stdout, cli: str = "vastkeep") -> None:
        from vastkeep.stack.supervisor import Supervisor  # noqa: PLC0415

        self.settings = settings
        self.out = out
        self.cli = cli  # how the banner tells a second terminal to run `vastkeep`
        self.home = Path(settings.vastkeep_home).resolve()
        self.logs = self.home / "logs"
        self.env = dict(environ)
        self.env["VASTKEEP_HOME"] = str(self.home)
        self.env["PYTHONUNBUFFERED"] = "1"
        root = project_root()
        if root:
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in (root, self.env.get("PYTHONPATH")) if p)
        # one pool slot per keepalive shard: each runner holds its slot for its whole bounded run
        # the SSH worker runs threads: collectors wait on the network (paramiko blocks), and each bounds
        # itself (SSH_COLLECT_HOLD_S, a deadline on every read), since no time limit is enforced on threads
        ssh = ssh_concurrency or int(getattr(settings, "ssh_worker_concurrency", 64))
        self.pools = {"control": "prefork", "ssh": "threads", "keepalive": "prefork"}
        self.concurrency = {"control": control_concurrency, "ssh": ssh,
                            "keepalive": max(1, int(getattr(settings, "comfyui_keepalive_shards", 2)))}
        self.info: StackFile = {"version": 1, "pid": os.getpid(), "started_at": now_iso(),
                                     "cwd": str(Path.cwd()), "home": str(self.home), "simulated": False}
        self.supervisor = Supervisor(on_change=self._write, publish=self._publish)
        self._redis: Redis[str] | None = None
        self._owns_home = False  # True once no other live stack runs from this folder
        self._ports: list[int] = []  # ports this stack claimed (embedded_redis.claim_port), freed at shutdown

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def _write(self, sup: Supervisor | None = None) -> None:
        if not self.home.is_dir():  # failed before anything started
            return
        self.info["children"] = self.supervisor.status()
        write_private_json(self.home / STACK_FILE, self.info)

    def _publish(self, status: dict[str, ChildStatus]) -> None:
        """Publish the watchdog's status to the stack's Redis, for ``GET .../watchdog/status``."""
        from vastkeep.state import Keys, connect  # noqa: PLC0415
        from vastkeep.supervision import publish_processes  # noqa: PLC0415

        url = text_field(self.info, "redis_url")
        if url is None:
            return  # Redis is not chosen yet
        if self._redis is None:  # short deadlines, no retries: the watchdog loop must never wait on Redis
            self._redis = connect(url, socket_timeout_s=1.0, socket_connect_timeout_s=1.0, retry_attempts=0)
        publish_processes(self._redis, Keys(), SYSTEM_CLOCK, status)

    def _spawn(self, cid: str, name: str, argv: list[str], *, env: dict[str, str] | None = None,
               stop_last: bool = False) -> None:
        from vastkeep.stack.supervisor import ChildSpec  # noqa: PLC0415

        self.supervisor.register(cid, ChildSpec(name=name, argv=argv, env=env or self.env, cwd=os.getcwd(),
                                                log_path=str(self.logs / f"{cid}.log"), stop_last=stop_last))

    def spawn_worker(self, cid: str, queue: str, *, node: str | None = None,
                     env: dict[str, str] | None = None, concurrency: int | None = None) -> None:
        """A supervised ``celery -A worker worker`` for ``queue`` (node ``<queue>@%h`` unless ``node``): the
        stack's own workers, and the soak's second worker host (its own node names and ``REDIS_URL``)."""
        py = sys.executable
        self._spawn(cid, f"Worker-{cid.removeprefix('worker-')}", [
            py, "-m", "celery", "-A", "worker", "worker", "-Q", f"vastkeep.{queue}",
            "-n", node or f"{queue}@%h",
            "-P", self.pools[queue], "-c", str(concurrency or self.concurrency[queue]),
            "-l", self.settings.log_level], env=env)

    def spawn_beat(self, cid: str) -> None:
        """A supervised ``celery -A worker beat``: the stack's, or a second one (a second host's beat; the
        redbeat lock in Redis lets one of them send)."""
        self._spawn(cid, "Beat" if cid == "beat" else f"Beat-{cid}",
                    [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", self.settings.log_level])

    def _wait(self, stop: threading.Event, what: str, timeout_s: float, ready: Callable[[], bool],
              cid: str) -> None:
        deadline = SYSTEM_CLOCK.monotonic() + timeout_s
        while not ready():
            if stop.is_set():
                raise StackError("interrupted")
            if SYSTEM_CLOCK.monotonic() > deadline:
                raise StackError(f"{what} did not become ready within {timeout_s:.0f}s; "
                                 f"see {self.logs / (cid + '.log')}")
            self.supervisor.poll_once()
            stop.wait(0.1)

    def _start_embedded_redis(self, stop: threading.Event, attempts: int = 3) -> str:
        """The embedded redis-server's URL once it answers. A port found free can be taken before Redis binds
        it (another stack starting beside this one): a Redis that exits before answering is started again on
        another free port, up to ``attempts`` times."""
        from vastkeep.stack import embedded_redis as er  # noqa: PLC0415

        password = new_secret()
        data = self.home / "redis"
        data.mkdir(exist_ok=True)
        config = er.write_config(self.home / REDIS_CONFIG_FILE, password)
        for attempt in range(attempts):
            port = er.pick_port() if attempt == 0 else er.pick_port(())
            self._ports.append(port)
            self._spawn("redis", "Redis", er.redis_argv(port, data, config=config), stop_last=True)
            def up_or_exited(p: int = port) -> bool:
                return bool(er.wait_ready(p, 0.3, password=password)) or self._exited("redis")

            self._wait(stop, "embedded redis", 20, up_or_exited, "redis")
            if not self._exited("redis"):
                return er.redis_url(port, password=password)
            self.supervisor.unregister("redis")
            er.release_port(port)
            log.warning("embedded redis exited before answering on port %d (taken meanwhile?): "
                        "starting it on another free port", port)
        raise StackError(f"embedded redis did not start ({attempts} attempts); see {self.logs / 'redis.log'}")

    def _exited(self, cid: str) -> bool:
        """The child is no longer running (it crashed and waits for its restart)."""
        return bool(self.supervisor.status()[cid]["status"] != "running")

    def _check_ports(self) -> None:
        from vastkeep.stack.embedded_redis import port_is_free  # noqa: PLC0415

        s = self.settings
        if not port_is_free(s.admin_api_port, s.admin_api_host):
            raise StackError(f"port {s.admin_api_port} on {s.admin_api_host} is already in use: "
                             "set ADMIN_API_PORT to a free port (or stop what listens there)")
        if not port_is_free(s.flower_port, "127.0.0.1"):
            raise StackError(f"port {s.flower_port} is already in use: set FLOWER_PORT to a free port")
        if not port_is_free(s.proxy_port, s.proxy_host):
            raise StackError(f"port {s.proxy_port} on {s.proxy_host} is already in use: set PROXY_PORT to a "
                             "free port (or stop what listens there)")

    def start(self, stop: threading.Event) -> None:
        """Start every child in dependency order; StackError when something cannot start."""

        s = self.settings
        old = read_stack(self.home)
        if old and pid_alive(old.get("pid")) and old.get("pid") != os.getpid():
            raise StackError(f"a stack is already running from {self.home} (pid {old['pid']}); stop it first")
        self._owns_home = True
        self._check_ports()
        self.logs.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        py = sys.executable
        # 1. Redis
        if s.redis_url:
            url, embedded = s.redis_url, False
        else:
            url, embedded = self._start_embedded_redis(stop), True
        self.env["REDIS_URL"] = url
        self.info.update(redis_url=url, redis_embedded=embedded)
        # 2. the simulated cloud
        if s.vast_api_key is None:
            self._start_simulator(stop, py)
        self._record_vast_config()
        self.info["tokens_configured"] = tokens_configured(s, simulated=bool(self.info["simulated"]))
        # the pool as this stack runs it: a CLI in another shell (without this environment) reads it here
        self.info["pool_settings"] = {"WARM_POOL_NAME": s.warm_pool_name,
                                      "WARM_POOL_LABEL_PREFIX": s.warm_pool_label_prefix,
                                      "WARM_POOL_DESIRED_SIZE": str(s.warm_pool_desired_size)}
        # 3. credentials for the API and Flower (generated when not configured, printed once)
        admin_key = s.admin_api_key.reveal() if s.admin_api_key else new_secret()
        flower_auth = s.flower_basic_auth.reveal() if s.flower_basic_auth else f"admin:{new_secret()}"
        self.env["ADMIN_API_KEY"], self.env["FLOWER_BASIC_AUTH"] = admin_key, flower_auth
        self.env["FLOWER_PORT"] = str(s.flower_port)
        user, _, password = flower_auth.partition(":")
        host = hostname()
        self.info.update(admin_api_url=f"http://{s.admin_api_host}:{s.admin_api_port}",
                         admin_api_key=admin_key,
                         flower_url=f"http://127.0.0.1:{s.flower_port}", flower_user=user,
                         proxy_url=s.proxy_url,
                         flower_password=password,
                         workers=[f"{q}@{host}" for q in ("control", "ssh", "keepalive")])
        # 4. workers, beat, API, Flower
        celery = [py, "-m", "celery", "-A", "worker"]
        for q in ("control", "ssh", "keepalive"):
            self.spawn_worker(f"worker-{q}", q)
        # the scheduler is celery-redbeat (worker.config): schedule and lock in this stack's Redis, so a
        # restarted beat child or a second stack's beat on the same Redis never sends an entry twice
        self.spawn_beat("beat")
        self._spawn("api", "AdminAPI", [py, "-m", "uvicorn", "--factory", "worker.api:create",
                                        "--host", s.admin_api_host, "--port", str(s.admin_api_port),
                                        "--log-level", "warning", "--no-access-log"])
        self._spawn("flower", "Flower", celery + ["flower", "--address=127.0.0.1", f"--port={s.flower_port}"])
        self._spawn("proxy", "Proxy", [py, "-m", "vastkeep.cli", "proxy"])
        self._write()
        self._announce(admin_key, user, password)

    def _start_simulator(self, stop: threading.Event, py: str) -> None:
        from vastkeep.stack.embedded_redis import pick_port  # noqa: PLC0415

        if importlib.util.find_spec("vastkeep.sim.cli") is None:
            raise StackError("VAST_API_KEY is unset and the simulator (vastkeep.sim) is not installed")
        sim_dir = self.home / "sim"
        ready = sim_dir / "ready.json"
        sim_dir.mkdir(exist_ok=True)
        ready.unlink(missing_ok=True)
        keys = {v: new_secret() for v in ("VASTKEEP_SIM_API_KEY", "VASTKEEP_SIM_HF_TOKEN",
                                          "VASTKEEP_SIM_CIVITAI_TOKEN", "VASTKEEP_SIM_CONTROL_TOKEN")}
        port = pick_port(range(0))  # fixed for the stack's life, so a restarted simulator keeps its URLs
        self._ports.append(port)
        argv = [py, "-m", "vastkeep.cli", "simulate", "--host", "127.0.0.1", "--port", str(port),
                "--state-dir", str(sim_dir), "--ready-file", str(ready), "--log-level", "WARNING"]
        # A realistic Vast.ai rate limit (below VAST_API_MIN_GAP_MS, the gap the shared limiter keeps).
        keys["VASTKEEP_SIM_MIN_GAP_MS"] = self.env.get("VASTKEEP_SIM_MIN_GAP_MS") or str(DEMO_SIM_MIN_GAP_MS)
        self._spawn("simulator", "Simulator", argv, env={**self.env, **keys}, stop_last=True)
        self._wait(stop, "simulated cloud", 60, ready.exists, "simulator")
        info = json.loads(ready.read_text())
        self.env.update({
            "VAST_API_URL": info["vast_api_url"], "VAST_API_KEY": info["api_key"],
            "HUGGINGFACE_API_URL": info["huggingface_api_url"], "HUGGINGFACE_HUB_TOKEN": info["hf_token"],
            "CIVITAI_API_URL": info["civitai_api_url"], "CIVITAI_TOKEN": info["civitai_token"],
            "VASTKEEP_SIMULATED": "1"})
        for var, key in (("SSH_KEY_PATH", "ssh_private_key_path"),
                         ("SSH_KNOWN_HOSTS_PATH", "ssh_known_hosts_path")):
            if info.get(key):
                self.env[var] = str(info[key])
        self.info.update(simulated=True, simulator={"vast_api_url": info["vast_api_url"],
                                                     "control_url": info["control_url"],
                                                     "control_token": info["control_token"]})

    def _record_vast_config(self) -> None:
        """Which Vast.ai API the children use, real or simulated, and any likely mistake (no secrets)."""
        from vastkeep.core.config_hints import config_warnings, shown_url, vast_mode  # noqa: PLC0415

        simulated = json_object(self.info.get("simulator")).get("vast_api_url")
        url = str(simulated) if self.info["simulated"] else self.settings.vast_api_url
        findings = config_warnings(self.settings)
        self.info.update(vast_api_url=shown_url(url), vast_mode=vast_mode(self.settings),
                         config_warnings=[{"fatal": fatal, "text": text} for fatal, text in findings])
        for _, text in findings:
            log.warning("⚠️  configuration: %s", text)

    def _announce(self, admin_key: str, user: str, password: str) -> None:
        from vastkeep.core.settings import redact_url  # noqa: PLC0415

        i = self.info
        self.say("=" * 72)
        for line in vast_banner_lines(i):
            self.say(line)
        where = f" (embedded, data in {self.home / 'redis'})" if i["redis_embedded"] else ""
        self.say(f"  redis       {redact_url(str(i['redis_url']))}{where}")
        self.say(f"  admin API   {i['admin_api_url']}   (OpenAPI docs: {i['admin_api_url']}/docs)")
        self.say(f"  metrics     {i['admin_api_url']}/metrics")
        self.say(f"  Flower      {i['flower_url']}")
        for line in simulator_lines(i, self.home, self.cli):
            self.say(line)
        self.say(f"  ComfyUI     {i.get('proxy_url') or self.settings.proxy_url}/c/<endpointToken>/ "
                 "(a lease's endpointUrl), /pool/  "
                 "(docs/proxy.md)")
        self.say(f"  logs        {self.logs}")
        if not self.settings.admin_api_key:
            self.say(f"  X-Admin-Key (generated, shown once): {admin_key}")
        if not self.settings.flower_basic_auth:
            self.say(f"  Flower login (generated, shown once): {user} / {password}")
        self.say(f"  runtime file {self.home / STACK_FILE} (0600). Ctrl-C stops everything.")
        self.say(f"  In another terminal in this folder: {self.cli} status   (no venv activation needed)")
        self.say("=" * 72)

    def supervise(self, stop: threading.Event) -> None:
        """Watch until a signal, then stop every child and remove the runtime file."""
        try:
            self.supervisor.run(stop)
        finally:
            self.shutdown()
        self.say("vastkeep up: every process stopped")

    def shutdown(self) -> None:
        """Stop all children (idempotent) and remove the runtime file."""
        self.supervisor.stop_all()
        from vastkeep.stack.embedded_redis import release_port  # noqa: PLC0415

        for port in self._ports:  # the processes are gone: another stack may have these ports now
            release_port(port)
        self._ports.clear()
        if self._owns_home:  # never the runtime files of another live stack in this folder
            (self.home / STACK_FILE).unlink(missing_ok=True)
            (self.home / REDIS_CONFIG_FILE).unlink(missing_ok=True)


# ── small helpers ────────────────────────────────────────────────────────────
_MODE_WORDS = {
    "real": "REAL Vast.ai: real instances, real money",
    "simulated": "the simulator's",
    "stand-in": "a real VAST_API_KEY with VASTKEEP_SIMULATED=1 (a stand-in of the API?)",
}


def vast_banner_lines(info: Mapping[str, object]) -> list[str]:
    """The banner's Vast.ai lines: the API URL in use, real or simulated, and loud configuration warnings."""
    mode = str(info.get("vast_mode") or ("simulated" if info.get("simulated") else "real"))
    lines = []
    if mode == "simulated":
        lines.append("  ⚠️  cloud is SIMULATED: no real Vast.ai instances, no real money (VAST_API_KEY unset)")
    lines.append(f"  Vast.ai API {info.get('vast_api_url')}   ({_MODE_WORDS.get(mode, mode)})")
    findings = info.get("config_warnings")
    for finding in findings if isinstance(findings, list) else []:
        lines.append("  " + "!" * 70)
        lines.append(f"  ⚠️  WARNING: {json_object(finding).get('text')}")
        lines.append("  " + "!" * 70)
    return lines


def simulator_lines(info: Mapping[str, object], home: Path, cli: str = "vastkeep") -> list[str]:
    """Where the simulated cloud's control API (``/_sim``) listens and where its token lives (never the
    token), with the command that breaks an instance; nothing for a stack on the real cloud."""
    control = json_object(info.get("simulator")).get("control_url")
    if not info.get("simulated") or not control:
        return []
    return [f"  simulator   {control}   (control API, header X-Sim-Token)",
            f"              its token: \"control_token\" in {shown_path(home / 'sim' / 'ready.json')} "
            f"(and {shown_path(home / STACK_FILE)})",
            f"              break an instance: {cli} simulate fault <id> "
            "crash|hang|offline|exited|outbid|ssh-drop|heal"]


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when inside it (what a user types from there)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def tokens_configured(settings: Settings, *, simulated: bool) -> dict[str, bool]:
    """Which provider tokens the children have (the simulated cloud hands them all three); never a value.
    ``vastkeep status`` cannot read the stack's environment, so it reads this from ``stack.json``."""
    from vastkeep.tokens import CIVITAI, HUGGINGFACE, VASTAI  # noqa: PLC0415

    return {VASTAI: simulated or settings.vast_api_key is not None,
            HUGGINGFACE: simulated or settings.huggingface_hub_token is not None,
            CIVITAI: simulated or settings.civitai_token is not None}


def project_root() -> str | None:
    """Folder holding the ``worker``/``tasks`` packages (added to children's PYTHONPATH)."""
    spec = importlib.util.find_spec("worker")
    if spec is None or not spec.origin:
        return None
    return str(Path(spec.origin).resolve().parent.parent)


def new_secret() -> str:
    """A fresh random credential (URL-safe, no commas: Flower splits FLOWER_BASIC_AUTH on them)."""
    return secrets.token_urlsafe(24)


def hostname() -> str:
    """The name Celery's ``%h`` expands to."""
    return socket.gethostname()


def now_iso() -> str | None:
    return iso(SYSTEM_CLOCK.now())


__all__ = ["SECRET_FIELDS", "STACK_FILE", "Stack", "StackError", "pid_alive", "public_view", "read_stack",
           "simulator_lines", "tokens_configured", "vast_banner_lines", "write_private_json"]
