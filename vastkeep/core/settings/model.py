"""``Settings``: the frozen object every process receives; a field per variable, units in the names.

Seconds views (``*_s``) of the millisecond fields serve code that talks to libraries measured in seconds;
``describe()`` is what ``vastkeep config`` prints, secrets masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, overload

from vastkeep.core.settings.secret import Secret
from vastkeep.core.settings.spec import shown
from vastkeep.core.settings.table import SPECS


class _Seconds:
    """A read-only ``<name>_s`` view (float seconds) of a ``<name>_ms`` field."""

    def __init__(self, ms_field: str) -> None:
        self.ms_field = ms_field
        self.__doc__ = f"{ms_field} in seconds"

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Seconds: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> float: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> _Seconds | float:
        if obj is None:
            return self
        ms = getattr(obj, self.ms_field)
        assert isinstance(ms, int | float)
        return ms / 1000


class SettingRow(TypedDict):
    """One variable as ``vastkeep config`` shows it (secrets masked)."""

    name: str
    field: str
    value: object
    default: object
    source: str
    meaning: str


@dataclass(frozen=True, repr=False)
class Settings:
    """Every setting, typed and validated. Field = env var lower-cased; units kept in the name."""

    ssh_max_consecutive_failures: int = 999999
    ssh_ready_timeout_ms: int = 30000
    ssh_keepalive_interval_ms: int = 10000
    ssh_keepalive_max_miss: int = 3
    token_validation_cache_ms: int = 300000
    token_periodic_check_ms: int = 600000
    comfyui_keepalive_interval_ms: int = 30000
    comfyui_keepalive_timeout_ms: int = 5000
    comfyui_keepalive_max_failures: int = 5
    comfyui_keepalive_suspect_interval_ms: int = 0
    comfyui_keepalive_shards: int = 2
    comfyui_keepalive_fast_path: bool = True
    warm_pool_poll_active_interval_ms: int = 30000
    warm_pool_poll_idle_interval_ms: int = 180000
    warm_pool_poll_interval_ms: int = 120000
    warm_pool_desired_size: int = 1
    warm_pool_max_size: int = 50
    warm_pool_name: str = "default"
    warm_pool_label_prefix: str = "vastkeep"
    warm_pool_gpu_name: str | None = None
    warm_pool_num_gpus: int = 1
    warm_pool_min_gpu_ram_gb: int = 16
    warm_pool_max_dph: float = 1.0
    warm_pool_min_reliability: float = 0.98
    warm_pool_disk_gb: int = 60
    warm_pool_image: str = "vastai/comfy:latest"
    warm_pool_comfyui_args: str = "--listen 0.0.0.0 --port 8188"
    warm_pool_onstart: str | None = None
    warm_pool_provision_timeout_ms: int = 900000
    warm_pool_unhealthy_grace_ms: int = 300000
    warm_pool_rent_settle_ms: int = 120000
    warm_pool_safe_mode_failures: int = 3
    warm_pool_safe_mode_window_ms: int = 600000
    warm_pool_max_spend_dph: float = 10.0
    warm_pool_safe_mode_auto_exit: bool = True
    warm_pool_reconcile_interval_ms: int = 15000
    supervision_sweep_interval_ms: int = 5000
    supervision_heartbeat_stale_ms: int = 10000
    supervision_start_timeout_ms: int = 60000
    supervision_max_restarts: int = -1
    supervision_restart_jitter_pct: int = 20
    supervision_crash_loop_crashes: int = 5
    supervision_crash_loop_window_ms: int = 600000
    worker_stall_timeout_ms: int = 60000
    redis_url: str | None = None
    provider: str = "vast"
    vast_api_key: Secret | None = None
    vast_api_url: str = "https://console.vast.ai/api/v0"
    vast_api_min_gap_ms: int = 500
    huggingface_hub_token: Secret | None = None
    civitai_token: Secret | None = None
    huggingface_api_url: str = "https://huggingface.co"
    civitai_api_url: str = "https://civitai.com"
    admin_api_key: Secret | None = None
    admin_api_host: str = "127.0.0.1"
    admin_api_port: int = 3000
    vastkeep_profile: str = "default"
    vastkeep_simulated: bool = False
    vastkeep_home: Path = Path(".vastkeep")
    ssh_key_path: Path | None = None
    ssh_known_hosts_path: Path | None = None
    port_tcp_timeout_ms: int = 5000
    port_http_timeout_ms: int = 10000
    port_probe_concurrency: int = 1000
    celery_visibility_timeout_s: int = 3600
    ssh_collect_time_limit_s: int = 900
    ssh_collect_hold_s: int = 300
    ssh_collect_while_ready: bool = False
    ssh_comfyui_log_path: Path | None = None
    ssh_backoff_gate_s: int = 60
    ssh_fallback_after_s: int = 120
    ssh_provider_log_interval_s: int = 60
    ssh_reconnect_window_s: int = 10
    ssh_provider_log_tail: int = 1000
    ssh_worker_concurrency: int = 64
    ssh_log_keep_bytes: int = 4194304
    flower_port: int = 5555
    proxy_host: str = "127.0.0.1"
    proxy_port: int = 3001
    proxy_public_url: str | None = None
    proxy_upstream_connect_timeout_ms: int = 5000
    proxy_upstream_timeout_ms: int = 120000
    proxy_max_upload_bytes: int = 104857600
    proxy_client_concurrency: int = 32
    flower_basic_auth: Secret | None = None
    log_level: str = "INFO"
    # env var → env | .env | profile:<name> (absent: default); not part of equality
    sources: Mapping[str, str] | None = field(default=None, compare=False)

    # ── seconds views, for code that talks to libraries measured in seconds ──
    ssh_ready_timeout_s = _Seconds("ssh_ready_timeout_ms")
    ssh_keepalive_interval_s = _Seconds("ssh_keepalive_interval_ms")
    token_validation_cache_s = _Seconds("token_validation_cache_ms")
    token_periodic_check_s = _Seconds("token_periodic_check_ms")
    comfyui_keepalive_interval_s = _Seconds("comfyui_keepalive_interval_ms")
    comfyui_keepalive_timeout_s = _Seconds("comfyui_keepalive_timeout_ms")
    poll_active_interval_s = _Seconds("warm_pool_poll_active_interval_ms")
    poll_idle_interval_s = _Seconds("warm_pool_poll_idle_interval_ms")
    poll_interval_s = _Seconds("warm_pool_poll_interval_ms")
    port_tcp_timeout_s = _Seconds("port_tcp_timeout_ms")
    port_http_timeout_s = _Seconds("port_http_timeout_ms")
    vast_api_min_gap_s = _Seconds("vast_api_min_gap_ms")
    warm_pool_provision_timeout_s = _Seconds("warm_pool_provision_timeout_ms")
    warm_pool_unhealthy_grace_s = _Seconds("warm_pool_unhealthy_grace_ms")
    warm_pool_rent_settle_s = _Seconds("warm_pool_rent_settle_ms")
    warm_pool_safe_mode_window_s = _Seconds("warm_pool_safe_mode_window_ms")
    warm_pool_reconcile_interval_s = _Seconds("warm_pool_reconcile_interval_ms")
    supervision_sweep_interval_s = _Seconds("supervision_sweep_interval_ms")
    proxy_upstream_connect_timeout_s = _Seconds("proxy_upstream_connect_timeout_ms")
    proxy_upstream_timeout_s = _Seconds("proxy_upstream_timeout_ms")

    @property
    def proxy_url(self) -> str:
        """Where clients reach `vastkeep proxy` (PROXY_PUBLIC_URL, else its listen address)."""
        return (self.proxy_public_url or f"http://{self.proxy_host}:{self.proxy_port}").rstrip("/")

    @property
    def longest_poll_interval_s(self) -> float:
        """The longest countdown a polling chain schedules (bounded by the visibility timeout)."""
        return max(self.poll_active_interval_s, self.poll_idle_interval_s, self.poll_interval_s,
                   self.comfyui_keepalive_interval_s)

    def describe(self) -> list[SettingRow]:
        """One row per variable (name, value with secrets as '***', default, source, meaning)."""
        rows: list[SettingRow] = []
        for spec in SPECS:
            value = getattr(self, spec.name.lower())
            source = (self.sources or {}).get(spec.name, "default")
            rows.append({"name": spec.name, "field": spec.name.lower(), "value": shown(spec, value),
                         "default": shown(spec, spec.default), "source": source, "meaning": spec.meaning})
        return rows

    def __repr__(self) -> str:
        inner = ", ".join(f"{row['field']}={row['value']!r}" for row in self.describe())
        return f"Settings({inner})"


__all__ = ["SettingRow", "Settings"]
