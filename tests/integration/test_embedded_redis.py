"""The embedded Redis of `vastkeep up` with its per-stack password: a real redis-server started from
`redis_argv` + `write_config`, as the stack does it."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import redis

from tests.fixtures.helpers import free_port
from vastkeep.core.settings import redact_url
from vastkeep.stack import embedded_redis as er
from vastkeep.stack.runtime import new_secret


@pytest.fixture
def protected(tmp_path: Path):
    password, port = new_secret(), free_port()
    config = er.write_config(tmp_path / "redis.conf", password)
    (tmp_path / "data").mkdir()
    argv = er.redis_argv(port, tmp_path / "data", config=config)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert er.wait_ready(port, 15, password=password)
        yield port, password, config, argv
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_password_is_in_a_private_file_not_on_argv(protected):
    port, password, config, argv = protected
    assert config.stat().st_mode & 0o777 == 0o600
    assert f"requirepass {password}" in config.read_text()
    assert argv[1] == str(config) and password not in " ".join(argv)


def test_clients_without_the_password_are_refused(protected):
    port, password, _config, _argv = protected
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"PING\r\n")
        assert raw.recv(128).startswith(b"-NOAUTH")
    assert not er.wait_ready(port, 0.2)  # no password
    assert not er.wait_ready(port, 0.2, password=new_secret())  # a wrong one
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, socket_timeout=5).get("vastkeep:secret:vastai")
    url = er.redis_url(port, password=password)
    assert redis.Redis.from_url(url, socket_timeout=5).ping() is True
    assert redact_url(url) == f"redis://:***@127.0.0.1:{port}/0"


def test_write_config_refuses_a_password_that_needs_quoting(tmp_path):
    for bad in ("short", "has space in it 1234567", 'quote"d-password-123456', "new\nline-password-123456"):
        with pytest.raises(ValueError):
            er.write_config(tmp_path / "redis.conf", bad)
    assert not (tmp_path / "redis.conf").exists()
    assert er.redis_url(6390) == "redis://127.0.0.1:6390/0"
