"""`vastkeep status` in a second shell shows the pool the stack runs, not this shell's defaults."""

import pytest

from vastkeep.cli.common import stack_settings


def test_the_stack_s_pool_settings_win_over_this_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARM_POOL_DESIRED_SIZE", raising=False)
    monkeypatch.setenv("WARM_POOL_NAME", "shell")
    stack = {"pool_settings": {"WARM_POOL_DESIRED_SIZE": "3", "WARM_POOL_NAME": "gpu-a",
                               "WARM_POOL_LABEL_PREFIX": "vk"}}
    s = stack_settings(stack)
    assert (s.warm_pool_desired_size, s.warm_pool_name, s.warm_pool_label_prefix) == (3, "gpu-a", "vk")


def test_a_stack_file_without_pool_settings_leaves_this_shell_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARM_POOL_DESIRED_SIZE", "2")
    assert stack_settings({}).warm_pool_desired_size == 2
    assert stack_settings(None).warm_pool_desired_size == 2
