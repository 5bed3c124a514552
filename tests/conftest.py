"""Shared fixtures: each concern keeps its fixtures in tests/fixtures/<name>.py and lists it here."""

pytest_plugins = [
    "tests.fixtures.redis_server",
]
