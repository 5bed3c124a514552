"""Warm-pool settings (issue 10): defaults fit for ComfyUI, every bad value named with its expected form."""

from __future__ import annotations

import pytest

from vastkeep.core.errors import ConfigError
from vastkeep.core.settings import load_settings


def load(env: dict[str, str] | None = None):
    return load_settings(env or {}, env_file=False)


def test_defaults():
    s = load()
    assert s.warm_pool_name == "default" and s.warm_pool_label_prefix == "vastkeep"
    assert s.warm_pool_gpu_name is None and s.warm_pool_num_gpus == 1 and s.warm_pool_min_gpu_ram_gb == 16
    assert s.warm_pool_max_dph == 1.0 and s.warm_pool_min_reliability == 0.98 and s.warm_pool_disk_gb == 60
    assert s.warm_pool_image and s.warm_pool_onstart is None
    assert s.warm_pool_provision_timeout_s == 900.0 and s.warm_pool_reconcile_interval_s == 15.0
    assert s.warm_pool_safe_mode_failures == 3 and s.warm_pool_safe_mode_window_s == 600.0
    assert s.warm_pool_max_spend_dph == 10.0 and s.warm_pool_safe_mode_auto_exit is True
    assert s.warm_pool_max_size == 50


def test_values_parse():
    s = load({"WARM_POOL_GPU_NAME": " RTX 4090 ", "WARM_POOL_MAX_DPH": "0.45",
              "WARM_POOL_MIN_RELIABILITY": "0.9",
              "WARM_POOL_NAME": "comfy-eu", "WARM_POOL_SAFE_MODE_AUTO_EXIT": "no"})
    assert s.warm_pool_gpu_name == "RTX 4090" and s.warm_pool_max_dph == 0.45
    assert s.warm_pool_min_reliability == 0.9 and s.warm_pool_name == "comfy-eu"
    assert s.warm_pool_safe_mode_auto_exit is False


@pytest.mark.parametrize(("env", "variable", "says"), [
    ({"WARM_POOL_MAX_DPH": "cheap"}, "WARM_POOL_MAX_DPH", "expected a number"),
    ({"WARM_POOL_MAX_DPH": "nan"}, "WARM_POOL_MAX_DPH", "finite"),
    ({"WARM_POOL_MIN_RELIABILITY": "1.5"}, "WARM_POOL_MIN_RELIABILITY", "0..1"),
    ({"WARM_POOL_NAME": "a:b"}, "WARM_POOL_NAME", "no ':'"),
    ({"WARM_POOL_LABEL_PREFIX": "has space"}, "WARM_POOL_LABEL_PREFIX", "letters"),
    ({"WARM_POOL_DISK_GB": "2"}, "WARM_POOL_DISK_GB", "minimum 8"),
    ({"WARM_POOL_MAX_SPEND_DPH": "0.5"}, "WARM_POOL_MAX_SPEND_DPH", "not even one instance"),
    ({"WARM_POOL_DESIRED_SIZE": "60"}, "WARM_POOL_DESIRED_SIZE", "WARM_POOL_MAX_SIZE"),
    ({"WARM_POOL_RECONCILE_INTERVAL_MS": "10"}, "WARM_POOL_RECONCILE_INTERVAL_MS", "minimum"),
])
def test_bad_values_name_the_variable(env, variable, says):
    with pytest.raises(ConfigError) as info:
        load(env)
    assert info.value.variable == variable and variable in str(info.value) and says in str(info.value)
