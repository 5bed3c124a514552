"""The foundation every other package stands on: no Redis, no network.

- ``clock``: the one clock (``now()``, ``monotonic()``, ``sleep()``) and ``FakeClock`` for tests.
- ``errors``: the error tree (``VastkeepError`` → ``TransientError`` retry / ``PermanentError`` never).
- ``backoff``: pure full-jitter backoff, the guide's SSH and restart schedules.
- ``limits``: the open-file limit and the probe bound under it.
- ``redact``: ``redact_path``, lease ids out of any path or text before it is logged, raised or emitted;
  ``redact_url``, a URL's password.
- ``processes``: ``end_process``, a child process ended the one way (signal, deadline, SIGKILL).
- ``settings`` (a package: secret, spec, table, model, load): the frozen, validated ``Settings`` read once
  from env and ``.env``.
"""

from vastkeep.core.backoff import (
    BackoffPolicy,
    RestartPolicy,
    backoff_ceiling,
    backoff_delay,
    failures_after_session,
    full_jitter,
    restart_delay,
    ssh_backoff_ceiling_s,
)
from vastkeep.core.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock, from_iso, iso
from vastkeep.core.errors import (
    ConfigError,
    InvalidInput,
    NotFound,
    PermanentError,
    TransientError,
    VastkeepError,
    is_transient,
)
from vastkeep.core.redact import redact_path
from vastkeep.core.settings import Secret, Settings, load_settings, redact_url

__all__ = [
    "SYSTEM_CLOCK", "BackoffPolicy", "Clock", "ConfigError", "FakeClock", "InvalidInput", "NotFound",
    "PermanentError", "RestartPolicy", "Secret", "Settings", "SystemClock", "TransientError", "VastkeepError",
    "backoff_ceiling", "backoff_delay", "failures_after_session", "from_iso", "full_jitter", "is_transient",
    "iso", "load_settings", "redact_path", "redact_url", "restart_delay", "ssh_backoff_ceiling_s",
]
