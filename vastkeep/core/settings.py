"""Settings, read once at start-up into a frozen, validated object.

The environment (and an optional ``.env`` file, read through django-environ) is parsed here and
nowhere else: the library receives plain parameters or this object. A bad value stops start-up with
a :class:`~vastkeep.core.errors.ConfigError` that names the variable, the problem and the expected form,
because a typo found at boot is cheaper than one found at 3 a.m. Secrets are wrapped in
:class:`Secret` so they cannot reach a log line, a repr, a task argument or an exception by accident.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn, SupportsIndex, TypedDict, overload

import environ as django_environ  # type: ignore[import-untyped]  # django-environ ships no types

from vastkeep.core.errors import ConfigError
from vastkeep.core.settings_parse import HTTP_SCHEMES as _HTTP
from vastkeep.core.settings_parse import Spec as _Spec
from vastkeep.core.settings_parse import cross_check as _cross_check
from vastkeep.core.settings_parse import expected as _expected
from vastkeep.core.settings_parse import parse as _parse
from vastkeep.core.settings_parse import problem as _problem
from vastkeep.core.settings_parse import redact_url
from vastkeep.core.settings_parse import shown as _shown


class Secret:
    """A secret string: shows as ``'***'`` everywhere; ``.reveal()`` is the one way to read it.

    Not a ``str`` subclass on purpose: ``json.dumps`` and pickling refuse it, so a secret cannot
    slip into a Celery message or a stored record unnoticed.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a Secret needs a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The real value: call it only at the point of use (an HTTP header, an SSH login)."""
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("a Secret cannot be pickled; pass .reveal() explicitly where that is intended")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self


# ── the variable table ───────────────────────────────────────────────────────
_H, _D = 3_600_000, 86_400_000
PROFILES: dict[str, dict[str, str]] = {
    "default": {},
    # The guide's "Recommended Production Values" (high reliability).
    "production": {
        "SSH_MAX_CONSECUTIVE_FAILURES": "999999", "SSH_KEEPALIVE_INTERVAL_MS": "10000",
        "COMFYUI_KEEPALIVE_INTERVAL_MS": "30000", "WARM_POOL_POLL_ACTIVE_INTERVAL_MS": "30000",
        "WARM_POOL_POLL_IDLE_INTERVAL_MS": "180000",
    },
    # The guide's "Conservative Configuration" (less network traffic and fewer API calls).
    "conservative": {
        "SSH_KEEPALIVE_INTERVAL_MS": "30000", "COMFYUI_KEEPALIVE_INTERVAL_MS": "60000",
        "WARM_POOL_POLL_ACTIVE_INTERVAL_MS": "60000", "WARM_POOL_POLL_IDLE_INTERVAL_MS": "300000",
    },
}

SPECS: tuple[_Spec, ...] = (
    _Spec("SSH_MAX_CONSECUTIVE_FAILURES", "count", 999999, "SSH retry limit (effectively unlimited)"),
    _Spec("SSH_READY_TIMEOUT_MS", "ms", 30000, "SSH connection (handshake) timeout", hi=_H),
    _Spec("SSH_KEEPALIVE_INTERVAL_MS", "ms", 10000, "SSH keepalive ping interval", hi=_H),
    _Spec("SSH_KEEPALIVE_MAX_MISS", "count", 3, "missed keepalives before the link counts as dead", hi=1000),
    _Spec("TOKEN_VALIDATION_CACHE_MS", "ms", 300000, "how long a token check result is reused", hi=_D),
    _Spec("TOKEN_PERIODIC_CHECK_MS", "ms", 600000, "periodic token validation interval", hi=_D),
    _Spec("COMFYUI_KEEPALIVE_INTERVAL_MS", "ms", 30000, "ComfyUI /system_stats ping interval", hi=_D),
    _Spec("COMFYUI_KEEPALIVE_TIMEOUT_MS", "ms", 5000, "ComfyUI ping timeout", hi=_H),
    _Spec("COMFYUI_KEEPALIVE_MAX_FAILURES", "count", 5, "consecutive ping failures before connection-lost",
          hi=1000),
    _Spec("COMFYUI_KEEPALIVE_SUSPECT_INTERVAL_MS", "ms", 0, "after a failed ping, re-ping after this "
          "(suspect mode; 0: the guide's full interval)", lo=0, hi=_H),
    _Spec("COMFYUI_KEEPALIVE_SHARDS", "count", 2, "keepalive shards (one long-lived runner each)", hi=256),
    _Spec("COMFYUI_KEEPALIVE_FAST_PATH", "bool", True, "hold ComfyUI's /ws per ready instance: a crash is "
          "seen at once, confirmed by one ping"),
    _Spec("WARM_POOL_POLL_ACTIVE_INTERVAL_MS", "ms", 30000, "poll interval when starting/loading/leased",
          hi=_D),
    _Spec("WARM_POOL_POLL_IDLE_INTERVAL_MS", "ms", 180000, "poll interval when ready but idle", hi=_D),
    _Spec("WARM_POOL_POLL_INTERVAL_MS", "ms", 120000, "default poll interval (fallback)", hi=_D),
    _Spec("WARM_POOL_LABEL_PREFIX", "name", "vastkeep", "instances labelled `<prefix>:...` are ours"),
    _Spec("WARM_POOL_DESIRED_SIZE", "count", 1, "instances the warm pool keeps ready", lo=0, hi=1000),
    # ── the warm pool: what to rent, how long to wait, when to stop spending ──
    _Spec("WARM_POOL_MAX_SIZE", "count", 50, "largest desiredSize the admin API / CLI accept", hi=1000),
    _Spec("WARM_POOL_NAME", "name", "default", "this pool's name: the middle part of every rent's label"),
    _Spec("WARM_POOL_GPU_NAME", "text", None,
          "offer search: exact GPU model, e.g. 'RTX 4090' (unset/any: any)"),
    _Spec("WARM_POOL_NUM_GPUS", "count", 1, "offer search: GPUs per instance (ComfyUI uses one)", hi=16),
    _Spec("WARM_POOL_MIN_GPU_RAM_GB", "count", 16, "offer search: minimum VRAM per GPU in GB", lo=0,
          hi=1024),
    _Spec("WARM_POOL_MAX_DPH", "float", 1.0, "offer search: highest price per instance, $/h", lo=0, hi=1000),
    _Spec("WARM_POOL_MIN_RELIABILITY", "float", 0.98, "offer search: minimum host reliability (0..1)", lo=0,
          hi=1),
    _Spec("WARM_POOL_DISK_GB", "count", 60, "disk per instance in GB (models, custom nodes, outputs)",
          lo=8, hi=10000),
    _Spec("WARM_POOL_IMAGE", "text", "vastai/comfy:latest", "Docker image of every rent (a ComfyUI image)"),
    _Spec("WARM_POOL_COMFYUI_ARGS", "text", "--listen 0.0.0.0 --port 8188",
          "ComfyUI launch arguments, passed as env COMFYUI_ARGS"),
    _Spec("WARM_POOL_ONSTART", "text", None, "onstart script run in the container (unset: the image's own)"),
    _Spec("WARM_POOL_PROVISION_TIMEOUT_MS", "ms", 900000,
          "an instance still starting/loading after this is destroyed and replaced", hi=_D),
    _Spec("WARM_POOL_UNHEALTHY_GRACE_MS", "ms", 300000,
          "an instance unhealthy (keepalive connection-lost) this long is destroyed and replaced", hi=_D),
    _Spec("WARM_POOL_RENT_SETTLE_MS", "ms", 120000,
          "a rent whose outcome is unknown blocks its slot this long unless its label shows up", hi=_H),
    _Spec("WARM_POOL_SAFE_MODE_FAILURES", "count", 3, "rent/provision failures within the window that "
          "turn safe mode on", hi=1000),
    _Spec("WARM_POOL_SAFE_MODE_WINDOW_MS", "ms", 600000, "the window those failures are counted in", hi=_D),
    _Spec("WARM_POOL_MAX_SPEND_DPH", "float", 10.0, "spend cap: live instances + the next rent, $/h", lo=0,
          hi=100000),
    _Spec("WARM_POOL_SAFE_MODE_AUTO_EXIT", "bool", True,
          "leave an automatic safe mode by itself once its cause clears (else only by an operator)"),
    _Spec("WARM_POOL_RECONCILE_INTERVAL_MS", "ms", 15000, "how often the pool is reconciled (beat)",
          lo=1000, hi=_H),
    # ── supervision of the logical daemons (Layer 6) ──
    _Spec("SUPERVISION_SWEEP_INTERVAL_MS", "ms", 5000, "how often beat runs the supervision sweep", lo=500,
          hi=_H),
    _Spec("SUPERVISION_HEARTBEAT_STALE_MS", "ms", 10000, "a daemon whose heartbeat is older than this and "
          "whose lease is free counts as crashed", lo=1000, hi=_H),
    _Spec("SUPERVISION_START_TIMEOUT_MS", "ms", 60000, "after a start is sent, wait this long for the "
          "daemon's first heartbeat before calling it crashed", lo=1000, hi=_H),
    _Spec("SUPERVISION_MAX_RESTARTS", "count", -1, "restarts before a daemon is given up (process-failed); "
          "-1: unlimited", lo=-1),
    _Spec("SUPERVISION_RESTART_JITTER_PCT", "count", 20, "restart delays spread over their last N %, "
          "differently per daemon (never later than 10/20/40/60 s)", lo=0, hi=100),
    _Spec("SUPERVISION_CRASH_LOOP_CRASHES", "count", 5, "crashes within the window that raise a "
          "process-crash-loop alert", hi=1000),
    _Spec("SUPERVISION_CRASH_LOOP_WINDOW_MS", "ms", 600000, "the window those crashes are counted in",
          lo=1000, hi=_D),
    _Spec("WORKER_STALL_TIMEOUT_MS", "ms", 60000, "a worker whose queues hold messages while it has a free "
          "slot and received nothing for this long exits, so its supervisor restarts it; 0: off",
          lo=0, hi=_H),
    _Spec("REDIS_URL", "url", None, "broker + state store; unset: `vastkeep up` embeds one",
          extra=("redis", "rediss", "unix")),
    _Spec("VAST_API_KEY", "secret", None, "Vast.ai API key; unset: the simulated cloud"),
    _Spec("VAST_API_URL", "url", "https://console.vast.ai/api/v0", "Vast.ai API base URL", extra=_HTTP),
    _Spec("VAST_API_MIN_GAP_MS", "ms", 500, "Vast.ai rate limit: minimum gap between two calls to one "
          "endpoint with one key, kept by all workers together (0 = off)", lo=0, hi=60_000),
    _Spec("HUGGINGFACE_HUB_TOKEN", "secret", None, "HuggingFace token"),
    _Spec("CIVITAI_TOKEN", "secret", None, "Civitai token"),
    _Spec("HUGGINGFACE_API_URL", "url", "https://huggingface.co", "HuggingFace API base URL", extra=_HTTP),
    _Spec("CIVITAI_API_URL", "url", "https://civitai.com", "Civitai API base URL", extra=_HTTP),
    _Spec("ADMIN_API_KEY", "secret", None, "value the admin API expects in X-Admin-Key"),
    _Spec("ADMIN_API_HOST", "host", "127.0.0.1", "admin API listen address"),
    _Spec("ADMIN_API_PORT", "port", 3000, "admin API listen port", hi=65535),
    _Spec("VASTKEEP_PROFILE", "choice", "default", "preset of guide values (explicit variables still win)",
          extra=tuple(PROFILES)),
    _Spec("VASTKEEP_SIMULATED", "bool", False, "simulation mode: allows loopback (127/8) probe targets"),
    _Spec("VASTKEEP_HOME", "path", ".vastkeep", "state folder of `vastkeep up` (relative: to the cwd)"),
    _Spec("SSH_KEY_PATH", "path", None, "private key for SSH log collection"),
    _Spec("SSH_KNOWN_HOSTS_PATH", "path", None, "known_hosts file for SSH host key checks"),
    _Spec("PORT_TCP_TIMEOUT_MS", "ms", 5000, "port validation: TCP connect timeout", hi=_H),
    _Spec("PORT_HTTP_TIMEOUT_MS", "ms", 10000, "port validation: HTTP /system_stats timeout", hi=_H),
    _Spec("PORT_PROBE_CONCURRENCY", "count", 1000, "parallel probes (one fd each; capped below the fd limit)",
          hi=5000),
    _Spec("CELERY_VISIBILITY_TIMEOUT_S", "seconds", 3600, "Redis redelivery timeout for unacked messages",
          hi=7 * 86400),
    _Spec("SSH_COLLECT_TIME_LIMIT_S", "seconds", 900, "hard time limit of one SSH log collection task",
          hi=86400),
    _Spec("SSH_COLLECT_HOLD_S", "seconds", 300, "how long one collector task holds its SSH link before its "
          "continuation takes over", hi=86400),
    _Spec("SSH_COLLECT_WHILE_READY", "bool", False, "keep collecting logs after an instance is ready"),
    _Spec("SSH_COMFYUI_LOG_PATH", "path", None,
          "remote ComfyUI log to collect too (unset: provisioning log only)"),
    _Spec("SSH_BACKOFF_GATE_S", "seconds", 60, "an SSH session up this long resets the failure count",
          hi=86400),
    _Spec("SSH_FALLBACK_AFTER_S", "seconds", 120, "no SSH route for this long: read the provider's log API",
          hi=86400),
    _Spec("SSH_RECONNECT_WINDOW_S", "seconds", 10, "when 5+ instances' SSH links drop within this window (a "
          "herd), each reconnects after uniform(0, this); a lone drop reconnects at once", lo=0, hi=3600),
    _Spec("SSH_PROVIDER_LOG_INTERVAL_S", "seconds", 60, "while SSH is down past SSH_FALLBACK_AFTER_S: how "
          "often the provider's log API is read", lo=5, hi=86400),
    _Spec("SSH_PROVIDER_LOG_TAIL", "count", 1000, "lines asked from the provider's log API per read",
          lo=1, hi=100000),
    _Spec("SSH_WORKER_CONCURRENCY", "count", 64, "collectors one SSH worker runs at once (threads pool)",
          lo=1, hi=2000),
    _Spec("SSH_LOG_KEEP_BYTES", "count", 4194304, "bytes of log kept per instance and file (the newest)",
          lo=65536, hi=2**30),
    _Spec("FLOWER_PORT", "port", 5555, "Flower listen port", hi=65535),
    _Spec("PROXY_HOST", "host", "127.0.0.1", "ComfyUI endpoint (`vastkeep proxy`) listen address"),
    _Spec("PROXY_PORT", "port", 3001, "ComfyUI endpoint listen port (not 8188: that is ComfyUI's own)",
          hi=65535),
    _Spec("PROXY_PUBLIC_URL", "url", None, "the endpoint's address as clients reach it, in endpointUrl "
          "(unset: http://PROXY_HOST:PROXY_PORT)", extra=_HTTP),
    _Spec("PROXY_UPSTREAM_CONNECT_TIMEOUT_MS", "ms", 5000, "proxy: connect timeout to an instance's ComfyUI",
          hi=_H),
    _Spec("PROXY_UPSTREAM_TIMEOUT_MS", "ms", 120000, "proxy: longest silence on an upstream call (answer "
          "headers, each body read, websocket handshake)", hi=_H),
    _Spec("PROXY_MAX_UPLOAD_BYTES", "count", 104857600, "proxy: largest upload spooled to disk (larger: 413)",
          lo=1, hi=2**34),
    _Spec("PROXY_CLIENT_CONCURRENCY", "count", 32, "proxy: HTTP requests in flight per client (endpoint "
          "token or address); more: 429", lo=1, hi=10000),
    _Spec("FLOWER_BASIC_AUTH", "secret", None, "Flower --basic-auth as user:password"),
    _Spec("LOG_LEVEL", "level", "INFO", "log level", extra=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
)
_BY_NAME = {s.name: s for s in SPECS}
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
            rows.append({"name": spec.name, "field": spec.name.lower(), "value": _shown(spec, value),
                         "default": _shown(spec, spec.default), "source": source, "meaning": spec.meaning})
        return rows

    def __repr__(self) -> str:
        inner = ", ".join(f"{row['field']}={row['value']!r}" for row in self.describe())
        return f"Settings({inner})"


def _read_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a .env file with django-environ without touching ``os.environ``."""
    if not os.path.isfile(path):
        raise ConfigError(f"env file {os.fspath(path)!r} does not exist; expected a readable .env file",
                          variable="env_file")

    class _FileEnv(django_environ.Env):  # type: ignore[misc]  # django-environ ships no types
        ENVIRON: dict[str, str] = {}

    _FileEnv.read_env(os.fspath(path))
    return dict(_FileEnv.ENVIRON)


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | Literal[False] | None = None,
) -> Settings:
    """Read, validate and freeze every setting; raise ``ConfigError`` listing every bad variable.

    ``environ`` None → ``os.environ``. ``env_file`` None → ``.env`` in the cwd if present; False → no file.
    The real environment wins over the file; explicit variables win over the profile.
    """
    base = dict(os.environ if environ is None else environ)
    if env_file is None:
        env_file = ".env" if os.path.isfile(".env") else False
    file_vars = _read_file(env_file) if env_file is not False else {}

    class _Env(django_environ.Env):  # type: ignore[misc]  # django-environ ships no types
        ENVIRON: dict[str, str] = {**file_vars, **base}

    env = _Env()
    problems: list[tuple[str, str]] = []
    raw: dict[str, str | None] = {}
    for spec in SPECS:
        # Secrets are taken literally (no django-environ "$VAR" proxying of a token that starts with '$').
        got = env.ENVIRON.get(spec.name) if spec.kind == "secret" else env.str(spec.name, default=None)
        raw[spec.name] = None if got is None or got == "" else got
    sources = {n: ("env" if n in base else ".env") for n, v in raw.items() if v is not None}

    profile_raw = raw["VASTKEEP_PROFILE"] or "default"
    profile = profile_raw.strip().lower()
    if profile not in PROFILES:
        problems.append(("VASTKEEP_PROFILE", f"VASTKEEP_PROFILE={profile_raw!r} is not a known profile; "
                         f"{_expected(_BY_NAME['VASTKEEP_PROFILE'])}"))
        profile = "default"
    for name, value in PROFILES[profile].items():
        if raw[name] is None:
            raw[name], sources[name] = value, f"profile:{profile}"

    values: dict[str, object] = {}
    for spec in SPECS:
        text = raw[spec.name]
        if spec.name == "VASTKEEP_PROFILE":
            continue  # checked above
        if text is None:
            values[spec.name.lower()] = spec.default
            continue
        try:
            parsed = _parse(spec, text)
        except ValueError as exc:
            problems.append((spec.name, _problem(spec, text, exc)))
            continue
        values[spec.name.lower()] = Secret(str(parsed)) if spec.kind == "secret" else parsed
    values["vastkeep_profile"] = profile
    home = values["vastkeep_home"]
    assert isinstance(home, str | Path)
    values["vastkeep_home"] = home if Path(home).is_absolute() else Path.cwd() / Path(home)
    if not problems:
        problems.extend(_cross_check({k: v for k, v in values.items() if isinstance(v, int | float)}))
    if problems:
        raise ConfigError("; ".join(p for _, p in problems), variable=problems[0][0],
                          variables=[n for n, _ in problems])
    return Settings(**values, sources=sources)  # type: ignore[arg-type]  # each value parsed by its spec's kind



__all__ = ["PROFILES", "SPECS", "Secret", "Settings", "load_settings", "redact_url"]
