"""The simulated cloud's bookkeeping: instances, their endpoints, offers and the API shapes.

Pure data and pure functions (no sockets), so the shapes the Vast.ai client sees are decided in one
place and can be read next to ``docs/simulator.md``.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Endpoint names: the internal port keys the API reports, plus the direct ip:8188 path and the SSH proxy.
COMFY_MAPPED = "8188/tcp"
COMFY_FALLBACK = "18188/tcp"
COMFY_DIRECT = "direct"
SSH_DIRECT = "22/tcp"
SSH_PROXY = "ssh_proxy"
COMFY_ENDPOINTS = (COMFY_DIRECT, COMFY_MAPPED, COMFY_FALLBACK)
SSH_ENDPOINTS = (SSH_DIRECT, SSH_PROXY)
NET_MODES = ("open", "refuse", "blackhole", "reset")
#: ComfyUI faults: crash (refused), hang (never answers), slow (answers late), error500 (/system_stats
#: answers an HTTP error status, 500 unless told), wrong_body (/system_stats answers 200 ``{"ok": true}``).
COMFY_MODES = ("up", "crash", "hang", "slow", "error500", "wrong_body")
DEFAULT_ERROR_STATUS = 500
SSH_MODES = ("normal", "hang_after_banner")
FAULT_STATES = ("exited", "offline", "outbid", "error")
LOG_LINES_KEPT = 10_000  # container log lines kept per instance for ``request_logs``
DEFAULT_PROMPT_S = 1.0  # how long a simulated ComfyUI works on one prompt (``/_sim/instances/{id}/comfy``)
PHASES_KEPT = 2_000  # prompt phases kept per instance for the control API

GPUS = [
    ("RTX 4090", 24564, 0.35),
    ("RTX 3090", 24576, 0.22),
    ("RTX A6000", 49140, 0.48),
    ("A100 SXM4", 81920, 1.10),
    ("H100 SXM", 81559, 2.20),
    ("RTX 4080", 16376, 0.25),
    ("L40S", 46068, 0.80),
    ("RTX 5090", 32607, 0.60),
]

OCI_ERROR = (
    "Error response from daemon: failed to create task for container: failed to create shim task: "
    "OCI runtime create failed: runc create failed: unable to start container process"
)


@dataclass
class Lifecycle:
    """Delays of the status lifecycle (seconds; 0 allowed so tests need not wait)."""

    created_s: float = 0.3
    loading_s: float = 1.2
    boot_s: float = 0.5
    stop_s: float = 0.2
    log_interval_s: float = 0.1

    def update(self, values: dict[str, object]) -> None:
        for key, value in values.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown lifecycle field {key!r}")
            if not isinstance(value, int | float | str):
                raise ValueError(f"{key} must be a number of seconds")
            if float(value) < 0:
                raise ValueError(f"{key} must be >= 0")
            setattr(self, key, float(value))

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Endpoint:
    """One TCP path into an instance: where it listens and the faults laid on it."""

    name: str
    ip: str
    port: int
    net_mode: str = "open"
    comfy_mode: str = "up"
    slow_s: float = 0.0
    ssh_mode: str = "normal"
    error_status: int = DEFAULT_ERROR_STATUS
    hung_conns: int = 0  # connections held unanswered by a hung ComfyUI (its accept queue fills at 129)

    @property
    def kind(self) -> str:
        return "ssh" if self.name in SSH_ENDPOINTS else "comfy"

    def clear(self) -> None:
        self.net_mode, self.comfy_mode, self.slow_s, self.ssh_mode = "open", "up", 0.0, "normal"
        self.error_status = DEFAULT_ERROR_STATUS
        self.hung_conns = 0


@dataclass
class Instance:
    """One rented instance as the simulator keeps it."""

    id: int
    machine_id: int
    ip: str
    offer: dict[str, Any]  # the simulated offer's raw JSON, read as the API would
    label: str | None = None
    image: str = "vastai/comfy:latest"
    actual_status: str | None = None
    intended_status: str = "running"
    cur_state: str = "running"
    next_state: str = "running"
    status_msg: str = "Provisioning"
    start_date: float = 0.0
    running_since: float | None = None
    comfy_ready: bool = False
    fault: str | None = None
    ip_trailing_newline: bool = False
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    queue_remaining: int = 0
    direct_port_start: int = 0
    direct_port_count: int = 10
    extra_env: list[list[str]] = field(default_factory=list)  # [name, value] pairs, as the API lists them
    disk_space: float = 10.0
    onstart: str | None = None
    runtype: str = "ssh"
    is_bid: bool = False
    log_lines: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES_KEPT), repr=False)
    prompt_s: float = DEFAULT_PROMPT_S
    comfy_phases: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=PHASES_KEPT),
                                                   repr=False)

    def to_api(self, now: float) -> dict[str, object]:
        """The instance object exactly as Vast.ai's ``GET /instances`` shows it."""
        status = self.actual_status
        exposed = status in ("running",) or self.fault in ("offline", "outbid")
        ports: dict[str, list[dict[str, str]]] = {}
        if exposed:
            for name, ep in self.endpoints.items():
                if name in (COMFY_MAPPED, COMFY_FALLBACK, SSH_DIRECT):
                    ports[name] = [{"HostIp": "0.0.0.0", "HostPort": str(ep.port)}]
        proxy = self.endpoints.get(SSH_PROXY)
        uptime = (now - self.running_since) / 60.0 if self.running_since and status == "running" else 0.0
        return {
            "id": self.id,
            "machine_id": self.machine_id,
            "host_id": self.machine_id + 1000,
            "label": self.label,
            "image_uuid": self.image,
            "actual_status": status,
            "intended_status": self.intended_status,
            "cur_state": self.cur_state,
            "next_state": self.next_state,
            "status_msg": self.status_msg,
            "gpu_name": self.offer["gpu_name"],
            "num_gpus": self.offer["num_gpus"],
            "gpu_ram": self.offer["gpu_ram"],
            "dph_total": self.offer["dph_total"],
            "reliability2": self.offer["reliability2"],
            "geolocation": self.offer["geolocation"],
            "start_date": self.start_date,
            "uptime_mins": round(uptime, 3),
            "public_ipaddr": self.ip + ("\n" if self.ip_trailing_newline else ""),
            "ssh_host": proxy.ip if proxy else None,
            "ssh_port": proxy.port if proxy else None,
            "ssh_idx": "sim",
            "direct_port_start": self.direct_port_start,
            "direct_port_end": self.direct_port_start + self.direct_port_count,
            "direct_port_count": self.direct_port_count,
            "ports": ports if exposed else {},
            "jupyter_token": None,
            "is_bid": self.is_bid,
            "min_bid": round(self.offer["dph_total"] * 0.6, 4),
            # Fields the official CLI reads (``extra_env`` unchecked) or shows in its tables.
            "extra_env": [list(pair) for pair in self.extra_env],
            "image_runtype": self.runtype,
            "onstart": self.onstart,
            "disk_space": self.disk_space,
            "disk_usage": 0.0,
            "disk_util": 0.0,
            "gpu_util": 0.0 if status == "running" else None,
            "cpu_cores_effective": self.offer.get("cpu_cores_effective"),
            "cpu_ram": self.offer.get("cpu_ram"),
            "inet_up": self.offer.get("inet_up"),
            "inet_down": self.offer.get("inet_down"),
            "verification": "verified" if self.offer.get("verified", True) else "unverified",
            "template_id": None,
            "template_name": None,
            "volume_info": None,
        }

    def to_control(self) -> dict[str, object]:
        """The simulator's own view (control API): endpoints, their faults and the lifecycle."""
        return {
            "id": self.id,
            "ip": self.ip,
            "actual_status": self.actual_status,
            "fault": self.fault,
            "comfy_ready": self.comfy_ready,
            "prompt_s": self.prompt_s,
            "queue_remaining": self.queue_remaining,
            "lifecycle": self.lifecycle.as_dict(),
            "endpoints": {
                n: {
                    "ip": e.ip,
                    "port": e.port,
                    "net_mode": e.net_mode,
                    "comfy_mode": e.comfy_mode,
                    "slow_s": e.slow_s,
                    "error_status": e.error_status,
                    "ssh_mode": e.ssh_mode,
                }
                for n, e in self.endpoints.items()
            },
        }


