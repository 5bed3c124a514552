"""One sending beat per deployment (issue 7 f): every way of starting beat uses the Redis-locked scheduler."""

from __future__ import annotations

from pathlib import Path

import beat_schedule
from vastkeep.core.settings import load_settings
from vastkeep.state.keys import Keys
from worker.config import celery_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_celery_config_selects_redbeat_with_a_lock_that_outlives_several_ticks() -> None:
    conf = celery_config(load_settings(environ={}, env_file=False), redis_url="redis://127.0.0.1:1/0")
    assert conf["beat_scheduler"] == beat_schedule.SCHEDULER == "worker.beat:BeatScheduler"
    assert conf["redbeat_redis_url"] == "redis://127.0.0.1:1/0"
    assert conf["redbeat_key_prefix"] == Keys().beat_prefix() == "vastkeep:redbeat:"
    assert conf["redbeat_lock_timeout"] >= 3 * conf["beat_max_loop_interval"]
    assert set(conf["beat_schedule"]) == set(beat_schedule.ENTRIES)  # the static schedule is still ours


def test_no_start_path_overrides_the_scheduler() -> None:
    sources = [ROOT / "ops" / "start-beat.sh", ROOT / "vastkeep" / "stack" / "runtime.py",
               ROOT / "docker-compose.yml", *sorted((ROOT / "ops" / "systemd").glob("*"))]
    for path in sources:
        text = path.read_text()
        assert "--scheduler" not in text and " -S " not in text and '"-S"' not in text, path
        assert "celerybeat-schedule" not in text, path  # the local shelve file is what let beats double-fire
