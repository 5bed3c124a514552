"""Settings: defaults, every kind of mistake, profiles, the .env file, and secrets that never show."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import re
from pathlib import Path

import pytest

from vastkeep.core.errors import ConfigError
from vastkeep.core.settings import PROFILES, SPECS, Secret, Settings, load_settings, redact_url


def load(env: dict[str, str] | None = None, **kw) -> Settings:
    kw.setdefault("env_file", False)
    return load_settings(env or {}, **kw)


ARCH = (Path(__file__).parents[2] / "docs" / "ARCHITECTURE.md").read_text()


def test_every_variable_of_the_architecture_page_is_a_field_with_its_default():
    section = ARCH.split("## Settings field names", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section))
    spec_names = {s.name for s in SPECS}
    assert names <= spec_names, names - spec_names
    defaults = dict(re.findall(r"`([A-Z][A-Z0-9_]+)`=(\d+)(?![\d.])", section))
    s = load()
    for name, value in defaults.items():
        assert getattr(s, name.lower()) == int(value), name
    assert {f.name for f in dataclasses.fields(Settings)} - {"sources"} == {n.lower() for n in spec_names}


def test_the_class_defaults_are_the_tables():
    """``Settings()`` (benches, tests) and ``load_settings({})`` agree: each default is stated in SPECS and
    again as the typed field's default, so the two must not drift apart."""
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    for spec in SPECS:
        want = Path(str(spec.default)) if spec.kind == "path" and spec.default is not None else spec.default
        assert fields[spec.name.lower()] == want, spec.name


def test_defaults_are_the_guides_and_types_are_right():
    s = load()
    assert s.ssh_max_consecutive_failures == 999999 and s.ssh_ready_timeout_ms == 30000
    assert s.warm_pool_poll_active_interval_ms == 30000 and s.warm_pool_poll_idle_interval_ms == 180000
    assert s.redis_url is None and s.vast_api_key is None and s.vastkeep_simulated is False
    assert s.vast_api_url == "https://console.vast.ai/api/v0" and s.admin_api_port == 3000
    assert s.vastkeep_home == Path.cwd() / ".vastkeep" and s.vastkeep_home.is_absolute()
    assert s.celery_visibility_timeout_s == 3600 and s.ssh_collect_time_limit_s == 900
    assert s.poll_active_interval_s == 30.0 and s.ssh_ready_timeout_s == 30.0
    assert s.longest_poll_interval_s == 180


def test_values_are_parsed_and_frozen():
    s = load({"SSH_READY_TIMEOUT_MS": " 45000 ", "VASTKEEP_SIMULATED": "Yes", "LOG_LEVEL": "debug",
              "REDIS_URL": "unix:///tmp/r.sock", "VAST_API_URL": "http://127.0.0.1:9/api/v0/",
              "SSH_KEY_PATH": "~/k", "WARM_POOL_DESIRED_SIZE": "0", "VASTKEEP_HOME": "/var/vk"})
    assert s.ssh_ready_timeout_ms == 45000 and s.vastkeep_simulated is True and s.log_level == "DEBUG"
    assert s.vast_api_url == "http://127.0.0.1:9/api/v0" and s.ssh_key_path == Path.home() / "k"
    assert s.warm_pool_desired_size == 0 and s.vastkeep_home == Path("/var/vk")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.ssh_ready_timeout_ms = 1  # type: ignore[misc]


