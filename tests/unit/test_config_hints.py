"""Configuration mistakes that pass validation but break the product quietly: said in plain words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vastkeep.cli import main
from vastkeep.core.config_hints import (
    SIMULATED_WITH_REAL_KEY,
    config_warnings,
    not_found_hint,
    vast_api_url_problem,
    vast_mode,
)
from vastkeep.core.settings import load_settings
from vastkeep.stack.runtime import vast_banner_lines

WRONG = "VAST_API_URL should end with /api/v0 (e.g. https://console.vast.ai/api/v0)"


@pytest.mark.parametrize(
    ("url", "wrong"),
    [
        ("https://console.vast.ai/api/v0", False),
        ("https://console.vast.ai/api/v0/", False),
        ("http://127.0.0.1:8080/api/v0", False),
        ("http://127.0.0.1:8080", True),
        ("http://127.0.0.1:8080/", True),
        ("https://console.vast.ai", True),
        ("https://console.vast.ai/api/v1", True),
        ("https://console.vast.ai/api/v0/instances", True),
    ],
)
def test_vast_api_url_problem(url: str, wrong: bool) -> None:
    problem = vast_api_url_problem(url)
    assert (problem is not None) is wrong
    if wrong:
        assert problem.startswith(WRONG) and "every Vast.ai call answers 404" in problem


def test_the_shown_url_carries_no_credentials() -> None:
    problem = vast_api_url_problem("http://user:s3cret@127.0.0.1:8080/?key=s3cret")
    assert problem is not None and "s3cret" not in problem and "http://127.0.0.1:8080/" in problem


def test_not_found_hint_names_the_setting() -> None:
    assert not_found_hint("vastai", "http://127.0.0.1:9").startswith(WRONG)
    assert not_found_hint("vastai", "http://127.0.0.1:9/api/v0") == (
        "check VAST_API_URL: it is http://127.0.0.1:9/api/v0; the real one is https://console.vast.ai/api/v0")
    assert not_found_hint("civitai", "http://127.0.0.1:9/x").startswith("check CIVITAI_API_URL: it is")
    assert not_found_hint("huggingface", "http://h").startswith("check HUGGINGFACE_API_URL")


def _settings(**env: str):
    return load_settings(environ=env, env_file=False)


@pytest.mark.parametrize(
    ("env", "mode", "expected"),
    [
        ({}, "simulated", []),  # vastkeep up's simulated cloud: nothing to warn about
        ({"VASTKEEP_SIMULATED": "1"}, "simulated", []),
        ({"VAST_API_KEY": "k"}, "real", []),
        ({"VAST_API_KEY": "k", "VAST_API_URL": "http://127.0.0.1:8080"}, "real", [True]),
        ({"VAST_API_KEY": "k", "VASTKEEP_SIMULATED": "1"}, "stand-in", [False]),
        ({"VAST_API_KEY": "k", "VASTKEEP_SIMULATED": "1", "VAST_API_URL": "http://127.0.0.1:8080"},
         "stand-in", [True, False]),
    ],
)
def test_config_warnings(env: dict[str, str], mode: str, expected: list[bool]) -> None:
    s = _settings(**env)
    found = config_warnings(s)
    assert [fatal for fatal, _ in found] == expected
    assert vast_mode(s) == mode
    if False in expected:
        assert (False, SIMULATED_WITH_REAL_KEY) in found


@pytest.mark.parametrize(
    ("info", "words"),
    [
        ({"vast_mode": "real", "vast_api_url": "https://console.vast.ai/api/v0"},
         "  Vast.ai API https://console.vast.ai/api/v0   (REAL Vast.ai: real instances, real money)"),
        ({"vast_mode": "simulated", "simulated": True, "vast_api_url": "http://127.0.0.1:5/api/v0"},
         "  Vast.ai API http://127.0.0.1:5/api/v0   (the simulator's)"),
    ],
)
def test_banner_names_the_vast_url_and_real_or_simulated(info, words) -> None:
    lines = vast_banner_lines(info)
    assert words in lines
    assert not any("WARNING" in line for line in lines)


def test_banner_says_simulated_once() -> None:
    text = "\n".join(vast_banner_lines({"vast_mode": "simulated", "simulated": True,
                                        "vast_api_url": "http://127.0.0.1:5/api/v0"}))
    assert text.count("SIMULATED") == 1 and text.count("VAST_API_KEY unset") == 1, text
    assert "no real money" in text


def test_banner_warns_loudly_about_simulated_with_a_real_key() -> None:
    s = _settings(VAST_API_KEY="k", VASTKEEP_SIMULATED="1")
    info = {"vast_mode": vast_mode(s), "vast_api_url": s.vast_api_url,
            "config_warnings": [{"fatal": f, "text": t} for f, t in config_warnings(s)]}
    lines = vast_banner_lines(info)
    assert f"  ⚠️  WARNING: {SIMULATED_WITH_REAL_KEY}" in lines
    assert any("stand-in" in line and "https://console.vast.ai/api/v0" in line for line in lines)


# ── vastkeep check ──────────────────────────────────────────────────────────
@pytest.fixture
def shell(clean_shell: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean shell: no .env, no variables of ours, VASTKEEP_HOME in tmp."""
    monkeypatch.setenv("VASTKEEP_HOME", str(clean_shell / "home"))
    return clean_shell


