"""The simulated cloud's core: instances and their lifecycle, faults, keys, the request log, SSH and the
per-instance listeners, as one plain class with no web framework in it.

The HTTP side (``server.py``) and its route modules (``vast_api``, ``tokens_api``, ``control_api``) are built
on top of :class:`Simulator` and import this module, never each other, so the core can be read, started and
tested without aiohttp's web layer. The ComfyUI stand-in is plugged in as a protocol factory.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.sim.faults import ApiFault, ApiFaults, Ledger, RequestLog, TokenBook, fingerprint
from vastkeep.sim.net import Network, Path, raise_fd_limit
from vastkeep.sim.ratelimit import MinGapRule
from vastkeep.sim.ssh import SshService
from vastkeep.sim.state import (
    COMFY_DIRECT,
    COMFY_FALLBACK,
    COMFY_MAPPED,
    OCI_ERROR,
    SSH_DIRECT,
    SSH_PROXY,
    Endpoint,
    Instance,
    IpAllocator,
    Lifecycle,
    make_offers,
)

log = logging.getLogger("vastkeep.sim")

DEFAULT_RENT_OPTIONS: dict[str, Any] = {
    "ssh": True,
    "ssh_proxy": True,
    "direct_8188": False,
    "port_18188": False,
    "ip_trailing_newline": None,
}
#: How many ``request_logs`` results are kept for their ``result_url`` (oldest dropped first).
LOG_RESULTS_KEPT = 256


@dataclass
class SimConfig:
    """What the simulator is started with. Keys are generated when not given."""

    state_dir: FsPath
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = ""
    hf_token: str = ""
    civitai_token: str = ""
    control_token: str = ""
    ssh_backend: str = "auto"  # auto | sshd | builtin | off
    seed: int | None = None
    min_gap_s: float = 0.0  # Vast.ai's per-endpoint, per-key minimum gap (0 = off; sim/ratelimit.py)

    def __post_init__(self) -> None:
        self.api_key = self.api_key or secrets.token_hex(32)
        self.hf_token = self.hf_token or "hf_" + secrets.token_urlsafe(24)
        self.civitai_token = self.civitai_token or secrets.token_hex(16)
        self.control_token = self.control_token or secrets.token_urlsafe(24)

    def __repr__(self) -> str:  # keys never in reprs
        return f"SimConfig(state_dir={str(self.state_dir)!r}, host={self.host!r}, port={self.port})"


@dataclass
class Admission:
    """What the core decided about one API request before its handler runs."""

    service: str | None
    entry: dict[str, Any] | None = None
    fault: ApiFault | None = None

    @property
    def authorized(self) -> bool:
        return self.entry is None or bool(self.entry["key_valid"])


def service_of(path: str) -> str | None:
    """Which simulated provider a path belongs to (``None``: not an authenticated API route)."""
    if path.startswith(("/api/v0", "/api/v1/instances")):
        return "vast"
    if path.startswith("/api/whoami"):
        return "hf"
    if path.startswith("/api/v1/me"):
        return "civitai"
    return None


class Simulator:
    """Owns everything; every mutation happens on the event loop thread."""

    def __init__(
        self,
        config: SimConfig,
        clock: Clock = SYSTEM_CLOCK,
        comfy_protocol: Callable[[], asyncio.Protocol] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = random.Random(config.seed)
        self.lifecycle = Lifecycle()
        self.rent_defaults: dict[str, Any] = dict(DEFAULT_RENT_OPTIONS)
        self.instances: dict[int, Instance] = {}
        self.offers = make_offers()
        self.tokens = TokenBook(config.api_key, config.hf_token, config.civitai_token)
        self.api_faults = ApiFaults()
        self.requests = RequestLog()
        self.ledger = Ledger()
        self.rate_limit = MinGapRule(config.min_gap_s)
        self.log_results: OrderedDict[str, str] = OrderedDict()
        # A random /16 per simulator, so two simulators on one machine do not share addresses.
        self.ips = IpAllocator(0x7F000000 | (self.rng.randrange(1, 250) << 16))
        self.ssh_host_ip = self.ips.allocate()
        self._next_ssh_port = 20000
        self._next_id = 7_835_600 + self.rng.randrange(0, 1000) * 10
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.ssh = SshService(config.state_dir, self._ip_of) if config.ssh_backend != "off" else None
        if self.ssh is not None:
            self.ssh.backend = config.ssh_backend
        self.net = Network(comfy_protocol or asyncio.Protocol, self.ssh.handle if self.ssh else _no_ssh)
        self.port = 0

    # ── start / stop ────────────────────────────────────────────────────────
    async def start(self) -> None:
        """Prepare the state directory and start the SSH server (the HTTP side starts after this)."""
        raise_fd_limit()
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        (self.config.state_dir / "instances").mkdir(exist_ok=True)
        if self.ssh is not None:
            self.ssh.start()
            await self.ssh.wait_ready()

    async def stop_instances(self) -> None:
        """Stop every lifecycle task and close every per-instance listener."""
        for task in self._tasks.values():
            task.cancel()
        await self.net.close()

    def stop_ssh(self) -> None:
        if self.ssh is not None:
            self.ssh.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def _ip_of(self, instance_id: int) -> str | None:
        inst = self.instances.get(instance_id)
        return inst.ip if inst else None

    # ── API requests: who is calling, which fault applies ──────────────────
    def admit(self, method: str, path: str, query: dict[str, str], authorization: str) -> Admission:
        """Log an API request (without its key) and decide its fault and whether its key is valid."""
        service = service_of(path)
        if service is None:
            return Admission(None)
        key, how = None, "missing"
        if authorization.startswith("Bearer "):
            key, how = authorization[7:].strip(), "bearer"
        elif service == "vast" and query.get("api_key"):
            key, how = query["api_key"], "query"
        entry = self.requests.add(
            {
                "service": service,
                "method": method,
                "path": path,
                "query": {k: v for k, v in query.items() if k != "api_key"},
                "auth": how,
                "key_valid": self.tokens.check(service, key),
                "key_fingerprint": fingerprint(key) if key else None,
                "ts": self.clock.now(),
                "status": None,
            }
        )
        return Admission(service, entry, self.api_faults.take(service, path, method))

    # ── instances ───────────────────────────────────────────────────────────
    def _endpoints(self, ip: str, opts: dict[str, Any]) -> tuple[int, dict[str, Endpoint]]:
        # below Linux's ephemeral range (32768+): a client socket bound to this 127.x address (the SSH
        # proxy's, a probe's) can then never hold a port an instance later listens on
        start = self.rng.randrange(10000, 32000)
        eps = {COMFY_MAPPED: Endpoint(COMFY_MAPPED, ip, start + 4)}
        if opts.get("port_18188"):
            eps[COMFY_FALLBACK] = Endpoint(COMFY_FALLBACK, ip, start + 5)
        if opts.get("direct_8188"):
            eps[COMFY_DIRECT] = Endpoint(COMFY_DIRECT, ip, 8188)
        if opts.get("ssh") and self.ssh is not None:
            eps[SSH_DIRECT] = Endpoint(SSH_DIRECT, ip, start + 1)
            if opts.get("ssh_proxy", True):
                self._next_ssh_port += 1
                eps[SSH_PROXY] = Endpoint(SSH_PROXY, self.ssh_host_ip, self._next_ssh_port)
        return start, eps

    def new_instance(self, offer: dict[str, Any], opts: dict[str, Any]) -> Instance:
        """Create the record (status null); the caller starts its lifecycle."""
        merged = {**self.rent_defaults, **{k: v for k, v in opts.items() if v is not None}}
        ip = self.ips.allocate()
        self._next_id += 1
        start, eps = self._endpoints(ip, merged)
        newline = merged.get("ip_trailing_newline")
        inst = Instance(
            id=self._next_id,
            machine_id=offer["machine_id"],
            ip=ip,
            offer=offer,
            label=merged.get("label"),
            image=merged.get("image") or "vastai/comfy:latest",
            start_date=self.clock.now(),
            endpoints=eps,
            direct_port_start=start,
            ip_trailing_newline=bool(self.rng.random() < 0.5 if newline is None else newline),
        )
        inst.extra_env = [[str(k), str(v)] for k, v in (merged.get("env") or {}).items()]
        inst.disk_space = float(merged.get("disk") or inst.disk_space)
        inst.onstart = merged.get("onstart")
        inst.runtype = merged.get("runtype") or inst.runtype
        inst.is_bid = merged.get("price") is not None
        inst.lifecycle = Lifecycle(**self.lifecycle.as_dict())
        inst.lifecycle.update(merged.get("lifecycle") or {})
        self.instances[inst.id] = inst
        if self.ssh is not None and (SSH_DIRECT in eps or SSH_PROXY in eps):
            inst_dir = self.config.state_dir / "instances" / str(inst.id)
            (inst_dir / "var" / "log").mkdir(parents=True, exist_ok=True)
            (inst_dir / "var" / "log" / "onstart.log").touch()
            self.ssh.link_instance(ip, inst_dir)
            for ep in (eps.get(SSH_DIRECT), eps.get(SSH_PROXY)):
                if ep is not None:
                    self.ssh.add_known_host(ep.ip, ep.port)
        return inst

    def log_path(self, inst: Instance) -> FsPath:
        return self.config.state_dir / "instances" / str(inst.id) / "var" / "log" / "onstart.log"

    def append_log(self, inst: Instance, lines: list[str]) -> None:
        """Append to the instance's container log (also what ``request_logs`` and SSH ``tail`` read)."""
        inst.log_lines.extend(line.rstrip("\n") for line in lines)
        path = self.log_path(inst)
        if path.parent.is_dir():
            with open(path, "a") as fh:
                fh.writelines(line.rstrip("\n") + "\n" for line in lines)

    def container_log(self, inst: Instance, tail: int | None = None, grep: str | None = None) -> str:
        """The container log as ``request_logs`` serves it: the last ``tail`` lines containing ``grep``."""
        lines = list(inst.log_lines)
        if grep:
            lines = [line for line in lines if grep in line]
        if tail is not None and tail >= 0:
            lines = lines[-tail:] if tail else []
        return "".join(line + "\n" for line in lines)

    def store_log_result(self, text: str) -> str:
        """Keep a log snapshot under an unguessable name (the real API uploads it and hands out a URL)."""
        name = secrets.token_urlsafe(18)
        self.log_results[name] = text
        while len(self.log_results) > LOG_RESULTS_KEPT:
            self.log_results.popitem(last=False)
        return name

    def begin(self, inst: Instance, from_loading: bool = False) -> None:
        """(Re)start the status lifecycle of an instance as a background task."""
        old = self._tasks.pop(inst.id, None)
        if old is not None:
            old.cancel()
        self._tasks[inst.id] = asyncio.create_task(self._lifecycle(inst, from_loading))

    async def _lifecycle(self, inst: Instance, from_loading: bool) -> None:
        lc = inst.lifecycle
        try:
            if not from_loading:
                inst.actual_status, inst.status_msg = None, "Provisioning"
                await asyncio.sleep(lc.created_s / 2)
                inst.actual_status = "created"
                await asyncio.sleep(lc.created_s / 2)
            inst.actual_status, inst.status_msg = "loading", f"Pulling image {inst.image}"
            await self._logging_phase(inst, lc.loading_s, "[image] pulling layer")
            inst.actual_status, inst.status_msg = "running", f"success, running {inst.image}"
            inst.running_since = self.clock.now()
            await self.net.apply(inst)
            self.append_log(inst, ["[onstart] container started; provisioning ComfyUI"])
            if inst.onstart:
                self.append_log(inst, [f"[onstart] running the onstart script ({len(inst.onstart)} bytes)"])
            await self._logging_phase(inst, lc.boot_s, "[provision] installing nodes and models")
            inst.comfy_ready = True
            self.append_log(inst, ["[onstart] Starting server", "To see the GUI go to: http://0.0.0.0:8188"])
            await self.net.apply(inst)
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            log.warning("instance %s: could not open its listeners: %s", inst.id, exc)
        finally:
            if self._tasks.get(inst.id) is asyncio.current_task():
                self._tasks.pop(inst.id, None)

    async def _logging_phase(self, inst: Instance, duration_s: float, text: str) -> None:
        """Wait ``duration_s`` while the provisioning log grows, one line per ``log_interval_s``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_s
        n = 0
        step = max(inst.lifecycle.log_interval_s, 0.01)
        while True:
            n += 1
            self.append_log(inst, [f"{text} ({n})"])
            left = end - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(step, left))

    async def make_running(self, inst: Instance) -> None:
        """Skip the lifecycle: running and ComfyUI ready now (bulk creation, tests)."""
        inst.actual_status, inst.status_msg = "running", f"success, running {inst.image}"
        inst.running_since = self.clock.now()
        inst.comfy_ready = True
        await self.net.apply(inst, strict=True)

    async def destroy(self, inst: Instance, via: str = "api") -> None:
        if inst.id in self.instances:
            self.ledger.add("destroy", inst.id, self.clock.now(), label=inst.label, via=via)
        task = self._tasks.pop(inst.id, None)
        if task is not None:
            task.cancel()
        self.instances.pop(inst.id, None)
        await self.net.remove(inst)
        if self.ssh is not None:
            self.ssh.unlink_instance(inst.ip)
        self.ips.release(inst.ip)

    async def set_intended(self, inst: Instance, state: str) -> None:
        """``PUT /instances/{id}/ {"state": ...}``: stop or (re)start.

        A stop is what the real API shows: ``intended_status`` and ``next_state`` turn ``stopped`` at once,
        ``cur_state`` once the container is down, and ``actual_status`` is then ``exited`` (the container's
        own state; the CLI's ``--status`` filter knows running, loading, exited and created only).
        """
        if state == "stopped":
            old = self._tasks.pop(inst.id, None)
            if old is not None:
                old.cancel()
            inst.intended_status = inst.next_state = "stopped"
            await asyncio.sleep(inst.lifecycle.stop_s)
            inst.cur_state = "stopped"
            inst.actual_status, inst.status_msg = "exited", "Exited (0) stopped by user"
            inst.comfy_ready = False
            inst.running_since = None
            await self.net.apply(inst)
        elif state == "running" and (inst.actual_status != "running" or inst.intended_status != "running"):
            inst.intended_status = inst.cur_state = inst.next_state = "running"
            inst.fault = None
            self.begin(inst, from_loading=True)

    async def set_fault_state(self, inst: Instance, state: str) -> None:
        """Put an instance into exited / offline / outbid / error, or back to running (``running``)."""
        old = self._tasks.pop(inst.id, None)
        if old is not None:
            old.cancel()
        if state == "running":
            inst.fault = None
            inst.intended_status = inst.cur_state = inst.next_state = "running"
            await self.make_running(inst)
            return
        inst.fault, inst.comfy_ready = state, state == "offline" and inst.comfy_ready
        if state != "outbid":  # the other faults strike an instance that is meant to run
            inst.intended_status = inst.cur_state = inst.next_state = "running"
        if state == "exited":  # the container died while it was meant to run
            inst.actual_status, inst.status_msg = "exited", "Exited (137) container died"
        elif state == "offline":
            inst.actual_status, inst.status_msg = "offline", "host offline: no recent heartbeat"
        elif state == "outbid":  # the host stopped the container: every state field says stopped
            inst.actual_status, inst.status_msg = "exited", "stopped: outbid by a higher bid"
            inst.intended_status = inst.cur_state = inst.next_state = "stopped"
            inst.is_bid = True
        elif state == "error":
            inst.actual_status, inst.status_msg = "created", OCI_ERROR
        else:
            raise ValueError(f"unknown state {state!r}")
        await self.net.apply(inst)

    async def clear_faults(self) -> None:
        """Every fault off: API rules, tokens, endpoint faults, fault states."""
        self.api_faults.clear()
        self.tokens.reset()
        for inst in list(self.instances.values()):
            for ep in inst.endpoints.values():
                ep.clear()
            if inst.fault is not None:
                await self.set_fault_state(inst, "running")
            else:
                await self.net.apply(inst)

    async def reset(self) -> None:
        """Back to a fresh simulator: no instances, no faults, default lifecycle and rent options."""
        for inst in list(self.instances.values()):  # destroyed first: nothing to re-open for them
            await self.destroy(inst, via="reset")
        await self.clear_faults()
        self.lifecycle = Lifecycle()
        self.rent_defaults.update(DEFAULT_RENT_OPTIONS)
        self.requests.clear()
        self.rate_limit.reset()
        self.log_results.clear()
        self.ledger.clear()

    def stats(self) -> dict[str, object]:
        return {
            "instances": len(self.instances),
            "listeners": {s: self.net.count(s) for s in ("serve", "blackhole", "reset")},
            "ssh_backend": self.ssh.backend if self.ssh else "off",
            "fd_soft_limit": raise_fd_limit(),
        }


async def _no_ssh(path: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()
