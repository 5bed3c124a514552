"""The simulated cloud's core: instances and their lifecycle, faults, keys, the request log, SSH and the
per-instance listeners, as one plain class with no web framework in it.

:class:`Simulator` owns the state and creates instances; what it does with them comes by concern from its
bases: :class:`~vastkeep.sim.admission.Admitting` (the request gate), :class:`~vastkeep.sim.lifecycle.
InstanceLifecycle` (status changes) and :class:`~vastkeep.sim.container_logs.ContainerLogs` (the log).

The HTTP side (``server.py``) and its route modules (``vast_api``, ``tokens_api``, ``control_api``) are built
on top of :class:`Simulator` and import this module, never each other, so the core can be read, started and
tested without aiohttp's web layer. The ComfyUI stand-in is plugged in as a protocol factory.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.sim.admission import Admission, Admitting, service_of
from vastkeep.sim.config import SimConfig
from vastkeep.sim.container_logs import LOG_RESULTS_KEPT
from vastkeep.sim.faults import ApiFaults, Ledger, RequestLog, TokenBook
from vastkeep.sim.lifecycle import InstanceLifecycle
from vastkeep.sim.net import Network, Path, raise_fd_limit
from vastkeep.sim.ratelimit import MinGapRule
from vastkeep.sim.ssh import SshService
from vastkeep.sim.state import (
    COMFY_DIRECT,
    COMFY_FALLBACK,
    COMFY_MAPPED,
    SSH_DIRECT,
    SSH_PROXY,
    Endpoint,
    Instance,
    IpAllocator,
    Lifecycle,
    make_offers,
)

DEFAULT_RENT_OPTIONS: dict[str, Any] = {
    "ssh": True,
    "ssh_proxy": True,
    "direct_8188": False,
    "port_18188": False,
    "ip_trailing_newline": None,
}


class Simulator(Admitting, InstanceLifecycle):
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


__all__ = ["DEFAULT_RENT_OPTIONS", "LOG_RESULTS_KEPT", "Admission", "SimConfig", "Simulator", "service_of"]
