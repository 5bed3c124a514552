"""Reading the settings: the environment over an optional ``.env`` (through django-environ) over a profile.

Every variable is parsed by its spec, then the rules that involve more than one variable are checked; all the
problems found are raised together in one :class:`~vastkeep.core.errors.ConfigError`, so one start-up shows
every typo.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import environ as django_environ  # type: ignore[import-untyped]  # django-environ ships no types

from vastkeep.core.errors import ConfigError
from vastkeep.core.settings.model import Settings
from vastkeep.core.settings.secret import Secret
from vastkeep.core.settings.spec import expected, parse, problem
from vastkeep.core.settings.table import BY_NAME, PROFILES, SPECS


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
                         f"{expected(BY_NAME['VASTKEEP_PROFILE'])}"))
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
            parsed = parse(spec, text)
        except ValueError as exc:
            problems.append((spec.name, problem(spec, text, exc)))
            continue
        values[spec.name.lower()] = Secret(str(parsed)) if spec.kind == "secret" else parsed
    values["vastkeep_profile"] = profile
    home = values["vastkeep_home"]
    assert isinstance(home, str | Path)
    values["vastkeep_home"] = home if Path(home).is_absolute() else Path.cwd() / Path(home)
    if not problems:
        problems.extend(cross_check({k: v for k, v in values.items() if isinstance(v, int | float)}))
    if problems:
        raise ConfigError("; ".join(p for _, p in problems), variable=problems[0][0],
                          variables=[n for n, _ in problems])
    return Settings(**values, sources=sources)  # type: ignore[arg-type]  # each value parsed by its spec's kind


def cross_check(v: Mapping[str, float]) -> list[tuple[str, str]]:
    """Rules that involve more than one variable: (variable, message) for each broken one."""
    out = []
    vis = v["celery_visibility_timeout_s"]
    longest_ms = max(v["warm_pool_poll_active_interval_ms"], v["warm_pool_poll_idle_interval_ms"],
                     v["warm_pool_poll_interval_ms"], v["comfyui_keepalive_interval_ms"])
    if vis * 1000 <= longest_ms:
        out.append(("CELERY_VISIBILITY_TIMEOUT_S",
                    f"CELERY_VISIBILITY_TIMEOUT_S={vis} must exceed the longest poll/keepalive interval "
                    f"({longest_ms} ms), or Redis redelivers countdown messages that are still waiting; "
                    f"expected seconds as a whole number above {longest_ms // 1000}"))
    if vis <= v["ssh_collect_time_limit_s"]:
        out.append(("CELERY_VISIBILITY_TIMEOUT_S",
                    f"CELERY_VISIBILITY_TIMEOUT_S={vis} must exceed SSH_COLLECT_TIME_LIMIT_S="
                    f"{v['ssh_collect_time_limit_s']}, or a running SSH collection is delivered twice; "
                    f"expected seconds as a whole number above {v['ssh_collect_time_limit_s']}"))
    if v["comfyui_keepalive_timeout_ms"] >= v["comfyui_keepalive_interval_ms"]:
        out.append(("COMFYUI_KEEPALIVE_TIMEOUT_MS",
                    f"COMFYUI_KEEPALIVE_TIMEOUT_MS={v['comfyui_keepalive_timeout_ms']} must be below "
                    f"COMFYUI_KEEPALIVE_INTERVAL_MS={v['comfyui_keepalive_interval_ms']}, or pings overlap; "
                    "expected milliseconds as a whole number, e.g. 5000"))
    if v["warm_pool_max_spend_dph"] < v["warm_pool_max_dph"]:
        out.append(("WARM_POOL_MAX_SPEND_DPH",
                    f"WARM_POOL_MAX_SPEND_DPH={v['warm_pool_max_spend_dph']} is below WARM_POOL_MAX_DPH="
                    f"{v['warm_pool_max_dph']}, so not even one instance could be rented; "
                    f"expected a number of at least {v['warm_pool_max_dph']}"))
    if v["warm_pool_desired_size"] > v["warm_pool_max_size"]:
        out.append(("WARM_POOL_DESIRED_SIZE",
                    f"WARM_POOL_DESIRED_SIZE={v['warm_pool_desired_size']} is above WARM_POOL_MAX_SIZE="
                    f"{v['warm_pool_max_size']}; expected a whole number from 0 to "
                    f"{v['warm_pool_max_size']}"))
    return out


__all__ = ["cross_check", "load_settings"]
