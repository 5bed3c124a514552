"""The variable table: each environment variable with its kind, default, bounds and meaning; the profiles.

The guide's Configuration Reference, as data: names and defaults are a contract (operators' ``.env`` files use
them), so a variable is added here and nowhere else is its name spelt out except as its ``Settings`` field.
"""

from __future__ import annotations

from vastkeep.core.settings.spec import HTTP_SCHEMES as _HTTP
from vastkeep.core.settings.spec import Spec

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

SPECS: tuple[Spec, ...] = (
    Spec("SSH_MAX_CONSECUTIVE_FAILURES", "count", 999999, "SSH retry limit (effectively unlimited)"),
    Spec("SSH_READY_TIMEOUT_MS", "ms", 30000, "SSH connection (handshake) timeout", hi=_H),
    Spec("SSH_KEEPALIVE_INTERVAL_MS", "ms", 10000, "SSH keepalive ping interval", hi=_H),
    Spec("SSH_KEEPALIVE_MAX_MISS", "count", 3, "missed keepalives before the link counts as dead", hi=1000),
    Spec("TOKEN_VALIDATION_CACHE_MS", "ms", 300000, "how long a token check result is reused", hi=_D),
    Spec("TOKEN_PERIODIC_CHECK_MS", "ms", 600000, "periodic token validation interval", hi=_D),
    Spec("COMFYUI_KEEPALIVE_INTERVAL_MS", "ms", 30000, "ComfyUI /system_stats ping interval", hi=_D),
    Spec("COMFYUI_KEEPALIVE_TIMEOUT_MS", "ms", 5000, "ComfyUI ping timeout", hi=_H),
    Spec("COMFYUI_KEEPALIVE_MAX_FAILURES", "count", 5, "consecutive ping failures before connection-lost",
          hi=1000),
    Spec("COMFYUI_KEEPALIVE_SUSPECT_INTERVAL_MS", "ms", 0, "after a failed ping, re-ping after this "
          "(suspect mode; 0: the guide's full interval)", lo=0, hi=_H),
    Spec("COMFYUI_KEEPALIVE_SHARDS", "count", 2, "keepalive shards (one long-lived runner each)", hi=256),
    Spec("COMFYUI_KEEPALIVE_FAST_PATH", "bool", True, "hold ComfyUI's /ws per ready instance: a crash is "
          "seen at once, confirmed by one ping"),
    Spec("WARM_POOL_POLL_ACTIVE_INTERVAL_MS", "ms", 30000, "poll interval when starting/loading/leased",
          hi=_D),
    Spec("WARM_POOL_POLL_IDLE_INTERVAL_MS", "ms", 180000, "poll interval when ready but idle", hi=_D),
    Spec("WARM_POOL_POLL_INTERVAL_MS", "ms", 120000, "default poll interval (fallback)", hi=_D),
    Spec("WARM_POOL_LABEL_PREFIX", "name", "vastkeep", "instances labelled `<prefix>:...` are ours"),
    Spec("WARM_POOL_DESIRED_SIZE", "count", 1, "instances the warm pool keeps ready", lo=0, hi=1000),
    # ── the warm pool: what to rent, how long to wait, when to stop spending ──
    Spec("WARM_POOL_MAX_SIZE", "count", 50, "largest desiredSize the admin API / CLI accept", hi=1000),
    Spec("WARM_POOL_NAME", "name", "default", "this pool's name: the middle part of every rent's label"),
    Spec("WARM_POOL_GPU_NAME", "text", None,
          "offer search: exact GPU model, e.g. 'RTX 4090' (unset/any: any)"),
    Spec("WARM_POOL_NUM_GPUS", "count", 1, "offer search: GPUs per instance (ComfyUI uses one)", hi=16),
    Spec("WARM_POOL_MIN_GPU_RAM_GB", "count", 16, "offer search: minimum VRAM per GPU in GB", lo=0,
          hi=1024),
    Spec("WARM_POOL_MAX_DPH", "float", 1.0, "offer search: highest price per instance, $/h", lo=0, hi=1000),
    Spec("WARM_POOL_MIN_RELIABILITY", "float", 0.98, "offer search: minimum host reliability (0..1)", lo=0,
          hi=1),
    Spec("WARM_POOL_DISK_GB", "count", 60, "disk per instance in GB (models, custom nodes, outputs)",
          lo=8, hi=10000),
    Spec("WARM_POOL_IMAGE", "text", "vastai/comfy:latest", "Docker image of every rent (a ComfyUI image)"),
    Spec("WARM_POOL_COMFYUI_ARGS", "text", "--listen 0.0.0.0 --port 8188",
          "ComfyUI launch arguments, passed as env COMFYUI_ARGS"),
    Spec("WARM_POOL_ONSTART", "text", None, "onstart script run in the container (unset: the image's own)"),
    Spec("WARM_POOL_PROVISION_TIMEOUT_MS", "ms", 900000,
          "an instance still starting/loading after this is destroyed and replaced", hi=_D),
    Spec("WARM_POOL_UNHEALTHY_GRACE_MS", "ms", 300000,
          "an instance unhealthy (keepalive connection-lost) this long is destroyed and replaced", hi=_D),
    Spec("WARM_POOL_RENT_SETTLE_MS", "ms", 120000,
          "a rent whose outcome is unknown blocks its slot this long unless its label shows up", hi=_H),
    Spec("WARM_POOL_SAFE_MODE_FAILURES", "count", 3, "rent/provision failures within the window that "
          "turn safe mode on", hi=1000),
    Spec("WARM_POOL_SAFE_MODE_WINDOW_MS", "ms", 600000, "the window those failures are counted in", hi=_D),
    Spec("WARM_POOL_MAX_SPEND_DPH", "float", 10.0, "spend cap: live instances + the next rent, $/h", lo=0,
          hi=100000),
    Spec("WARM_POOL_SAFE_MODE_AUTO_EXIT", "bool", True,
          "leave an automatic safe mode by itself once its cause clears (else only by an operator)"),
    Spec("WARM_POOL_RECONCILE_INTERVAL_MS", "ms", 15000, "how often the pool is reconciled (beat)",
          lo=1000, hi=_H),
    # ── supervision of the logical daemons (Layer 6) ──
    Spec("SUPERVISION_SWEEP_INTERVAL_MS", "ms", 5000, "how often beat runs the supervision sweep", lo=500,
          hi=_H),
    Spec("SUPERVISION_HEARTBEAT_STALE_MS", "ms", 10000, "a daemon whose heartbeat is older than this and "
          "whose lease is free counts as crashed", lo=1000, hi=_H),
    Spec("SUPERVISION_START_TIMEOUT_MS", "ms", 60000, "after a start is sent, wait this long for the "
          "daemon's first heartbeat before calling it crashed", lo=1000, hi=_H),
    Spec("SUPERVISION_MAX_RESTARTS", "count", -1, "restarts before a daemon is given up (process-failed); "
          "-1: unlimited", lo=-1),
    Spec("SUPERVISION_RESTART_JITTER_PCT", "count", 20, "restart delays spread over their last N %, "
          "differently per daemon (never later than 10/20/40/60 s)", lo=0, hi=100),
    Spec("SUPERVISION_CRASH_LOOP_CRASHES", "count", 5, "crashes within the window that raise a "
          "process-crash-loop alert", hi=1000),
    Spec("SUPERVISION_CRASH_LOOP_WINDOW_MS", "ms", 600000, "the window those crashes are counted in",
          lo=1000, hi=_D),
    Spec("WORKER_STALL_TIMEOUT_MS", "ms", 60000, "a worker whose queues hold messages while it has a free "
          "slot and received nothing for this long exits, so its supervisor restarts it; 0: off",
          lo=0, hi=_H),
    Spec("REDIS_URL", "url", None, "broker + state store; unset: `vastkeep up` embeds one",
          extra=("redis", "rediss", "unix")),
    Spec("PROVIDER", "choice", "vast", "the GPU cloud the product talks to (vastkeep.providers.registry)",
          extra=("vast",)),
    Spec("VAST_API_KEY", "secret", None, "Vast.ai API key; unset: the simulated cloud"),
    Spec("VAST_API_URL", "url", "https://console.vast.ai/api/v0", "Vast.ai API base URL", extra=_HTTP),
    Spec("VAST_API_MIN_GAP_MS", "ms", 500, "Vast.ai rate limit: minimum gap between two calls to one "
          "endpoint with one key, kept by all workers together (0 = off)", lo=0, hi=60_000),
    Spec("HUGGINGFACE_HUB_TOKEN", "secret", None, "HuggingFace token"),
    Spec("CIVITAI_TOKEN", "secret", None, "Civitai token"),
    Spec("HUGGINGFACE_API_URL", "url", "https://huggingface.co", "HuggingFace API base URL", extra=_HTTP),
    Spec("CIVITAI_API_URL", "url", "https://civitai.com", "Civitai API base URL", extra=_HTTP),
    Spec("ADMIN_API_KEY", "secret", None, "value the admin API expects in X-Admin-Key"),
    Spec("ADMIN_API_HOST", "host", "127.0.0.1", "admin API listen address"),
    Spec("ADMIN_API_PORT", "port", 3000, "admin API listen port", hi=65535),
    Spec("VASTKEEP_PROFILE", "choice", "default", "preset of guide values (explicit variables still win)",
          extra=tuple(PROFILES)),
    Spec("VASTKEEP_SIMULATED", "bool", False, "simulation mode: allows loopback (127/8) probe targets"),
    Spec("VASTKEEP_HOME", "path", ".vastkeep", "state folder of `vastkeep up` (relative: to the cwd)"),
    Spec("SSH_KEY_PATH", "path", None, "private key for SSH log collection"),
    Spec("SSH_KNOWN_HOSTS_PATH", "path", None, "known_hosts file for SSH host key checks"),
    Spec("PORT_TCP_TIMEOUT_MS", "ms", 5000, "port validation: TCP connect timeout", hi=_H),
    Spec("PORT_HTTP_TIMEOUT_MS", "ms", 10000, "port validation: HTTP /system_stats timeout", hi=_H),
    Spec("PORT_PROBE_CONCURRENCY", "count", 1000, "parallel probes (one fd each; capped below the fd limit)",
          hi=5000),
    Spec("CELERY_VISIBILITY_TIMEOUT_S", "seconds", 3600, "Redis redelivery timeout for unacked messages",
          hi=7 * 86400),
    Spec("SSH_COLLECT_TIME_LIMIT_S", "seconds", 900, "hard time limit of one SSH log collection task",
          hi=86400),
    Spec("SSH_COLLECT_HOLD_S", "seconds", 300, "how long one collector task holds its SSH link before its "
          "continuation takes over", hi=86400),
    Spec("SSH_COLLECT_WHILE_READY", "bool", False, "keep collecting logs after an instance is ready"),
    Spec("SSH_COMFYUI_LOG_PATH", "path", None,
          "remote ComfyUI log to collect too (unset: provisioning log only)"),
    Spec("SSH_BACKOFF_GATE_S", "seconds", 60, "an SSH session up this long resets the failure count",
          hi=86400),
    Spec("SSH_FALLBACK_AFTER_S", "seconds", 120, "no SSH route for this long: read the provider's log API",
          hi=86400),
    Spec("SSH_RECONNECT_WINDOW_S", "seconds", 10, "when 5+ instances' SSH links drop within this window (a "
          "herd), each reconnects after uniform(0, this); a lone drop reconnects at once", lo=0, hi=3600),
    Spec("SSH_PROVIDER_LOG_INTERVAL_S", "seconds", 60, "while SSH is down past SSH_FALLBACK_AFTER_S: how "
          "often the provider's log API is read", lo=5, hi=86400),
    Spec("SSH_PROVIDER_LOG_TAIL", "count", 1000, "lines asked from the provider's log API per read",
          lo=1, hi=100000),
    Spec("SSH_WORKER_CONCURRENCY", "count", 64, "collectors one SSH worker runs at once (threads pool)",
          lo=1, hi=2000),
    Spec("SSH_LOG_KEEP_BYTES", "count", 4194304, "bytes of log kept per instance and file (the newest)",
          lo=65536, hi=2**30),
    Spec("FLOWER_PORT", "port", 5555, "Flower listen port", hi=65535),
    Spec("PROXY_HOST", "host", "127.0.0.1", "ComfyUI endpoint (`vastkeep proxy`) listen address"),
    Spec("PROXY_PORT", "port", 3001, "ComfyUI endpoint listen port (not 8188: that is ComfyUI's own)",
          hi=65535),
    Spec("PROXY_PUBLIC_URL", "url", None, "the endpoint's address as clients reach it, in endpointUrl "
          "(unset: http://PROXY_HOST:PROXY_PORT)", extra=_HTTP),
    Spec("PROXY_UPSTREAM_CONNECT_TIMEOUT_MS", "ms", 5000, "proxy: connect timeout to an instance's ComfyUI",
          hi=_H),
    Spec("PROXY_UPSTREAM_TIMEOUT_MS", "ms", 120000, "proxy: longest silence on an upstream call (answer "
          "headers, each body read, websocket handshake)", hi=_H),
    Spec("PROXY_MAX_UPLOAD_BYTES", "count", 104857600, "proxy: largest upload spooled to disk (larger: 413)",
          lo=1, hi=2**34),
    Spec("PROXY_CLIENT_CONCURRENCY", "count", 32, "proxy: HTTP requests in flight per client (endpoint "
          "token or address); more: 429", lo=1, hi=10000),
    Spec("FLOWER_BASIC_AUTH", "secret", None, "Flower --basic-auth as user:password"),
    Spec("LOG_LEVEL", "level", "INFO", "log level", extra=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
)
BY_NAME = {s.name: s for s in SPECS}


__all__ = ["BY_NAME", "PROFILES", "SPECS"]