MISTAKES = [
    # (variable, bad value, words the message must contain)
    ("SSH_READY_TIMEOUT_MS", "abc",
     ["SSH_READY_TIMEOUT_MS='abc' is not an integer; expected milliseconds as a whole number, e.g. 30000"]),
    ("SSH_READY_TIMEOUT_MS", "2.5", ["is not an integer"]),
    ("SSH_KEEPALIVE_MAX_MISS", "0", ["SSH_KEEPALIVE_MAX_MISS='0'", "must be positive", "whole number"]),
    ("COMFYUI_KEEPALIVE_INTERVAL_MS", "-5", ["must be positive"]),
    ("WARM_POOL_DESIRED_SIZE", "-1", ["is below the minimum 0"]),
    ("SSH_READY_TIMEOUT_MS", "99999999", ["is out of range", "1..3600000"]),
    ("PORT_PROBE_CONCURRENCY", "50000", ["is out of range"]),
    ("VASTKEEP_SIMULATED", "maybe", ["VASTKEEP_SIMULATED='maybe'", "is not a boolean", "true/false"]),
    ("REDIS_URL", "http://127.0.0.1:6379", ["REDIS_URL=", "scheme 'http'", "redis://", "rediss://", "unix://"]),
    ("REDIS_URL", "127.0.0.1:6379", ["REDIS_URL=", "not allowed"]),
    ("REDIS_URL", "redis://", ["has no host"]),
    ("VAST_API_URL", "ftp://x.example", ["VAST_API_URL=", "http://", "https://"]),
    ("CIVITAI_API_URL", "https://x.example:99999", ["has an invalid port"]),
    ("VASTKEEP_PROFILE", "turbo",
     ["VASTKEEP_PROFILE='turbo'", "not a known profile", "production", "conservative"]),
    ("ADMIN_API_PORT", "0", ["ADMIN_API_PORT='0'", "must be positive", "1..65535"]),
    ("ADMIN_API_PORT", "65536", ["is out of range", "1..65535"]),
    ("FLOWER_PORT", "http", ["is not an integer", "TCP port"]),
    ("ADMIN_API_HOST", "not a host!", ["ADMIN_API_HOST=", "IP address or host name"]),
    ("LOG_LEVEL", "LOUD", ["LOG_LEVEL='LOUD'", "DEBUG"]),
]


@pytest.mark.parametrize(("name", "value", "words"), MISTAKES, ids=[f"{m[0]}={m[1]}" for m in MISTAKES])
def test_each_mistake_names_variable_problem_and_expected_form(name, value, words):
    with pytest.raises(ConfigError) as err:
        load({name: value})
    text = str(err.value)
    for word in words:
        assert word in text, (word, text)
    assert "expected" in text
    assert err.value.variable == name and err.value.variables == [name]


def test_all_mistakes_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load({"SSH_READY_TIMEOUT_MS": "x", "FLOWER_PORT": "0", "LOG_LEVEL": "x"})
    assert err.value.variables == ["SSH_READY_TIMEOUT_MS", "FLOWER_PORT", "LOG_LEVEL"]


@pytest.mark.parametrize(("env", "variable", "words"), [
    ({"CELERY_VISIBILITY_TIMEOUT_S": "100"}, "CELERY_VISIBILITY_TIMEOUT_S", ["180000 ms", "above 180"]),
    ({"CELERY_VISIBILITY_TIMEOUT_S": "600", "WARM_POOL_POLL_IDLE_INTERVAL_MS": "60000"},
     "CELERY_VISIBILITY_TIMEOUT_S", ["SSH_COLLECT_TIME_LIMIT_S=900"]),
    ({"SSH_COLLECT_TIME_LIMIT_S": "3600"}, "CELERY_VISIBILITY_TIMEOUT_S",
     ["must exceed SSH_COLLECT_TIME_LIMIT_S"]),
    ({"COMFYUI_KEEPALIVE_TIMEOUT_MS": "30000"}, "COMFYUI_KEEPALIVE_TIMEOUT_MS", ["must be below"]),
])
def test_cross_field_rules(env, variable, words):
    with pytest.raises(ConfigError) as err:
        load(env)
    assert err.value.variable == variable
    for word in words:
        assert word in str(err.value)


def test_cross_field_rules_accept_consistent_values():
    s = load({"CELERY_VISIBILITY_TIMEOUT_S": "7200", "SSH_COLLECT_TIME_LIMIT_S": "3600"})
    assert s.celery_visibility_timeout_s == 7200


@pytest.mark.parametrize("profile", ["production", "conservative"])
def test_profiles_apply_guide_values_and_explicit_variables_win(profile):
    s = load({"VASTKEEP_PROFILE": profile.upper()})
    assert s.vastkeep_profile == profile
    for name, value in PROFILES[profile].items():
        assert getattr(s, name.lower()) == int(value)
        assert s.sources[name] == f"profile:{profile}"
    s2 = load({"VASTKEEP_PROFILE": profile, "WARM_POOL_POLL_IDLE_INTERVAL_MS": "240000"})
    assert s2.warm_pool_poll_idle_interval_ms == 240000
    assert s2.sources["WARM_POOL_POLL_IDLE_INTERVAL_MS"] == "env"


def test_conservative_profile_changes_what_the_guide_says():
    s = load({"VASTKEEP_PROFILE": "conservative"})
    assert (s.ssh_keepalive_interval_ms, s.comfyui_keepalive_interval_ms) == (30000, 60000)
    assert (s.warm_pool_poll_active_interval_ms, s.warm_pool_poll_idle_interval_ms) == (60000, 300000)


