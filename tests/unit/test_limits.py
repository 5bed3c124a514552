"""The open-file limit and the probe bound: the cap as a pure function, the warning, and the raise itself.

The raise is exercised in a child process started with a lowered soft limit, so the test process's own
limit is never touched.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from vastkeep.core.limits import NOFILE_MARGIN, cap_concurrency, effective_probe_concurrency

ROOT = Path(__file__).resolve().parents[2]
INF = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("requested", "soft", "expected"),
    [
        (200, 20000, 200),       # a bound well below the limit: untouched
        (5000, 20000, 5000),     # the settings' maximum still fits
        (200, 1024, 200),        # Linux's usual soft limit: 768 left for probes
        (2000, 1024, 1024 - NOFILE_MARGIN),  # capped at soft - margin
        (768, 1024, 768),        # exactly the headroom
        (769, 1024, 768),
        (300, 300, 150),         # a tiny limit keeps half of itself for probes
        (10, 3, 2),
        (10, 1, 1),              # never below 1
        (3000, INF, 3000),       # unlimited: no cap
        (3000, 0, 3000),
    ],
)
def test_cap_concurrency(requested, soft, expected):
    assert cap_concurrency(requested, soft) == expected


def test_cap_concurrency_custom_margin_and_bad_input():
    assert cap_concurrency(1000, 1000, margin=100) == 900
    with pytest.raises(ValueError):
        cap_concurrency(0, 1024)


def test_cap_warns_once_naming_the_setting(caplog):
    caplog.set_level(logging.WARNING, logger="vastkeep.core")
    assert effective_probe_concurrency(4321, soft_limit=1000) == 1000 - NOFILE_MARGIN
    assert effective_probe_concurrency(4321, soft_limit=1000) == 1000 - NOFILE_MARGIN
    assert effective_probe_concurrency(100, soft_limit=1000) == 100  # fits: nothing to say
    [line] = caplog.messages
    assert "PORT_PROBE_CONCURRENCY=4321" in line and "RLIMIT_NOFILE 1000" in line
    assert f"at most {1000 - NOFILE_MARGIN} at once" in line


def run_with_soft_limit(soft: int, code: str) -> dict:
    """Run ``code`` (prints one JSON line) in a child whose soft RLIMIT_NOFILE starts at ``soft``."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": "redis://127.0.0.1:1/0"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, preexec_fn=lower)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"hard": hard, "stderr": out.stderr}


HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
needs_headroom = pytest.mark.skipif(HARD == INF or HARD <= 600, reason="needs a finite hard limit above 600")


@needs_headroom
def test_raise_nofile_limit_lifts_soft_to_hard():
    got = run_with_soft_limit(512, (
        "import json, resource; from vastkeep.core.limits import raise_nofile_limit; "
        "before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]; soft, hard = raise_nofile_limit(); "
        "print(json.dumps({'before': before, 'soft': soft, 'again': raise_nofile_limit()[0]}))"))
    assert got["before"] == 512
    assert got["soft"] == got["hard"] == got["again"]


@needs_headroom
def test_validator_from_settings_caps_below_the_soft_limit():
    """Without the worker's raise, a 512-fd process asking for 5000 probes gets 256, and a warning."""
    got = run_with_soft_limit(512, (
        "import json, logging; logging.basicConfig(level=logging.WARNING); "
        "from vastkeep.core.settings import load_settings; "
        "from vastkeep.ports.validator import PortValidator; "
        "s = load_settings(environ={'PORT_PROBE_CONCURRENCY': '5000'}, env_file=False); "
        "print(json.dumps({'bound': PortValidator.from_settings(s).concurrency}))"))
    assert got["bound"] == 512 - NOFILE_MARGIN
    assert "PORT_PROBE_CONCURRENCY=5000" in got["stderr"]
