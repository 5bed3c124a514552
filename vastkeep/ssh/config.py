"""What one collector run needs to know, in seconds, and the deadlines of its steps.

``CollectorConfig.from_settings`` maps the environment; the step bounds (``connect_step_s``,
``open_step_s``) are what the collector announces to its :class:`~vastkeep.state.Progress` before each
step, so the lease keeper can tell a slow step from a stuck one (``stall_grace_s`` later).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vastkeep.ssh import decide
from vastkeep.ssh.liveness import HEALTH_CHECK_INTERVAL_S, HEALTH_CHECK_TIMEOUT_S

if TYPE_CHECKING:
    from vastkeep.core.settings import Settings

PROVISION_LOG = "/var/log/onstart.log"
#: The provider log read's own bound (its result URL is polled for up to 20 s, each call with retries).
PROVIDER_STEP_S = 120.0


@dataclass(frozen=True)
class CollectorConfig:
    """Everything a run needs to know, in seconds (``from_settings`` maps the environment)."""

    files: tuple[str, ...] = (PROVISION_LOG,)
    ready_timeout_s: float = 30.0
    keepalive_interval_s: float = 10.0
    keepalive_max_miss: int = 3
    health_interval_s: float = HEALTH_CHECK_INTERVAL_S
    health_timeout_s: float = HEALTH_CHECK_TIMEOUT_S
    max_failures: int = 999999
    gate_s: float = 60.0
    hold_s: float = 300.0
    fallback_after_s: float = 120.0
    provider_interval_s: float = 60.0
    reconnect_window_s: float = decide.RECONNECT_WINDOW_S
    herd_drops: int = decide.HERD_DROPS
    username: str = "root"

    @classmethod
    def from_settings(cls, settings: Settings) -> CollectorConfig:
        """The SSH_* settings (``dataclasses.replace`` the result to change single fields)."""
        files = [PROVISION_LOG]
        if settings.ssh_comfyui_log_path:
            files.append(str(settings.ssh_comfyui_log_path))
        hold = min(float(settings.ssh_collect_hold_s), max(1.0, settings.ssh_collect_time_limit_s - 60.0))
        return cls(files=tuple(files), ready_timeout_s=settings.ssh_ready_timeout_s,
                     keepalive_interval_s=settings.ssh_keepalive_interval_s,
                     keepalive_max_miss=settings.ssh_keepalive_max_miss,
                     max_failures=settings.ssh_max_consecutive_failures,
                     gate_s=float(settings.ssh_backoff_gate_s),
                     hold_s=hold, fallback_after_s=float(settings.ssh_fallback_after_s),
                     provider_interval_s=float(settings.ssh_provider_log_interval_s),
                     reconnect_window_s=float(settings.ssh_reconnect_window_s))

    @property
    def lease_ttl_ms(self) -> int:
        """The collector lease TTL: three keepalive intervals, at least 3 s (renewed every third of it)."""
        return int(max(3.0, 3 * self.keepalive_interval_s) * 1000)

    @property
    def stall_grace_s(self) -> float:
        """How late a step may beat before the loop counts as stalled: one lease TTL."""
        return self.lease_ttl_ms / 1000

    @property
    def connect_step_s(self) -> float:
        """One route's connect: TCP, banner, key exchange and auth, each bounded by the handshake timeout."""
        return 4 * self.ready_timeout_s

    def open_step_s(self, files: int = 1) -> float:
        """(Re)starting ``tail`` on ``files`` files: stat + two heads each, and the channel open + exec."""
        return files * (3 * self.health_timeout_s + 2 * self.ready_timeout_s)


__all__ = ["PROVIDER_STEP_S", "PROVISION_LOG", "CollectorConfig"]