def test_check_fails_on_a_vast_url_without_api_v0(shell, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VAST_API_KEY", "real-looking-key")
    monkeypatch.setenv("VAST_API_URL", "http://127.0.0.1:8080")
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL: configuration: {WRONG}; it is http://127.0.0.1:8080" in out
    assert "real-looking-key" not in out


def test_check_warns_about_simulated_with_a_real_key(shell, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VAST_API_KEY", "real-looking-key")
    monkeypatch.setenv("VASTKEEP_SIMULATED", "1")
    main(["check"])
    out = capsys.readouterr().out
    assert f"WARN: configuration: {SIMULATED_WITH_REAL_KEY}" in out
    assert "FAIL: configuration" not in out


def test_check_is_quiet_about_a_sound_configuration(shell, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VAST_API_KEY", "real-looking-key")
    main(["check"])
    assert "configuration" not in capsys.readouterr().out


def test_check_reports_what_the_running_stack_recorded(shell, capsys) -> None:
    home = shell / "home"
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({
        "redis_url": "redis://127.0.0.1:1/0",
        "config_warnings": [{"fatal": False, "text": SIMULATED_WITH_REAL_KEY}]}))
    assert main(["check"]) == 1  # redis is not there
    out = capsys.readouterr().out
    assert f"WARN: configuration: {SIMULATED_WITH_REAL_KEY}" in out


def test_up_banner_and_start_up_log_of_a_real_key_with_simulation(tmp_path, caplog) -> None:
    """What `vastkeep up` prints (banner) and logs at start-up for VASTKEEP_SIMULATED=1 + a real key."""
    import io
    import logging

    from vastkeep.stack.runtime import Stack

    caplog.set_level(logging.WARNING, logger="vastkeep.stack")
    settings = _settings(VAST_API_KEY="real-looking-key", VASTKEEP_SIMULATED="1",
                         VASTKEEP_HOME=str(tmp_path / "home"))
    out = io.StringIO()
    stack = Stack(settings, {}, out=out)
    stack.info.update(redis_url="redis://127.0.0.1:1/0", redis_embedded=False, admin_api_url="http://a",
                      flower_url="http://f")
    stack._record_vast_config()
    stack._announce("admin-key", "admin", "pw")
    text = out.getvalue()
    assert ("  Vast.ai API https://console.vast.ai/api/v0   (a real VAST_API_KEY with VASTKEEP_SIMULATED=1"
            in text)
    assert f"  ⚠️  WARNING: {SIMULATED_WITH_REAL_KEY}" in text
    assert f"⚠️  configuration: {SIMULATED_WITH_REAL_KEY}" in caplog.messages
    assert stack.info["vast_mode"] == "stand-in" and "real-looking-key" not in text + caplog.text