class IpAllocator:
    """Hands out loopback addresses 127.x.y.z for instances (never 127.0.0.x, so 127.0.0.1 stays free)."""

    def __init__(self, start: int = 0x7F000100) -> None:
        self._next = start
        self._free: list[str] = []

    def allocate(self) -> str:
        if self._free:
            return self._free.pop()
        while True:
            value = self._next
            self._next += 1
            if value > 0x7FFFFFFE:
                raise RuntimeError("loopback address space exhausted")
            last = value & 0xFF
            if last in (0, 255):
                continue
            return ".".join(str((value >> s) & 0xFF) for s in (24, 16, 8, 0))

    def release(self, ip: str) -> None:
        self._free.append(ip)


def make_offers(count: int = 64, seed: int = 7) -> list[dict[str, Any]]:
    """A deterministic catalogue of offers with the fields ``POST /bundles/`` queries filter on."""
    rng = random.Random(seed)
    offers = []
    for i in range(count):
        name, ram, base = GPUS[i % len(GPUS)]
        num = rng.choice([1, 1, 1, 2, 4])
        dph = round(base * num * rng.uniform(0.8, 1.4), 4)
        offers.append(
            {
                "id": 600 + i,
                "ask_contract_id": 600 + i,
                "machine_id": 100 + i,
                "host_id": 1100 + i,
                "gpu_name": name,
                "num_gpus": num,
                "gpu_ram": ram,
                "gpu_total_ram": ram * num,
                "dph_total": dph,
                "dph_base": round(dph * 0.9, 4),
                "min_bid": round(dph * 0.6, 4),
                # two hosts in three are as reliable as the good ones on Vast.ai (>= 0.98): the warm pool's
                # default search must find enough offers to grow the demo pool
                "reliability2": round(0.98 + rng.uniform(0, 0.0199), 4) if i % 3
                else round(rng.uniform(0.85, 0.98), 4),
                "reliability": round(rng.uniform(0.85, 0.999), 4),
                "verified": i % 5 != 0,
                "rentable": i % 11 != 3,
                "rented": False,
                "direct_port_count": 0 if i % 7 == 6 else rng.choice([10, 20, 50]),
                "inet_up": round(rng.uniform(100, 2000), 1),
                "inet_down": round(rng.uniform(100, 2000), 1),
                "disk_space": float(rng.choice([100, 250, 500, 1000])),
                "cpu_cores_effective": rng.choice([8, 16, 32]),
                "cpu_ram": 64_000 * num,
                "cuda_max_good": rng.choice([12.2, 12.4, 12.8]),
                "compute_cap": 890,
                "geolocation": rng.choice(["US", "CA", "DE", "FR", "SE", "JP"]),
                "static_ip": i % 3 == 0,
                "score": round(rng.uniform(50, 300), 3),
                "external": False,
                "hosting_type": 0,
            }
        )
    return offers
