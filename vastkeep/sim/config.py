"""What a simulator is started with: where it keeps its state, where it listens, its keys (generated when not
given, never in a repr), its SSH backend, its seed and Vast.ai's minimum gap."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path as FsPath


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


__all__ = ["SimConfig"]
