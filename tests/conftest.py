"""Shared fixtures: each concern keeps its fixtures in tests/fixtures/<name>.py and lists it here."""

pytest_plugins = [
    "tests.fixtures.loopback_only",
    "tests.fixtures.redis_server",
    "tests.fixtures.state",
    "tests.fixtures.port_servers",
    "tests.fixtures.celery_app",
    "tests.fixtures.vast_stub",
    "tests.fixtures.token_cloud",
    "tests.fixtures.sim",
    "tests.fixtures.proxy",
    "tests.fixtures.chaos",
    "tests.fixtures.admin_api",
    "tests.fixtures.shell",
    "tests.fixtures.hosts",
]
