"""Passwords inside URLs never show: not in ``describe()``/``repr``, not in a ``ConfigError``, whatever
characters they hold ('/', '@', ':', '?', '#', percent-encoded ones), and not through ``redact_url``."""

from __future__ import annotations

import json

import pytest

from vastkeep.core.errors import ConfigError
from vastkeep.core.settings import load_settings, redact_url

# Each password is made of distinctive pieces: none of them may appear anywhere in what is shown.
# (password, does REDIS_URL=redis://user:<password>@127.0.0.1:6379/0 load?)
PASSWORDS = [
    ("Zq7xq/Wv8yw", False),  # '/' ends the netloc for urlsplit: port "Zq7xq" is invalid
    ("Zq7xq@Wv8yw", True),
    ("Zq7xq:Wv8yw", True),
    ("Zq7xq%40Wv8yw", True),
    ("Zq7xq%2FWv8yw", True),
    ("12345/Wv8yw", True),  # netloc "user:12345": a valid port, the rest looks like a path
    ("Zq7xq?Wv8yw", False),
    ("Zq7xq#Wv8yw", False),
    ("?Zq7xq#Wv8yw", True),  # netloc "user:" (empty port): loads, the rest is query and fragment
    ("Zq7xq/Wv8yw@Kt3mk:Pp9rp%40Hh2jh", False),
    ("/Zq7xq@Wv8yw", True),
]


def pieces(password: str) -> list[str]:
    out = [password]
    for sep in "/@:?#%":
        out = [p for chunk in out for p in chunk.split(sep)]
    return [p for p in out if len(p) >= 5] + [password]


@pytest.mark.parametrize(("password", "loads"), PASSWORDS)
def test_a_password_in_redis_url_never_shows(password, loads):
    url = f"redis://user:{password}@127.0.0.1:6379/0"
    env = {"REDIS_URL": url}
    if loads:
        s = load_settings(env, env_file=False)
        assert s.redis_url == url  # the real value is kept for connecting
        rows = {r["name"]: r for r in s.describe()}
        shown = rows["REDIS_URL"]["value"]
        assert shown.startswith("redis://user:***@")
        text = repr(s) + str(s) + json.dumps(s.describe())
    else:
        with pytest.raises(ConfigError) as err:
            load_settings(env, env_file=False)
        text = str(err.value) + repr(err.value) + json.dumps(err.value.to_dict())
        assert err.value.variable == "REDIS_URL"
        assert "REDIS_URL='redis://***@" in text and "percent-encode" in text
    for piece in pieces(password):
        assert piece not in text, (piece, text)


@pytest.mark.parametrize("url", [
    "redis://u:Zq7xq/Wv8yw@h:notaport/0",
    "Zq7xq:Wv8yw@h:6379/0",  # no scheme at all
    "http://u:Zq7xq@Wv8yw@h/0",  # wrong scheme
    "redis://u:Zq7xq#Wv8yw@/0",  # no host
])
def test_a_bad_url_with_a_password_is_reported_without_it(url):
    with pytest.raises(ConfigError) as err:
        load_settings({"REDIS_URL": url, "SSH_READY_TIMEOUT_MS": "x"}, env_file=False)
    text = str(err.value) + repr(err.value) + json.dumps(err.value.to_dict())
    assert set(err.value.variables) == {"REDIS_URL", "SSH_READY_TIMEOUT_MS"}
    assert "Zq7xq" not in text and "Wv8yw" not in text
    assert "***@" in text


def test_a_password_typed_without_user_is_masked_in_describe():
    s = load_settings({"REDIS_URL": "redis://Zq7xq/Wv8yw@h/0"}, env_file=False)  # urlsplit: host "Zq7xq"
    text = repr(s) + json.dumps(s.describe())
    assert "redis://***@h/0" in text and "Zq7xq" not in text and "Wv8yw" not in text


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://u:pa/ss@h:1/0", "redis://u:***@h:1/0"),
    ("redis://u:p@s/s@h:1/0", "redis://u:***@h:1/0"),
    ("redis://:p@ss:w/rd@h/0", "redis://:***@h/0"),
    ("redis://u:p%40ss@h:1/0", "redis://u:***@h:1/0"),
    ("redis://u:a:b@h/0", "redis://u:***@h/0"),
    ("redis://u:a?b#c@h/0", "redis://u:***@h/0"),
    ("rediss://u:pw@h:6380/1?ssl_cert_reqs=none", "rediss://u:***@h:6380/1?ssl_cert_reqs=none"),
    ("redis://pa/ss@h/0", "redis://***@h/0"),
    ("unix://u:pw@/run/redis.sock?db=0", "unix://u:***@/run/redis.sock?db=0"),
    ("unix:///run/redis.sock?db=0&password=s3cr3t", "unix:///run/redis.sock?db=0&password=***"),
    ("u:pw@h:1", "u:***@h:1"),
    # unchanged: no password in them
    ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
    ("redis://user@h", "redis://user@h"),
    ("https://example.com/a@b", "https://example.com/a@b"),
    ("https://h/p?q=a:b@c", "https://h/p?q=a:b@c"),
    ("", ""),
])
def test_redact_url_table(url, shown):
    assert redact_url(url) == shown
