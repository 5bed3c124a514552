"""docker-compose.yml: every vastkeep container gets the operator's .env, replicas keep their own node
names, and every service has a healthcheck."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VASTKEEP_SERVICES = ("worker-control", "worker-ssh", "worker-keepalive", "beat", "flower", "api")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_has_a_healthcheck(compose):
    services = compose["services"]
    assert set(VASTKEEP_SERVICES) | {"redis"} == set(services)
    for name, service in services.items():
        assert service["healthcheck"]["test"], name


@pytest.mark.parametrize("name", VASTKEEP_SERVICES)
def test_the_optional_env_file_reaches_every_vastkeep_service(compose, name):
    service = compose["services"][name]
    assert service["env_file"] == [{"path": ".env", "required": False}]
    assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"  # environment: wins over .env


@pytest.mark.parametrize(("name", "node"), [("worker-control", "control"), ("worker-ssh", "ssh"),
                                                  ("worker-keepalive", "keepalive")])
def test_scaled_workers_keep_their_own_hostname(compose, name, node):
    service = compose["services"][name]
    assert "hostname" not in service  # a fixed one would give every replica the same node name
    assert f"{node}@$$HOSTNAME" in " ".join(service["healthcheck"]["test"])
