"""``vastkeep simulate``: run the simulated cloud in the foreground until SIGTERM/SIGINT.

Writes a ready file (JSON, mode 0600) with every URL and key a client needs; the banner on stdout names
the URLs only, never a key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from vastkeep.sim.core import SimConfig, Simulator
from vastkeep.sim.process import ReadyInfo
from vastkeep.sim.server import SimServer

log = logging.getLogger("vastkeep.sim")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vastkeep simulate", description="Run a SIMULATED Vast.ai cloud locally.",
        epilog="To break an instance of the stack `vastkeep up` runs in this folder: vastkeep simulate fault "
               "<id> crash|hang|offline|exited|outbid|ssh-drop|heal (vastkeep simulate fault --help).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address of the API/control port (loopback)")
    p.add_argument("--port", type=int, default=0, help="API/control port (0 = a free one)")
    p.add_argument("--api-key", default="", help="the Vast.ai key to accept (generated when empty)")
    p.add_argument("--hf-token", default="", help="the HuggingFace token to accept (generated when empty)")
    p.add_argument("--civitai-token", default="", help="the Civitai token to accept (generated when empty)")
    p.add_argument("--control-token", default="", help="token for /_sim (generated when empty)")
    p.add_argument("--state-dir", default="", help="where logs, keys and instance roots live (temp dir)")
    p.add_argument("--ready-file", default="", help="write URLs and keys here as JSON once ready")
    p.add_argument("--ssh-backend", default="auto", choices=["auto", "sshd", "builtin", "off"])
    p.add_argument("--seed", type=int, default=None, help="seed for addresses/ports (reproducible runs)")
    p.add_argument("--min-gap-ms", type=int, default=0,
                   help="Vast.ai rate limit: minimum gap between two calls to one endpoint with one key; "
                        "sooner calls answer 429 (0 = off; env VASTKEEP_SIM_MIN_GAP_MS)")
    p.add_argument("--log-level", default="WARNING")
    return p


def ready_info(sim: Simulator) -> ReadyInfo:
    """Everything a client needs to talk to this simulator (contains keys: write it 0600)."""
    base = sim.base_url
    ssh = sim.ssh
    return {
        "vast_api_url": f"{base}/api/v0",
        "huggingface_api_url": base,
        "civitai_api_url": base,
        "control_url": f"{base}/_sim",
        "control_token": sim.config.control_token,
        "api_key": sim.config.api_key,
        "hf_token": sim.config.hf_token,
        "civitai_token": sim.config.civitai_token,
        "ssh_private_key_path": str(ssh.client_key_path) if ssh else None,
        "ssh_known_hosts_path": str(ssh.known_hosts_path) if ssh else None,
        "ssh_backend": ssh.backend if ssh else "off",
        "ssh_user": "root",
        "provisioning_log_path": "/var/log/onstart.log",
        "state_dir": str(sim.config.state_dir),
        "pid": os.getpid(),
    }


def write_ready_file(path: Path, info: ReadyInfo) -> None:
    """Atomically write the ready file with mode 0600 (it holds keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ready-")
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


async def serve(config: SimConfig, ready_file: Path | None) -> None:
    """Start, announce, wait for a stop signal, stop."""
    server = SimServer(config)
    sim = server.sim
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        info = ready_info(sim)
        if ready_file is not None:
            write_ready_file(ready_file, info)
        print("=" * 72)
        print("  SIMULATED Vast.ai cloud (vastkeep) -- no real instances, no real money")
        print(f"  Vast.ai API:  {info['vast_api_url']}")
        print(f"  HuggingFace:  {info['huggingface_api_url']}/api/whoami-v2")
        print(f"  Civitai:      {info['civitai_api_url']}/api/v1/me")
        print(f"  Control:      {info['control_url']}  (X-Sim-Token; see the ready file)")
        print(f"  SSH backend:  {info['ssh_backend']}   state: {config.state_dir}")
        print(f"  Rate limit:   {config.min_gap_s:g} s between calls to one endpoint per key"
              if config.min_gap_s > 0 else "  Rate limit:   off")
        if ready_file is not None:
            print(f"  Ready file:   {ready_file}  (keys inside, mode 0600)")
        print("=" * 72, flush=True)
        await stop.wait()
    finally:
        await server.stop()
        if ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                ready_file.unlink()


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``vastkeep simulate`` and ``python -m vastkeep.sim``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    state_dir = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="vastkeep-sim-"))
    config = SimConfig(
        state_dir=state_dir.resolve(),
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        hf_token=args.hf_token,
        civitai_token=args.civitai_token,
        control_token=args.control_token,
        ssh_backend=args.ssh_backend,
        seed=args.seed,
        min_gap_s=max(0, args.min_gap_ms) / 1000,
    )
    ready = Path(args.ready_file).resolve() if args.ready_file else None
    try:
        asyncio.run(serve(config, ready))
    except KeyboardInterrupt:
        return 130
    return 0