def test_env_file_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    env_file = tmp_path / "vk.env"
    env_file.write_text("# comment\nSSH_READY_TIMEOUT_MS=12000\nexport FLOWER_PORT=5600\n"
                        "CIVITAI_TOKEN='$tok-from-file'\nVASTKEEP_PROFILE=conservative\n")
    s = load_settings({"FLOWER_PORT": "5700"}, env_file=env_file)
    assert s.ssh_ready_timeout_ms == 12000 and s.flower_port == 5700
    assert s.civitai_token == Secret("$tok-from-file")  # secrets are taken literally
    assert s.warm_pool_poll_active_interval_ms == 60000  # profile chosen in the file
    assert s.sources["SSH_READY_TIMEOUT_MS"] == ".env" and s.sources["FLOWER_PORT"] == "env"
    # No env_file: .env in the cwd is used when present.
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ADMIN_API_PORT=3111\n")
    assert load_settings({}).admin_api_port == 3111
    assert load_settings({}, env_file=False).admin_api_port == 3000
    # A bad value in the file is reported like any other.
    (tmp_path / ".env").write_text("ADMIN_API_PORT=nope\n")
    with pytest.raises(ConfigError, match="ADMIN_API_PORT='nope' is not an integer"):
        load_settings({})


def test_missing_explicit_env_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env_file=tmp_path / "nope.env")


def test_none_reads_os_environ(monkeypatch):
    monkeypatch.setenv("SSH_KEEPALIVE_MAX_MISS", "7")
    assert load_settings(None, env_file=False).ssh_keepalive_max_miss == 7


def test_empty_string_means_unset():
    s = load({"VAST_API_KEY": "", "REDIS_URL": "", "SSH_READY_TIMEOUT_MS": ""})
    assert s.vast_api_key is None and s.redis_url is None and s.ssh_ready_timeout_ms == 30000


SECRET_VARS = ["VAST_API_KEY", "HUGGINGFACE_HUB_TOKEN", "CIVITAI_TOKEN", "ADMIN_API_KEY", "FLOWER_BASIC_AUTH"]


def test_secrets_never_show_in_repr_str_describe_or_errors():
    values = {name: f"user:s3cr3t-{name.lower()}-value" for name in SECRET_VARS}
    s = load({**values, "REDIS_URL": "redis://:redis-pass-xyz@127.0.0.1:6379/0"})
    for name in SECRET_VARS:
        secret = getattr(s, name.lower())
        assert isinstance(secret, Secret) and secret.reveal() == values[name]
        assert repr(secret) == "'***'" and str(secret) == "***" and f"{secret}" == "***"
    text = repr(s) + str(s) + json.dumps(s.describe())
    for value in [*values.values(), "redis-pass-xyz"]:
        assert value not in text
    assert "redis://:***@127.0.0.1:6379/0" in text
    rows = {r["name"]: r for r in s.describe()}
    assert all(rows[n]["value"] == "***" for n in SECRET_VARS)
    assert rows["SSH_READY_TIMEOUT_MS"] == {"name": "SSH_READY_TIMEOUT_MS", "field": "ssh_ready_timeout_ms",
                                            "value": 30000, "default": 30000, "source": "default",
                                            "meaning": rows["SSH_READY_TIMEOUT_MS"]["meaning"]}
    # A bad secret or a bad URL with a password: the error names it without the value.
    with pytest.raises(ConfigError) as err:
        load({"FLOWER_BASIC_AUTH": "no-colon-secret", "REDIS_URL": "redis://:pw-abc@h:notaport/0",
              "SSH_READY_TIMEOUT_MS": "x"})
    msg = str(err.value) + repr(err.value) + json.dumps(err.value.to_dict())
    assert "no-colon-secret" not in msg and "pw-abc" not in msg
    assert "FLOWER_BASIC_AUTH=<secret> is not in the form user:password" in msg


def test_secret_behaviour():
    a, b = Secret("x1"), Secret("x1")
    assert a == b and a != Secret("x2") and hash(a) == hash(b) and a != "x1"
    with pytest.raises(TypeError):
        json.dumps({"k": a})
    with pytest.raises(TypeError):
        pickle.dumps(a)
    assert copy.deepcopy(a) is a and dataclasses.replace(load(), vast_api_key=a).vast_api_key is a
    with pytest.raises(ValueError):
        Secret("")


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://user:p@ss@h/0", "redis://user:***@h/0"),
    ("https://example.com/a@b", "https://example.com/a@b"),
    ("redis://user@h", "redis://user@h"),
    (None, None),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
